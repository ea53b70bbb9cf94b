"""Removing a webhook bot through the admin API: Telegram is told to forget the webhook
(``deleteWebhook`` dropping pending updates, since no bot of botvisor will take them) and the
stored registration goes; a deleteWebhook that fails or hangs past its 10 s cap does not
stop the removal, and its log line names no token."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from actors import BotConfig, BotMode, BotToken
from supervisor.fleet import DELETE_WEBHOOK_TIMEOUT
from tests import payloads
from tests.harness import Fleet, admin_client, bot_token, running_fleet
from tests.supervisor.test_webhook_mode import deliver, webhook_mode
from tests.supervisor.webhook_telegram import WebhookTelegram


class FailingDelete(WebhookTelegram):
    """WebhookTelegram, except that deleteWebhook hangs or cannot connect (``how``)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.deletes_started: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/deleteWebhook"):
            self.deletes_started.append(trio.current_time())
            if self.how == "hang":
                await trio.sleep_forever()
            # Like httpx's own messages can, this one names the URL, token included.
            raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)
        return await super().handle_async_request(request)


async def add_webhook_bot(fleet: Fleet) -> tuple[int, str]:
    """Add the webhook bot 2 through the fleet (as the admin API does); its bot id, token."""
    token = bot_token(2)
    fleet.api.add_bot(token)
    await fleet.handle.fleet.add(BotConfig(user_id=2, token=BotToken(token), mode=BotMode.WEBHOOK))
    await trio.sleep(1)  # the registration queue registers it
    return BotToken(token).bot_id, token


async def test_removing_a_webhook_bot_deletes_its_webhook_and_registration(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "d.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        bot, _ = await add_webhook_bot(fleet)
        assert telegram.bot(bot).webhook is not None
        assert set(await fleet.handle.store.load_webhook_registrations()) == {1, 2}
        await deliver(fleet, 2, payloads.message(7, chat_id=111, text="handled first"))
        await trio.sleep(1)
        telegram.keep(bot, payloads.message(8, chat_id=111, text="still at Telegram"))
        async with admin_client(fleet) as admin:
            removed = await admin.delete("/admin/bots/2")
            assert removed.status_code == 200
            assert removed.json() == {"user_id": 2, "removed": True, "history_kept": True}
            assert (await admin.get("/admin/bots/2")).status_code == 404
        deletes = [c for c in telegram.calls if c.method == "deleteWebhook"]
        assert [(c.bot_id, c.params) for c in deletes] == [(bot, {"drop_pending_updates": True})]
        assert telegram.bot(bot).webhook is None
        assert telegram.bot(bot).pending == []
        assert set(await fleet.handle.store.load_webhook_registrations()) == {1}
        assert fleet.handle.fleet.registration(2) is None
        assert await fleet.handle.store.get_bot(2) is None
        # The other webhook bot was not touched.
        assert telegram.methods(fleet.bot_id(1)) == ["setWebhook"]
    assert [p["text"] for p in telegram.sent()] == ["handled first"]


@pytest.mark.parametrize("how", ["hang", "fail"])
async def test_a_delete_webhook_that_hangs_or_fails_does_not_stop_the_removal(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="botvisor")
    telegram = FailingDelete(how)
    async with running_fleet(
        tmp_path / "d.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        bot, token = await add_webhook_bot(fleet)
        async with admin_client(fleet) as admin:
            asked = trio.current_time()
            removed = await admin.delete("/admin/bots/2")
            answered = trio.current_time()
        assert removed.status_code == 200
        assert removed.json()["removed"] is True
        assert len(telegram.deletes_started) == 1
        # A hanging Telegram holds the removal for the cap, not for the HTTP timeout (30 s).
        assert answered - asked == (DELETE_WEBHOOK_TIMEOUT if how == "hang" else 0)
        assert set(await fleet.handle.store.load_webhook_registrations()) == {1}
        assert await fleet.handle.store.get_bot(2) is None
        assert telegram.bot(bot).webhook is not None  # Telegram never heard
    lines = [r.getMessage() for r in caplog.records if "deleteWebhook" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("bot 2: deleteWebhook ")
    if how == "hang":
        assert "got no answer within 10 s while removing it; removed anyway" in lines[0]
    else:
        assert "failed while removing it (deleteWebhook: the request never reached" in lines[0]
    secret = token.split(":", 1)[1]
    assert all(secret not in r.getMessage() for r in caplog.records)


class SlowFirstSetWebhook(WebhookTelegram):
    """WebhookTelegram whose first setWebhook is answered 429 (retry after 5 s), so the
    registration is still in flight (waiting to try again) for those seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.throttled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/setWebhook") and self.throttled == 0:
            self.throttled += 1
            body = {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 5",
                "parameters": {"retry_after": 5},
            }
            return httpx.Response(429, json=body, request=request)
        return await super().handle_async_request(request)


async def test_a_bot_removed_while_its_set_webhook_is_in_flight_leaves_no_webhook_set(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The removal's deleteWebhook reaches Telegram first; the registration's retry would then
    # set the webhook again, and Telegram would push a bot nobody serves for a day.
    telegram = SlowFirstSetWebhook()
    async with running_fleet(
        tmp_path / "d.db", [], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        token = bot_token(2)
        fleet.api.add_bot(token)
        bot = BotToken(token).bot_id
        await fleet.handle.fleet.add(
            BotConfig(user_id=2, token=BotToken(token), mode=BotMode.WEBHOOK)
        )
        await trio.sleep(1)
        assert telegram.throttled == 1 and telegram.bot(bot).webhook is None
        async with admin_client(fleet) as admin:
            assert (await admin.delete("/admin/bots/2")).status_code == 200
        await trio.sleep(30)
        # The retry went out after the removal's deleteWebhook (the 429 is not recorded).
        assert telegram.methods(bot)[:2] == ["deleteWebhook", "setWebhook"]
        assert telegram.methods(bot)[-1] == "deleteWebhook"
        assert telegram.bot(bot).webhook is None
        assert await fleet.handle.store.load_webhook_registrations() == {}
