"""Request text that is not valid UTF-8 (a lone surrogate in JSON) is a 422 naming the field,
and nothing of the request happens."""

from __future__ import annotations

from pathlib import Path

import trio.testing

from tests.admin.helpers import admin_fleet
from tests.harness import bot_token

JSON = {"content-type": "application/json"}


async def test_a_lone_surrogate_in_a_suspend_reason_is_a_422_and_the_bot_stays_running(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        refused = await admin.http.post(
            "/admin/bots/1/suspend", content=b'{"reason": "unpaid \\ud800"}', headers=JSON
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["message"] == (
            "reason must be valid UTF-8 text, got a lone surrogate U+D800 "
            "(send the character itself, or a surrogate pair)"
        )
        one = await admin.http.get("/admin/bots/1")
        assert one.status_code == 200
        assert one.json()["status"] != "suspended"
        listing = await admin.http.get("/admin/bots")
        assert listing.status_code == 200
        record = await admin.fleet.handle.store.get_bot(1)
        assert record is not None and record.suspended_reason is None

        # A surrogate PAIR is one real character (an emoji): accepted and stored as such.
        accepted = await admin.http.post(
            "/admin/bots/1/suspend", content=b'{"reason": "unpaid \\ud83d\\udcb8"}', headers=JSON
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["suspended_reason"] == "unpaid \U0001f4b8"


async def test_a_lone_surrogate_anywhere_in_a_new_bot_is_a_422_naming_the_key(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        token = bot_token(7)
        admin.api.add_bot(token)
        body = (
            '{"user_id": 7, "token": "TOKEN", "handler": "autoreply", '
            '"autoreply": [{"contains": "hi", "reply": "\\udfff"}]}'
        ).replace("TOKEN", token)
        refused = await admin.http.post("/admin/bots", content=body.encode(), headers=JSON)
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]["message"]
        assert message.startswith("autoreply[0].reply must be valid UTF-8 text")
        assert token not in refused.text
        assert (await admin.http.get("/admin/bots/7")).status_code == 404


async def test_an_encoded_token_in_a_suspend_reason_is_redacted_in_the_answer_and_the_store(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    from urllib.parse import quote

    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        token = admin.fleet.tokens[1]
        secret = token.split(":")[1]
        reason = f"leaked {quote(token)} and {secret}"
        suspended = await admin.http.post("/admin/bots/1/suspend", json={"reason": reason})
        assert suspended.status_code == 200, suspended.text
        listing = await admin.http.get("/admin/bots")
        record = await admin.fleet.handle.store.get_bot(1)
    assert record is not None and record.suspended_reason is not None
    for shown in (suspended.text, listing.text, record.suspended_reason):
        assert secret not in shown
    assert record.suspended_reason == f"leaked {token.split(':')[0]}:… and …"
