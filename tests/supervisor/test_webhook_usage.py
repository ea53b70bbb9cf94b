"""A dormant webhook bot's usage reaches storage while it sleeps: its updates are counted in
the inbox transaction, and the deliveries answered without waking it (a redelivery, a wrong
secret, a bad body) are written by the fleet, on the report cadence and at shutdown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import trio
import trio.testing

from actors import BotToken, derive_secret_token
from tests import payloads
from tests.harness import EPOCH, Fleet, running_fleet
from tests.supervisor.test_webhook_mode import IDLE, webhook_mode
from tests.supervisor.webhook_telegram import WebhookTelegram

MASTER = "master-secret-1"  # test_webhook_mode's default


def receiver_client(fleet: Fleet) -> httpx.AsyncClient:
    receiver = fleet.handle.webhook
    assert receiver is not None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=receiver), base_url="https://bots.example.com"
    )


def stored_counts(db: Path, user_id: int) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT metric, SUM(value) FROM usage_counts WHERE grain = 'hour' AND user_id = ? "
            "GROUP BY metric",
            (user_id,),
        ).fetchall()
    return {metric: int(value) for metric, value in rows}


async def test_a_dormant_bots_deliveries_are_counted_in_storage_without_waking_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "u.db"
    telegram = WebhookTelegram()
    async with running_fleet(
        db, [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        secret = derive_secret_token(MASTER, BotToken(fleet.tokens[1]).bot_id)
        good = {"X-Telegram-Bot-Api-Secret-Token": secret}
        update = payloads.message(31, chat_id=111, text="count me")
        async with receiver_client(fleet) as hook:
            assert (await hook.post("/tg/1", json=update, headers=good)).status_code == 200
            await trio.sleep(IDLE + 10)
            assert fleet.handle.supervisor.child_state(1) is None  # dormant again
            # Answered without waking the bot: a redelivery, a wrong secret, a bad body.
            assert (await hook.post("/tg/1", json=update, headers=good)).status_code == 200
            wrong = {"X-Telegram-Bot-Api-Secret-Token": "bvw_" + "x" * 43}
            assert (await hook.post("/tg/1", json=update, headers=wrong)).status_code == 401
            bad = await hook.post("/tg/1", content=b"{not json", headers=good)
            assert bad.status_code == 400
        await trio.sleep(30)  # a few report intervals; the bot sleeps on
        assert fleet.handle.supervisor.child_state(1) is None
        counts = stored_counts(db, 1)
        assert counts["updates.message"] == 1  # stored once: the redelivery is no update
        assert (counts["webhook.accepted"], counts["webhook.rejected"]) == (2, 2)
        # And the admin API's analytics show them, from storage.
        rows = await fleet.handle.store.usage("hour", EPOCH - 3600, EPOCH + 3600, user_id=1)
        assert sum(r.counts.get("webhook.rejected", 0) for r in rows) == 2

        # Deliveries in the last moments before a shutdown are written by the shutdown.
        async with receiver_client(fleet) as hook:
            assert (await hook.post("/tg/1", json=update, headers=wrong)).status_code == 401
    counts = stored_counts(db, 1)
    assert (counts["webhook.accepted"], counts["webhook.rejected"]) == (2, 3)
    assert [p["text"] for p in telegram.sent()] == ["count me"]
    assert json.dumps(counts).find(secret) == -1
