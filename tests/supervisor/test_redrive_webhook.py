"""A redrive reaches a dormant webhook bot: the fleet wakes it as a delivery would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from actors import ActorState
from tests import payloads
from tests.actors.transports import FailingMethod
from tests.harness import admin_client, running_fleet
from tests.supervisor.test_webhook_mode import IDLE, deliver, hold_inbox_reads, webhook_mode
from tests.supervisor.webhook_telegram import WebhookTelegram


def blocked_replies(
    telegram: WebhookTelegram,
) -> tuple[list[FailingMethod], Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]]:
    """A ``wrap_transport`` putting ``telegram`` behind a user who blocked the bot (every
    sendMessage a 403) until ``holder[0].active`` is set False; the holder, the wrap."""
    holder: list[FailingMethod] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        holder.append(
            FailingMethod(
                telegram.wrap(inner),
                {"sendMessage"},
                status=403,
                description="Forbidden: bot was blocked by the user",
            )
        )
        return holder[0]

    return holder, wrap


async def test_a_redrive_wakes_a_dormant_webhook_bot_which_sends_the_reply(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()
    holder, wrap = blocked_replies(telegram)

    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=wrap
    ) as fleet:
        actor = fleet.handle.fleet.get(1)
        await deliver(fleet, 1, payloads.forum_topic_message(61, thread_id=77))
        await trio.sleep(IDLE + 5)
        assert actor.state is ActorState.IDLE  # dormant, its update dead-lettered
        assert fleet.handle.supervisor.child_state(1) is None
        holder[0].active = False
        async with admin_client(fleet) as admin:
            response = await admin.post("/admin/bots/1/dead-letters/redrive", json={"all": True})
        assert response.json() == {"redriven": 1, "refused": []}
        await trio.sleep(1)
        (reply,) = telegram.sent()
        assert (reply["text"], reply["message_thread_id"]) == ("question in a topic", 77)
        await trio.sleep(IDLE + 5)
        assert actor.state is ActorState.IDLE  # and dormant again
        assert await fleet.handle.store.inbox_pending(1) == []


@pytest.mark.parametrize("before", [False, True], ids=["after-the-read", "before-the-read"])
async def test_a_redrive_while_the_bot_reads_its_inbox_at_a_start_is_handled_once(
    before: bool,
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    telegram = WebhookTelegram()
    holder, wrap = blocked_replies(telegram)

    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=wrap
    ) as fleet:
        actor = fleet.handle.fleet.get(1)
        await deliver(fleet, 1, payloads.forum_topic_message(61, thread_id=77))
        await trio.sleep(IDLE + 5)
        assert fleet.handle.supervisor.child_state(1) is None  # dormant, dead-lettered
        holder[0].active = False
        handled = actor.statistics().handled_updates
        # Suspended while dormant; the resumption starts it, reading the inbox.
        await fleet.handle.fleet.suspend(1)
        held, release = hold_inbox_reads(fleet.handle.store, monkeypatch, before=before)
        async with trio.open_nursery() as nursery, admin_client(fleet) as admin:
            nursery.start_soon(fleet.handle.fleet.resume, 1)  # returns once the bot started
            with trio.fail_after(30):
                await held.wait()
            assert actor.state is ActorState.STARTING
            # Undone again after the start's read (only the start's early list has it), or
            # before it (the read and the early list both have it: it is taken once).
            response = await admin.post("/admin/bots/1/dead-letters/redrive", json={"all": True})
            assert response.json() == {"redriven": 1, "refused": []}
            release.set()
        await trio.sleep(5)
        (reply,) = telegram.sent()
        assert (reply["text"], reply["message_thread_id"]) == ("question in a topic", 77)
        assert actor.statistics().handled_updates == handled + 1
        assert await fleet.handle.store.inbox_pending(1) == []
        assert [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()] == []
