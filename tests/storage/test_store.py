"""The Store's operations, as the daemon and the admin API use them."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from storage import (
    BotRecord,
    InboxEntry,
    Store,
    StoreClosedError,
    WriterState,
    run_inline,
)
from tests.storage.factories import health_row

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
T0 = 1_700_000_000.0


def bot(user_id: int = 1001, **changes: Any) -> BotRecord:
    values: dict[str, Any] = {
        "user_id": user_id,
        "token": TOKEN,
        "handler": "echo",
        "settings": {"rps": 30, "rules": [{"match": "hi", "reply": "hello"}]},
        "source": "config",
        "suspended_reason": None,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(changes)
    return BotRecord(**values)


def entry(update_id: int, chat_id: int = 555, text: str = "hi") -> InboxEntry:
    """A text message of ``chat_id`` as the inbox gets it (with its chat named)."""
    return InboxEntry(message(update_id, chat_id, text), chat_id)


def message(update_id: int, chat_id: int = 555, text: str = "hi") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {"message_id": update_id, "chat": {"id": chat_id}, "text": text},
    }


def exists(path: Path) -> bool:
    return path.exists()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- health snapshots ------------------------------------------------------------------------


async def test_snapshots_round_trip_exactly(store: Store) -> None:
    rows = [
        health_row(1, T0, last_error="timeout talking to 123456:…", last_failure_at=T0 - 3),
        health_row(2, T0, "suspended", error_rate=1.0, last_success_at=None),
    ]
    assert await store.insert_snapshots(rows) == 2
    assert await store.insert_snapshots([]) == 0
    assert await store.history(1, T0) == [rows[0]]
    assert await store.history(2, T0) == [rows[1]]
    assert await store.snapshot_count() == 2


async def test_latest_snapshot_of_every_bot(store: Store) -> None:
    rows = [
        health_row(user_id, T0 + step * 300, total_requests=step)
        for step in range(5)
        for user_id in (1, 2, 3)
    ]
    # Bot 3's newest row arrives first: "latest" is by time, not by insertion.
    await store.insert_snapshots([health_row(3, T0 + 9_000, total_requests=99)])
    await store.insert_snapshots(rows)
    # Two rows at the same moment: the one written last wins.
    await store.insert_snapshots([health_row(2, T0 + 1_200, total_requests=77)])

    latest = await store.latest_snapshots()
    assert {user_id: row.total_requests for user_id, row in latest.items()} == {
        1: 4,
        2: 77,
        3: 99,
    }
    assert latest[1] == health_row(1, T0 + 1_200, total_requests=4)


async def test_latest_snapshots_of_an_empty_table(store: Store) -> None:
    assert await store.latest_snapshots() == {}


async def test_history_is_one_bots_rows_since_a_time_oldest_first(store: Store) -> None:
    await store.insert_snapshots(
        [health_row(user_id, T0 + step * 60) for step in (3, 0, 2, 1) for user_id in (1, 2)]
    )
    history = await store.history(1, since=T0 + 60)
    # `since` is inclusive.
    assert [row.recorded_at for row in history] == [T0 + 60, T0 + 120, T0 + 180]
    assert {row.user_id for row in history} == {1}
    assert await store.history(1, since=T0 + 181) == []
    assert await store.history(3, since=0) == []
    assert await store.snapshot_count(1) == 4


async def test_unhealthy_history_shows_outages_not_warnings(store: Store) -> None:
    await store.insert_snapshots(
        [
            health_row(1, T0, "unhealthy"),  # before the window
            health_row(1, T0 + 10, "healthy"),
            health_row(2, T0 + 20, "degraded"),
            health_row(3, T0 + 30, "suspended"),
            health_row(1, T0 + 40, "unhealthy"),
        ]
    )
    rows = await store.unhealthy_history(since=T0 + 1)
    assert [(row.user_id, row.status) for row in rows] == [(3, "suspended"), (1, "unhealthy")]
    degraded = await store.unhealthy_history(since=T0, statuses=("degraded",))
    assert [row.user_id for row in degraded] == [2]


async def test_retention_keeps_a_row_recorded_exactly_at_the_cutoff(store: Store) -> None:
    cutoff = T0 + 100
    await store.insert_snapshots(
        [health_row(1, cutoff - 0.5), health_row(2, cutoff), health_row(1, cutoff + 0.5)]
    )
    await store.dead_letter(1, 10, 555, "deadline passed", at=cutoff - 1)
    await store.dead_letter(1, 11, 555, "deadline passed", at=cutoff)

    assert await store.delete_older_than(cutoff) == 2
    remaining = await store.history(1, since=0) + await store.history(2, since=0)
    assert sorted(row.recorded_at for row in remaining) == [cutoff, cutoff + 0.5]
    assert [d.update_id for d in await store.list_dead_letters()] == [11]
    assert await store.delete_older_than(cutoff) == 0


async def test_retention_deletes_in_short_transactions(store: Store) -> None:
    await store.insert_snapshots([health_row(1, T0 + i) for i in range(5)])
    batches_before = store.statistics().writer.batches
    assert await store.delete_older_than(T0 + 100, batch_size=2) == 5
    # 2 + 2 + 1 health rows, then one (empty) pass over dead letters: four transactions.
    assert store.statistics().writer.batches - batches_before == 4
    assert await store.snapshot_count() == 0
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        await store.delete_older_than(T0, batch_size=0)


# --- bots registry ---------------------------------------------------------------------------


async def test_upsert_inserts_then_updates_keeping_creation_and_suspension(store: Store) -> None:
    stored = await store.upsert_bot(bot())
    assert stored == bot()
    await store.set_suspended(1001, "token revoked (401)", at=T0 + 5)

    updated = await store.upsert_bot(
        bot(handler="autoreply", settings={"rps": 5}, created_at=T0 + 50, updated_at=T0 + 50)
    )
    assert updated == bot(
        handler="autoreply",
        settings={"rps": 5},
        suspended_reason="token revoked (401)",
        created_at=T0,
        updated_at=T0 + 50,
    )
    assert await store.list_bots() == [updated]
    assert await store.get_bot(1001) == updated


async def test_suspend_and_resume(store: Store) -> None:
    await store.upsert_bot(bot())
    assert await store.set_suspended(1001, "suspended by an admin", at=T0 + 1)
    suspended = await store.get_bot(1001)
    assert suspended is not None
    assert (suspended.suspended_reason, suspended.updated_at) == ("suspended by an admin", T0 + 1)
    assert await store.set_suspended(1001, None)
    resumed = await store.get_bot(1001)
    assert resumed is not None
    # Without `at`, updated_at is left alone.
    assert (resumed.suspended_reason, resumed.updated_at) == (None, T0 + 1)
    assert not await store.set_suspended(4242, "nobody")
    store.set_suspended_nowait(1001, "revoked")
    await store.writer.submit(lambda conn: None)  # the next commit includes it
    assert (await store.get_bot(1001)) == bot(suspended_reason="revoked", updated_at=T0 + 1)


async def test_list_bots_in_user_id_order(store: Store) -> None:
    for user_id in (3003, 1001, 2002):
        await store.upsert_bot(bot(user_id, source="api"))
    assert [b.user_id for b in await store.list_bots()] == [1001, 2002, 3003]
    assert await store.get_bot(9) is None


async def test_removing_a_bot_keeps_its_health_history(store: Store) -> None:
    await store.upsert_bot(bot())
    await store.insert_snapshots([health_row(1001, T0)])
    await store.inbox_add(1001, [entry(1)], next_offset=2, received_at=T0)
    await store.dead_letter(1001, 1, 555, "deadline passed", at=T0)

    assert await store.remove_bot(1001)
    assert not await store.remove_bot(1001)
    assert await store.list_bots() == []
    assert await store.load_offset(1001) is None
    assert await store.inbox_pending(1001) == []
    assert await store.history(1001, since=0) == [health_row(1001, T0)]
    assert len(await store.list_dead_letters(1001)) == 1


async def test_chat_migrations_are_kept_per_bot_and_go_with_the_bot(store: Store) -> None:
    await store.upsert_bot(bot(1001))
    await store.upsert_bot(bot(2002))
    await store.record_chat_migration(1001, -4001, -1001234567890, at=T0)
    await store.record_chat_migration(1001, -4002, -1000000000001, at=T0)
    await store.record_chat_migration(2002, -4001, -1001234567890, at=T0)
    # Recorded again (a second bot saw the same upgrade, or a replay): the latest wins.
    await store.record_chat_migration(1001, -4002, -1000000000002, at=T0 + 1)
    assert await store.load_bot_chat_migrations(1001) == {
        -4001: -1001234567890,
        -4002: -1000000000002,
    }
    assert await store.load_chat_migrations() == {
        1001: {-4001: -1001234567890, -4002: -1000000000002},
        2002: {-4001: -1001234567890},
    }
    assert await store.remove_bot(1001)
    assert await store.load_chat_migrations() == {2002: {-4001: -1001234567890}}
    assert await store.load_bot_chat_migrations(1001) == {}


def test_a_bot_record_never_shows_its_token() -> None:
    record = bot()
    for text in (repr(record), str(record), f"{record}", repr([record])):
        assert TOKEN not in text
        assert "AAHdqTcv" not in text
        assert "123456789:…" in text
    odd = bot(token="not-a-real-token-but-still-secret")
    assert "secret" not in repr(odd)
    with pytest.raises(
        ValueError, match=re.escape("BotRecord.source must be 'config' or 'api', got 'x'")
    ):
        bot(source="x")


# --- inbox and offsets -----------------------------------------------------------------------


async def test_inbox_returns_only_new_updates(store: Store) -> None:
    assert await store.inbox_add(1001, [entry(10), entry(11)], 12, T0) == [10, 11]
    # Telegram sends 11 again (the offset was never confirmed), plus a new one; 12 appears
    # twice in one batch.
    again = [entry(11, text="dup"), entry(12), entry(12)]
    assert await store.inbox_add(1001, again, 13, T0 + 1) == [12]
    # Another bot's update ids are its own.
    assert await store.inbox_add(2002, [entry(10)], 11, T0) == [10]
    pending = await store.inbox_pending(1001)
    assert [p["update_id"] for p in pending] == [10, 11, 12]
    assert pending[1] == {
        "update_id": 11,
        "chat_id": 555,
        "update": message(11),
        "received_at": T0,
    }


async def test_undone_updates_come_back_oldest_first_for_every_bot(store: Store) -> None:
    # Stored in three batches, the later ones with lower ids first inside the batch: the
    # replay after a restart is by update_id (Telegram's order), per bot.
    await store.inbox_add(1001, [entry(20), entry(21)], 22, T0)
    await store.inbox_add(2002, [entry(7), entry(5)], 8, T0)
    await store.inbox_add(1001, [entry(23), entry(22)], 24, T0 + 1)
    await store.inbox_done(1001, [21], T0 + 2)
    assert [p["update_id"] for p in await store.inbox_pending(1001)] == [20, 22, 23]
    assert [p["update_id"] for p in await store.inbox_pending(2002)] == [5, 7]
    every = await store.inbox_pending_all()
    assert {uid: [p["update_id"] for p in rows] for uid, rows in every.items()} == {
        1001: [20, 22, 23],
        2002: [5, 7],
    }
    assert every[1001][0] == {
        "update_id": 20,
        "chat_id": 555,
        "update": message(20),
        "received_at": T0,
    }
    assert await store.load_offsets() == {1001: 24, 2002: 8}


async def test_the_offset_is_stored_with_the_updates(store: Store) -> None:
    assert await store.load_offset(1001) is None
    await store.inbox_add(1001, [entry(10)], 11, T0)
    assert await store.load_offset(1001) == 11
    await store.inbox_add(1001, [], 11, T0 + 30)  # an empty poll still records the offset
    assert await store.load_offset(1001) == 11
    # One failing update aborts the whole batch: neither the updates nor the offset move on.
    unserialisable = {"update_id": 12, "message": {"chat": {"id": 1}, "bad": {1, 2}}}
    with pytest.raises(TypeError, match="not JSON serializable"):
        await store.inbox_add(1001, [entry(13), InboxEntry(unserialisable, 1)], 14, T0 + 60)
    assert await store.load_offset(1001) == 11
    assert [p["update_id"] for p in await store.inbox_pending(1001)] == [10]


async def test_an_update_without_an_id_is_refused_before_anything_is_written(
    store: Store,
) -> None:
    with pytest.raises(ValueError, match="every update must have an integer update_id, got"):
        await store.inbox_add(1001, [entry(1), InboxEntry({"message": {}}, None)], 2, T0)
    assert await store.load_offset(1001) is None
    assert store.statistics().writer.jobs == 0


async def test_done_updates_leave_the_pending_list(store: Store) -> None:
    await store.inbox_add(1001, [entry(i) for i in (5, 6, 7)], 8, T0)
    assert await store.inbox_done(1001, [6, 7], T0 + 1) == 2
    assert await store.inbox_done(1001, [6], T0 + 2) == 0  # already done
    assert [p["update_id"] for p in await store.inbox_pending(1001)] == [5]
    # Done updates still deduplicate.
    assert await store.inbox_add(1001, [entry(6)], 8, T0 + 3) == []


async def test_the_inbox_records_the_chat_its_caller_names(store: Store) -> None:
    # Storage reads no Telegram update: which chat an update is about is the actors' rule
    # (the lanes'), and the row keeps what they computed, even where the payload differs.
    entries = [
        InboxEntry({"update_id": 1, "edited_message": {"chat": {"id": -100}}}, -100),
        InboxEntry({"update_id": 2, "message_reaction_count": {"chat": {"id": 5}}}, 77),
        InboxEntry({"update_id": 3, "inline_query": {"id": "q", "from": {"id": 9}}}, None),
    ]
    await store.inbox_add(1001, entries, 4, T0)
    pending = await store.inbox_pending(1001)
    assert [p["chat_id"] for p in pending] == [-100, 77, None]
    assert [p["update"] for p in pending] == [e.update for e in entries]


async def test_undone_updates_survive_a_restart(db_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(db_path).run)
        await store.inbox_add(1001, [entry(i) for i in (1, 2, 3)], 4, T0)
        store.inbox_done_nowait(1001, [1], T0 + 1)
        await store.stop()
    async with trio.open_nursery() as nursery:
        store = await nursery.start(Store(db_path).run)
        assert [p["update_id"] for p in await store.inbox_pending(1001)] == [2, 3]
        assert await store.load_offset(1001) == 4
        assert await store.integrity_check() == ["ok"]
        await store.stop()


async def test_prune_deletes_only_done_updates_below_the_offset(store: Store) -> None:
    await store.inbox_add(1001, [entry(i) for i in range(1, 6)], 6, T0)
    await store.inbox_done(1001, [1, 2, 3], T0 + 1)
    await store.inbox_add(2002, [entry(1)], 2, T0)
    await store.inbox_done(2002, [1], T0 + 1)
    # A done update at or above its bot's offset can still be re-sent: it is kept.
    await store.writer.submit(
        lambda conn: conn.execute("UPDATE offsets SET next_offset = 1 WHERE user_id = 2002")
    )

    assert await store.prune_inbox(batch_size=2) == 3
    assert [p["update_id"] for p in await store.inbox_pending(1001)] == [4, 5]
    # The pruned updates are gone; the one kept for bot 2002 still deduplicates.
    assert await store.inbox_add(2002, [entry(1)], 2, T0 + 2) == []
    assert await store.prune_inbox() == 1


async def test_a_webhook_bots_done_updates_are_pruned_by_when_they_arrived(
    store: Store,
) -> None:
    # A webhook bot has no offset (next_offset None): its done updates go once received
    # long enough ago, batch after batch, and the total is what was deleted.
    await store.inbox_add(1001, [entry(i) for i in range(1, 6)], None, T0)
    await store.inbox_add(1001, [entry(6)], None, T0 + 100)
    await store.inbox_add(1001, [entry(7)], None, T0)
    await store.inbox_done(1001, [1, 2, 3, 4, 5, 6], T0 + 200)

    # 1-5 in three batches of at most 2; 6 arrived exactly at the cutoff and 7 is undone.
    assert await store.prune_inbox_received_before(T0 + 100, batch_size=2) == 5
    assert [p["update_id"] for p in await store.inbox_pending(1001)] == [7]
    # The kept done update still deduplicates a redelivery; the pruned ones are forgotten.
    assert await store.inbox_add(1001, [entry(6)], None, T0 + 300) == []
    assert await store.prune_inbox_received_before(T0 + 101) == 1
    assert await store.inbox_add(1001, [entry(6)], None, T0 + 300) == [6]
    assert await store.prune_inbox_received_before(T0 + 1_000) == 0
    assert await store.load_offset(1001) is None
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
        await store.prune_inbox_received_before(T0, batch_size=0)


async def test_storing_updates_waits_for_room_in_the_write_queue_unless_told_not_to(
    db_path: Path,
) -> None:
    # A queue of one, filled before the writer runs: the poller's default waits for room,
    # the webhook receiver's wait_for_room=False is refused at once with nothing stored.
    store = Store(db_path, queue_size=1)
    store.usage_add_nowait(3003, {"sends": 1}, T0)
    with pytest.raises(trio.WouldBlock):
        await store.inbox_add(2002, [entry(1)], 2, T0, wait_for_room=False)
    stored: list[list[int]] = []

    async def poll() -> None:
        stored.append(await store.inbox_add(1001, [entry(10)], 11, T0))

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as polls:
            polls.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            assert stored == []
            await nursery.start(store.run)
        assert stored == [[10]]
        assert [p["update_id"] for p in await store.inbox_pending(1001)] == [10]
        assert await store.inbox_pending(2002) == []
        assert await store.load_offsets() == {1001: 11}
        await store.stop()


async def test_a_done_mark_not_waited_for_still_adds_its_usage(store: Store) -> None:
    await store.inbox_add(1001, [entry(1), entry(2)], 3, T0)
    store.inbox_done_nowait(1001, [1, 2], T0 + 1, {"sends": 2})
    await store.flush()
    assert await store.inbox_pending(1001) == []
    (hour,) = await store.usage("hour", T0 - 3600, T0 + 3600, user_id=1001)
    assert hour.counts.get("sends") == 2


# --- dead letters, readiness, lifecycle --------------------------------------------------------


async def test_dead_letters_newest_first(store: Store) -> None:
    await store.dead_letter(1001, 1, 555, "deadline passed", T0)
    await store.dead_letter(2002, 9, None, "PERMANENT: chat not found", T0 + 1)
    await store.dead_letter(1001, 2, 555, "handler raised KeyError: 'x'", T0 + 2)
    assert [
        (d.user_id, d.update_id, d.chat_id, d.reason, d.recorded_at)
        for d in await store.list_dead_letters(limit=2)
    ] == [
        (1001, 2, 555, "handler raised KeyError: 'x'", T0 + 2),
        (2002, 9, None, "PERMANENT: chat not found", T0 + 1),
    ]
    assert [d.update_id for d in await store.list_dead_letters(1001)] == [2, 1]


async def test_readiness_reports_a_working_writer(store: Store) -> None:
    assert await store.check_writable() == (True, "ok")
    await store.writer.stop()
    assert await store.check_writable() == (False, "the store writer is stopped")


async def test_after_stop_reads_and_writes_are_refused(db_path: Path) -> None:
    store = Store(db_path)
    with pytest.raises(StoreClosedError, match=r"start it with nursery.start\(store.run\)"):
        await store.list_bots()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.upsert_bot(bot())
        await store.stop()
        await store.stop()
    assert store.writer.state is WriterState.STOPPED
    assert store.statistics().readers == 0
    with pytest.raises(StoreClosedError):
        await store.list_bots()
    with pytest.raises(StoreClosedError):
        await store.upsert_bot(bot())
    with pytest.raises(StoreClosedError):
        store.inbox_done_nowait(1001, [1], T0)


async def test_the_whole_file_stays_private_and_sound(db_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(db_path).run)
        await store.upsert_bot(bot())
        await store.insert_snapshots([health_row(1001, T0 + i) for i in range(100)])
        await store.inbox_add(1001, [entry(i) for i in range(50)], 50, T0)
        for side in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            assert mode_of(side) == 0o600
        assert await store.integrity_check() == ["ok"]
        stats = store.statistics()
        assert stats.readers == 2
        # bot, snapshots, updates, offset, and (usage analytics) the metric's name, the
        # updates' count and chat of the hour, day and month
        assert stats.writer.rows == 1 + 100 + 50 + 1 + 1 + 3 + 3
        await store.stop()
    # The last connection to close checkpoints the WAL into the main file.
    assert not exists(Path(f"{db_path}-wal"))


async def test_the_store_runs_inline_on_a_mock_clock(
    db_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(db_path, offload=run_inline).run)
        await store.insert_snapshots([health_row(1, T0)])
        await trio.sleep(3600)
        assert trio.current_time() == 3600
        assert await store.latest_snapshots() == {1: health_row(1, T0)}
        assert await store.inbox_add(1, [entry(1)], 2, T0) == [1]
        await store.stop()
    assert store.writer.statistics().jobs == 2


async def test_histories_can_be_limited_to_the_newest_rows(store: Store) -> None:
    await store.insert_snapshots(
        [health_row(1, T0 + step, "unhealthy" if step % 2 else "healthy") for step in range(10)]
    )
    newest = await store.history(1, since=T0, limit=3)
    assert [row.recorded_at for row in newest] == [T0 + 7, T0 + 8, T0 + 9]
    outages = await store.unhealthy_history(since=T0, limit=2)
    assert [row.recorded_at for row in outages] == [T0 + 7, T0 + 9]
    assert len(await store.unhealthy_history(since=T0)) == 5
    with pytest.raises(ValueError, match="limit must be >= 1 or None, got 0"):
        await store.history(1, since=T0, limit=0)


async def test_start_up_reads_every_bots_resume_point_in_bulk(store: Store) -> None:
    await store.upsert_bots([bot(1001), bot(1002), bot(1003)])
    assert [b.user_id for b in await store.list_bots()] == [1001, 1002, 1003]
    await store.inbox_add(1001, [entry(5), entry(6)], 7, received_at=10.0)
    await store.inbox_add(1002, [entry(40)], 41, received_at=11.0)
    await store.inbox_done(1001, [5], done_at=12.0)

    assert await store.load_offsets() == {1001: 7, 1002: 41}
    pending = await store.inbox_pending_all()
    assert {uid: [u["update_id"] for u in rows] for uid, rows in pending.items()} == {
        1001: [6],
        1002: [40],
    }
    # The bulk reads answer exactly what the per-bot ones do.
    for uid in (1001, 1002, 1003):
        assert pending.get(uid, []) == await store.inbox_pending(uid)
        assert (await store.load_offsets()).get(uid) == await store.load_offset(uid)


async def test_webhook_registrations_round_trip_replace_and_delete(store: Store) -> None:
    from storage import WebhookRegistration

    first = WebhookRegistration(1001, "https://b.example/tg/1001", "ab" * 8, ("message",), 40, 1.0)
    await store.upsert_webhook_registration(first)
    assert await store.load_webhook_registrations() == {1001: first}
    rotated = WebhookRegistration(1001, first.url, "cd" * 8, ("message", "callback_query"), 40, 2.0)
    await store.upsert_webhook_registration(rotated)
    assert await store.load_webhook_registrations() == {1001: rotated}
    assert not rotated.same_as(first)
    assert await store.delete_webhook_registration(1001)
    assert not await store.delete_webhook_registration(1001)
    assert await store.load_webhook_registrations() == {}
