"""BotToken and the redacting log filter: a token is shown as ``123456789:…`` everywhere, and a
bad one is refused with a message that says what is wrong without echoing it."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
from pydantic import BaseModel, ValidationError, create_model

from actors import BotToken, RedactingFilter, redact

SECRET = "AAEhBP0av28bM4Nq2mY9sGkPmQ4DkX0aBcD"
TOKEN = f"123456789:{SECRET}"


def holder() -> type[BaseModel]:
    """A model with a BotToken field, built now (a field's schema is built with its model)."""
    return create_model("Holder", token=(BotToken, ...))


def test_a_token_shows_only_its_public_id() -> None:
    token = BotToken(TOKEN)
    assert token.bot_id == 123456789
    assert token.redacted == "123456789:…"
    assert str(token) == "123456789:…"
    assert repr(token) == "BotToken('123456789:…')"
    assert f"{token}" == "123456789:…"
    assert token.reveal() == TOKEN


def test_tokens_compare_and_hash_by_their_value() -> None:
    same, other = BotToken(TOKEN), BotToken(f"123456789:{SECRET[::-1]}")
    assert BotToken(TOKEN) == same
    assert same != other
    assert same != TOKEN  # a token is not its text
    assert len({BotToken(TOKEN), same, other}) == 2


def test_a_token_cannot_be_pickled() -> None:
    with pytest.raises(TypeError) as caught:
        pickle.dumps(BotToken(TOKEN))
    assert str(caught.value) == "a BotToken is not picklable: it would copy the secret"


@pytest.mark.parametrize(
    ("value", "described"),
    [
        ("", "an empty string"),
        ("no-colon-here", "a 13-character string with no ':'"),
        ("123456789:short", "'123456789:' followed by 5 characters"),
        ("123456789:" + "a" * 19, "'123456789:' followed by 19 characters"),
        ("12345:has:two:colons-and-more-text", "'12345:' followed by 28 characters"),
        ("abc:" + "a" * 30, "'<not digits>:' followed by 30 characters"),
        ("1" * 21 + ":" + "a" * 30, "'<not digits>:' followed by 30 characters"),
        ("1" * 20 + ":" + "a" * 5, f"'{'1' * 20}:' followed by 5 characters"),
        (f"123456789:{SECRET} ", f"'123456789:' followed by {len(SECRET) + 1} characters"),
        (f" {TOKEN}", "'<not digits>:' followed by 35 characters"),
    ],
)
def test_a_bad_token_is_refused_saying_what_is_wrong_without_echoing_it(
    value: str, described: str
) -> None:
    with pytest.raises(ValueError) as caught:
        BotToken(value)
    message = str(caught.value)
    assert message == (
        "a bot token must look like '<digits>:<at least 20 letters, digits, - or _>', "
        f"got {described}"
    )
    secret = value.split(":", 1)[-1].strip()
    if len(secret) >= 5:
        assert secret not in message


def test_the_shortest_and_longest_accepted_shapes() -> None:
    assert BotToken("123:" + "a" * 20).bot_id == 123
    assert BotToken("1" * 20 + ":" + "-_aZ9" * 4).bot_id == int("1" * 20)
    for bad in ("12:" + "a" * 20, "123:" + "a" * 19, "123:" + "a" * 19 + "!"):
        with pytest.raises(ValueError):
            BotToken(bad)


def test_as_a_field_it_takes_text_or_a_token_and_shows_only_the_id() -> None:
    Holder = holder()
    held = Holder(token=f"  {TOKEN}\n")
    assert held.token == BotToken(TOKEN)  # type: ignore[attr-defined]
    assert Holder(token=BotToken(TOKEN)).token == BotToken(TOKEN)  # type: ignore[attr-defined]
    assert held.model_dump() == {"token": "123456789:…"}
    assert json.loads(held.model_dump_json()) == {"token": "123456789:…"}
    assert SECRET not in repr(held)


def test_as_a_field_a_bad_value_is_a_validation_error_without_the_value() -> None:
    Holder = holder()
    with pytest.raises(ValidationError) as caught:
        Holder(token=12345)
    (error,) = caught.value.errors()
    assert error["type"] == "string_type"
    assert error["msg"] == "Input should be a valid string"
    with pytest.raises(ValidationError) as bad_text:
        Holder(token=f"123456789:{SECRET[:10]}")
    # The message names the shape, not the text (pydantic's own str() of the error still
    # shows the input: the config loader and the admin API print only the messages).
    (problem,) = bad_text.value.errors()
    assert SECRET[:10] not in problem["msg"]
    assert "followed by 10 characters" in problem["msg"]


def test_its_json_schema_is_a_write_only_string() -> None:
    schema = holder().model_json_schema()["properties"]["token"]
    assert schema == {
        "type": "string",
        "writeOnly": True,
        "description": "the bot's token from @BotFather; never shown again",
        "title": "Token",
    }


def test_redact_keeps_the_id_and_drops_every_secret_in_a_text() -> None:
    text = f"GET https://api.telegram.org/bot{TOKEN}/getMe and 987654:{'b' * 25} failed"
    assert redact(text) == ("GET https://api.telegram.org/bot123456789:…/getMe and 987654:… failed")
    assert redact("nothing secret: 12:34, 1234:short") == "nothing secret: 12:34, 1234:short"


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("botvisor.test", logging.WARNING, __file__, 1, message, args, info)


def test_the_filter_redacts_the_formatted_message_and_keeps_every_record() -> None:
    log_filter = RedactingFilter()
    leaky = record("calling %s for %d", f"https://api.telegram.org/bot{TOKEN}/getMe", 3)
    assert log_filter.filter(leaky) is True
    assert leaky.getMessage() == "calling https://api.telegram.org/bot123456789:…/getMe for 3"
    assert leaky.args is None
    clean = record("polled %d updates", 7)
    assert log_filter.filter(clean) is True
    assert clean.args == (7,)  # untouched: formatted lazily as usual
    assert clean.msg == "polled %d updates"


def test_the_filter_renders_a_traceback_redacted() -> None:
    try:
        raise RuntimeError(f"refused: bot{TOKEN}")
    except RuntimeError as exc:
        leaky = record("the call failed", exc=exc)
    assert RedactingFilter().filter(leaky) is True
    assert leaky.exc_info is None
    assert leaky.exc_text is not None
    assert "Traceback (most recent call last)" in leaky.exc_text
    assert "RuntimeError: refused: bot123456789:…" in leaky.exc_text
    assert SECRET not in leaky.exc_text
    formatted = logging.Formatter("%(message)s").format(leaky)
    assert SECRET not in formatted
    assert "RuntimeError: refused: bot123456789:…" in formatted


def test_the_filter_redacts_an_exception_that_was_never_raised() -> None:
    # exc_info with no traceback (an exception logged without being raised) is rendered too.
    error = RuntimeError(f"refused: bot{TOKEN}")
    leaky = logging.LogRecord(
        "botvisor.test", logging.ERROR, __file__, 1, "failed", None, (RuntimeError, error, None)
    )
    RedactingFilter().filter(leaky)
    assert leaky.exc_info is None
    assert leaky.exc_text == "RuntimeError: refused: bot123456789:…"
