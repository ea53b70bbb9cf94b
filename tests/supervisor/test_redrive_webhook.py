"""A redrive reaches a dormant webhook bot: the fleet wakes it as a delivery would."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
import trio.testing

from actors import ActorState
from tests import payloads
from tests.actors.transports import FailingMethod
from tests.harness import admin_client, running_fleet
from tests.supervisor.test_webhook_mode import IDLE, deliver, webhook_mode
from tests.supervisor.webhook_telegram import WebhookTelegram


async def test_a_redrive_wakes_a_dormant_webhook_bot_which_sends_the_reply(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()
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
