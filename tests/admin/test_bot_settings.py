"""Bot management: ``allowed_updates`` through the API, and one token for one tenant only
(in process on the simulated Bot API, MockClock)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from actors import DEFAULT_ALLOWED_UPDATES, BotToken
from tests.admin.helpers import admin_fleet
from tests.harness import bot_token


async def test_allowed_updates_given_when_adding_is_stored_listed_and_polled_with(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        token = bot_token(7)
        admin.api.add_bot(token)
        wanted = ["message", "callback_query", "chat_member"]
        response = await admin.http.post(
            "/admin/bots", json={"user_id": 7, "token": token, "allowed_updates": wanted}
        )
        assert response.status_code == 201, response.text
        assert response.json()["allowed_updates"] == wanted

        listing = {b["user_id"]: b for b in (await admin.http.get("/admin/bots")).json()["bots"]}
        assert listing[7]["allowed_updates"] == wanted
        # A bot that named none shows the default, written out.
        assert listing[1]["allowed_updates"] == list(DEFAULT_ALLOWED_UPDATES)

        record = await admin.fleet.handle.store.get_bot(7)
        assert record is not None and record.settings["allowed_updates"] == wanted


async def test_unknown_update_types_are_refused_naming_them(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        token = bot_token(7)
        admin.api.add_bot(token)
        response = await admin.http.post(
            "/admin/bots",
            json={"user_id": 7, "token": token, "allowed_updates": ["message", "reactions"]},
        )
        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert message.startswith("allowed_updates must name Bot API update types (known: ")
        assert message.endswith("got unknown 'reactions'")
        assert await admin.fleet.handle.store.get_bot(7) is None


async def test_a_token_registered_for_another_tenant_is_refused_and_nothing_changes(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [2]) as admin:
        store = admin.fleet.handle.store
        # The owner is added through the API (a config file's bot could not be removed here).
        taken = bot_token(1)
        admin.api.add_bot(taken)
        owner = await admin.http.post("/admin/bots", json={"user_id": 1, "token": taken})
        assert owner.status_code == 201, owner.text
        before = await store.list_bots()
        response = await admin.http.post(
            "/admin/bots", json={"user_id": 9, "token": taken, "handler": "autoreply"}
        )
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "conflict"
        assert error["message"] == (
            f"the token {BotToken(taken).redacted} is already registered for user_id 1: one bot "
            "serves one tenant; remove that bot first to move it"
        )
        assert taken not in response.text

        # Another token of the same bot (regenerated) is the same bot.
        bot_id = BotToken(taken).bot_id
        again = await admin.http.post(
            "/admin/bots", json={"user_id": 9, "token": f"{bot_id}:{'Z' * 35}"}
        )
        assert again.status_code == 409
        assert "already registered for user_id 1" in again.json()["error"]["message"]

        assert await store.list_bots() == before
        assert (await admin.http.get("/admin/bots/9")).status_code == 404
        # The owner goes on answering alone.
        admin.api.send_user_message(taken, 42, "still mine?")
        await trio.sleep(5)
        assert admin.api.report().bot(bot_id).answered == 1

        # Once the owner is removed, the bot may move to another tenant.
        assert (await admin.http.delete("/admin/bots/1")).status_code == 200
        moved = await admin.http.post("/admin/bots", json={"user_id": 9, "token": taken})
        assert moved.status_code == 201, moved.text
