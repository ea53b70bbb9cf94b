"""What a client is told about a bad request: the exact 422 messages (a product contract)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from actors import BotConfig
from admin import ApiError
from admin.requests import EventsQuery, HoursQuery, SuspendRequest, UserIdPath, parse

TOKEN = "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
USER_ID_RULE = "user_id must be a whole number from 1 to 9223372036854775807"
AUTOREPLY_RULE = "autoreply[0] must be a table with non-empty strings 'contains' and 'reply'"
REASON_RULE = "reason must be a non-empty string of at most 500 characters"
HOURS_RULE = "hours must be a whole number from 1 to 168"


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (BotConfig, {"token": TOKEN}, "user_id is required"),
        (BotConfig, {}, "user_id is required; token is required"),
        (BotConfig, {"user_id": 0, "token": TOKEN}, f"{USER_ID_RULE}, got 0"),
        (BotConfig, {"user_id": True, "token": TOKEN}, f"{USER_ID_RULE}, got True"),
        (BotConfig, {"user_id": "7", "token": TOKEN}, f"{USER_ID_RULE}, got '7'"),
        (BotConfig, {"user_id": 2**64, "token": TOKEN}, f"{USER_ID_RULE}, got {2**64}"),
        (BotConfig, {"user_id": 7, "token": 5}, "token must be a string"),
        (
            BotConfig,
            {"user_id": 7, "token": "123456:short"},
            "token: a bot token must look like '<digits>:<at least 20 letters, digits, - or _>', "
            "got '123456:' followed by 5 characters",
        ),
        (
            BotConfig,
            {"user_id": 7, "token": TOKEN, "colour": 1},
            "colour: unknown field (known: allowed_updates, autoreply, autoreply_default, handler, "
            "mode, rps, token, user_id)",
        ),
        (
            BotConfig,
            {"user_id": 7, "token": TOKEN, "rps": -1},
            "rps must be from 0.01 to 100000, got -1",
        ),
        (BotConfig, {"user_id": 7, "token": TOKEN, "rps": "5"}, "rps must be a number, got '5'"),
        (BotConfig, {"user_id": 7, "token": TOKEN, "rps": True}, "rps must be a number, got True"),
        (
            BotConfig,
            {"user_id": 7, "token": TOKEN, "handler": 3},
            "handler must be a string, got 3",
        ),
        (
            BotConfig,
            {"user_id": 7, "token": TOKEN, "handler": "nope"},
            "handler must be 'echo', 'autoreply' or an absolute 'package.module:function' path, "
            "got 'nope'",
        ),
        (BotConfig, {"user_id": 7, "token": TOKEN, "autoreply": [1]}, f"{AUTOREPLY_RULE}, got 1"),
        (
            BotConfig,
            {"user_id": 7, "token": TOKEN, "autoreply": [{"contains": "", "reply": "a"}]},
            AUTOREPLY_RULE,
        ),
        (
            BotConfig,
            {"user_id": 7, "token": TOKEN, "autoreply": [{"contains": "a", "colour": "b"}]},
            AUTOREPLY_RULE,
        ),
        (
            BotConfig,
            {"user_id": 0, "token": TOKEN, "rps": 0},
            f"{USER_ID_RULE}, got 0; rps must be from 0.01 to 100000, got 0",
        ),
        (SuspendRequest, {"reason": "  "}, f"{REASON_RULE}, got '  '"),
        (SuspendRequest, {"reason": 5}, "reason must be a string, got 5"),
        (SuspendRequest, {"why": "x"}, "why: unknown field (known: reason)"),
        (HoursQuery, {"hours": "0"}, f"{HOURS_RULE}, got '0'"),
        (HoursQuery, {"hours": "abc"}, f"{HOURS_RULE}, got 'abc'"),
        (HoursQuery, {"hours": "169"}, f"{HOURS_RULE}, got '169'"),
        (UserIdPath, {"user_id": "abc"}, f"{USER_ID_RULE}, got 'abc'"),
        (UserIdPath, {"user_id": "-5"}, f"{USER_ID_RULE}, got '-5'"),
        (EventsQuery, {"user_id": "9" * 50}, f"{USER_ID_RULE}, got '{'9' * 40}…'"),
    ],
)
def test_a_bad_request_is_a_422_naming_every_wrong_field_and_its_rule(
    model: type[BaseModel], data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiError) as refused:
        parse(model, data)
    assert (refused.value.status, refused.value.code) == (422, "invalid_request")
    assert refused.value.message == message


def test_a_token_that_is_wrong_is_never_echoed() -> None:
    secret = "not-a-token-but-secret-0123456789"
    with pytest.raises(ApiError) as refused:
        parse(BotConfig, {"user_id": 7, "token": [secret]})
    assert secret not in refused.value.message


def test_good_requests_parse_with_their_defaults() -> None:
    bot = parse(BotConfig, {"user_id": 7, "token": f" {TOKEN} ", "rps": 5})
    assert (bot.handler, bot.autoreply, bot.autoreply_default, bot.rps) == ("echo", (), None, 5.0)
    assert bot.token.reveal() == TOKEN
    assert parse(SuspendRequest, {}).reason == "suspended by an admin"
    assert parse(HoursQuery, {}).hours == 24
    assert parse(UserIdPath, {"user_id": "9223372036854775807"}).user_id == 2**63 - 1
    assert parse(EventsQuery, {}).user_id is None
