"""Handled updates of webhook bots leave the inbox after 48 h (the retention task): webhook
bots have no getUpdates offset, which is what prunes a polling bot's handled updates, and
Telegram cannot deliver an update again a day after it was made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
import trio.testing

from actors.metrics import DONE_UPDATE_DEDUPE_SECONDS
from storage import StorageConfig
from tests import payloads
from tests.harness import running_fleet
from tests.supervisor.test_webhook_mode import deliver, webhook_mode
from tests.supervisor.webhook_telegram import WebhookTelegram

HOUR = 3600.0


def inbox(db: Path) -> list[tuple[int, int, bool]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT user_id, update_id, done_at IS NOT NULL FROM inbox ORDER BY user_id, update_id"
        ).fetchall()
    return [(uid, upd, bool(done)) for uid, upd, done in rows]


async def test_a_webhook_bots_handled_updates_are_pruned_after_48_hours_undone_ones_stay(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    assert DONE_UPDATE_DEDUPE_SECONDS == 48 * HOUR
    db = tmp_path / "w.db"
    telegram = WebhookTelegram()
    settings = StorageConfig(path=str(db), persist_interval=HOUR, retention_check_interval=HOUR)
    async with running_fleet(
        db, [1, 2], configure=webhook_mode(), wrap_transport=telegram.wrap, storage=settings
    ) as fleet:
        await fleet.handle.fleet.suspend(2)
        await trio.sleep(1)  # t = 1
        first = payloads.message(11, chat_id=111, text="first")
        await deliver(fleet, 1, first)
        await deliver(fleet, 1, payloads.callback_query(12, chat_id=111))
        await deliver(fleet, 2, payloads.message(21, chat_id=222, text="waits for resume"))
        await trio.sleep(10)
        assert inbox(db) == [(1, 11, True), (1, 12, True), (2, 21, False)]
        later = payloads.message(13, chat_id=111, text="later")
        await trio.sleep(24 * HOUR)
        await deliver(fleet, 1, later)
        await trio.sleep(23 * HOUR)  # t ~ 47 h: snapshots and retention ran, nothing pruned
        assert inbox(db) == [(1, 11, True), (1, 12, True), (1, 13, True), (2, 21, False)]
        # So a redelivery still finds its row: handled once.
        await deliver(fleet, 1, first)
        await trio.sleep(10)
        assert [p["text"] for p in telegram.sent()] == ["first", "later"]

        await trio.sleep(2 * HOUR)  # past 48 h since the first two, and a retention run
        assert inbox(db) == [(1, 13, True), (2, 21, False)]
        assert fleet.handle.metrics.statistics().inbox_rows_pruned == 2
        await trio.sleep(24 * HOUR)
        # The suspended bot's update is undone: it waits, however old, for the resume.
        assert inbox(db) == [(2, 21, False)]
        await fleet.handle.fleet.resume(2)
        await trio.sleep(10)
    assert [p["text"] for p in telegram.sent()] == ["first", "later", "waits for resume"]
