"""Usage analytics in storage: exact counts per hour, day and month, counted once."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import datasketches
import trio

from storage import (
    MIGRATIONS,
    SCHEMA_VERSION,
    InboxEntry,
    Store,
    iso_utc,
    latency_metric,
    latency_quantile,
    migrate,
    open_database,
    period_start,
)
from storage.usage import (
    EXACT_MEMBERS,
    SKETCH_LG_K,
    add_members,
    sketch_estimate,
    unpack_members,
)
from tests import payloads

# 2026-12-02T10:59:59Z, one second before an hour, 13 h before a day ends.
T0 = 1_796_209_199.0
HOUR, DAY = 3600, 86_400


def entry(update: dict[str, object], kind: str, chat: int | None, sender: int | None) -> InboxEntry:
    return InboxEntry(update, chat, None, kind, sender)


def test_periods_start_on_utc_hour_day_and_month_boundaries() -> None:
    assert iso_utc(T0) == "2026-12-02T10:59:59Z"
    assert iso_utc(period_start("hour", T0)) == "2026-12-02T10:00:00Z"
    assert iso_utc(period_start("hour", T0 + 1)) == "2026-12-02T11:00:00Z"
    assert iso_utc(period_start("day", T0)) == "2026-12-02T00:00:00Z"
    assert iso_utc(period_start("month", T0)) == "2026-12-01T00:00:00Z"
    # The last second of a year, and a leap day.
    new_year = 1_798_761_600  # 2027-01-01T00:00:00Z
    assert iso_utc(period_start("month", new_year - 1)) == "2026-12-01T00:00:00Z"
    assert iso_utc(period_start("month", new_year)) == "2027-01-01T00:00:00Z"
    leap_day = 1_709_164_800  # 2024-02-29T00:00:00Z
    assert iso_utc(leap_day) == "2024-02-29T00:00:00Z"
    assert iso_utc(period_start("month", leap_day + 5 * HOUR)) == "2024-02-01T00:00:00Z"


def test_latency_buckets_and_quantiles() -> None:
    assert latency_metric(0.04) == "reply_latency_ms.le_50"
    assert latency_metric(0.1) == "reply_latency_ms.le_100"
    assert latency_metric(0.3) == "reply_latency_ms.le_500"
    assert latency_metric(1e6) == "reply_latency_ms.le_inf"
    counts = {"reply_latency_ms.le_100": 90, "reply_latency_ms.le_2500": 10}
    assert latency_quantile(counts, 0.5) == 100
    assert latency_quantile(counts, 0.95) == 2500
    assert latency_quantile({"reply_latency_ms.le_inf": 1}, 0.5) == math.inf
    assert latency_quantile({}, 0.95) is None


async def test_updates_are_counted_once_by_type_and_roll_up_across_an_hour(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(tmp_path / "u.db").run)
        first = [
            entry(payloads.message(1, chat_id=111), "message", 111, 111),
            entry(payloads.callback_query(2, chat_id=111, user_id=111), "callback_query", 111, 111),
            entry(payloads.group_message(3, chat_id=-4001, user_id=222), "message", -4001, 222),
        ]
        assert await store.inbox_add(1001, first, 4, T0) == [1, 2, 3]
        # Polling again after a crash: 2 and 3 come back; only 4 is new (the next hour).
        again = [
            *first[1:],
            entry(payloads.inline_query(4, user_id=333), "inline_query", None, 333),
        ]
        assert await store.inbox_add(1001, again, 5, T0 + 1) == [4]
        await store.inbox_add(2002, [entry(payloads.message(1), "message", 111, 111)], 2, T0)

        hours = await store.usage("hour", T0 - DAY, T0 + DAY, user_id=1001)
        assert [(iso_utc(r.period), r.counts) for r in hours] == [
            ("2026-12-02T10:00:00Z", {"updates.message": 2, "updates.callback_query": 1}),
            ("2026-12-02T11:00:00Z", {"updates.inline_query": 1}),
        ]
        assert [(r.distinct_chats, r.distinct_users) for r in hours] == [(2, 2), (0, 1)]
        (day,) = await store.usage("day", T0 - DAY, T0 + DAY, user_id=1001)
        assert day.counts == {
            "updates.message": 2,
            "updates.callback_query": 1,
            "updates.inline_query": 1,
        }
        # Distinct over the day, not the sum of the hours' distinct counts.
        assert (day.distinct_chats, day.distinct_users) == (2, 3)
        (fleet_day,) = await store.usage("day", T0 - DAY, T0 + DAY)
        assert fleet_day.user_id is None
        assert fleet_day.counts["updates.message"] == 3
        per_bot = await store.usage("month", T0 - 40 * DAY, T0 + DAY, per_bot=True)
        assert [(r.user_id, sum(r.counts.values())) for r in per_bot] == [(1001, 4), (2002, 1)]
        assert await store.usage_top("updates", T0 - DAY, 10) == [(1001, 4), (2002, 1)]
        assert await store.usage_top("users", T0 - DAY, 1) == [(1001, 3)]
        await store.stop()


async def test_sends_go_with_the_done_mark_and_retention_keeps_days_longer(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(tmp_path / "u.db").run)
        old = T0 - 40 * DAY - 100  # 10:58:19, forty days ago
        await store.inbox_add(1001, [entry(payloads.message(1), "message", 111, 111)], 2, old)
        usage = {"sends": 1, "calls.sendMessage.ok": 1, "reply_latency_ms.le_250": 1}
        assert await store.inbox_done(1001, [1], old + 1, usage) == 1
        # A second mark of the same update adds its usage (a re-handled update sent again).
        await store.inbox_done(1001, [1], old + 2, {"sends": 1})
        await store.inbox_add(1001, [entry(payloads.message(2), "message", 111, 111)], 3, T0)
        (hour,) = await store.usage("hour", old - HOUR, old + HOUR, user_id=1001)
        assert hour.counts["sends"] == 2
        assert hour.counts["updates.message"] == 1

        deleted = await store.usage_delete_older(T0 - 35 * DAY, T0 - 400 * DAY, batch_size=2)
        assert deleted > 0
        assert await store.usage("hour", old - HOUR, old + HOUR, user_id=1001) == []
        (day,) = await store.usage("day", old - DAY, old + DAY, user_id=1001)
        assert day.counts["sends"] == 2 and day.distinct_users == 1
        assert len(await store.usage("hour", T0 - HOUR, T0 + HOUR)) == 1  # recent: kept
        await store.usage_delete_older(T0 - 35 * DAY, T0 - 30 * DAY)
        assert await store.usage("day", old - DAY, old + DAY, user_id=1001) == []
        assert [iso_utc(r.period) for r in await store.usage("month", T0 - 31 * DAY, T0)] == [
            "2026-12-01T00:00:00Z"
        ]
        await store.stop()


def users_of(first: int, count: int, update_base: int) -> list[InboxEntry]:
    """``count`` messages from distinct users ``first..``, each in its own private chat."""
    return [
        entry(payloads.message(update_base + n, chat_id=first + n), "message", first + n, first + n)
        for n in range(count)
    ]


def sketch_blobs(path: Path, grain: str, kind: str = "user") -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            f"SELECT {kind}s_hll FROM usage_buckets WHERE grain = ? AND {kind}s_hll IS NOT NULL "
            "ORDER BY period",
            (grain,),
        ).fetchall()
    finally:
        conn.close()
    return [bytes(blob) for (blob,) in rows]


async def test_distinct_counts_are_exact_up_to_the_threshold(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(tmp_path / "u.db").run)
        # Two batches, the second re-sending half the users: 64 distinct in all.
        await store.inbox_add(1001, users_of(5_000, 40, 1), 41, T0)
        await store.inbox_add(1001, users_of(5_020, 44, 41), 85, T0)
        (hour,) = await store.usage("hour", T0 - HOUR, T0 + 1, user_id=1001)
        assert (hour.distinct_chats, hour.distinct_users) == (EXACT_MEMBERS, EXACT_MEMBERS)
        assert sketch_blobs(tmp_path / "u.db", "hour") == []
        # One more member turns the hour, day and month into sketches, still exact here.
        await store.inbox_add(1001, users_of(9_999, 1, 85), 86, T0)
        (hour,) = await store.usage("hour", T0 - HOUR, T0 + 1, user_id=1001)
        assert hour.distinct_users == EXACT_MEMBERS + 1
        assert len(sketch_blobs(tmp_path / "u.db", "day")) == 1
        await store.stop()


async def test_large_distinct_counts_are_within_the_documented_error(tmp_path: Path) -> None:
    bound = 3 * 1.04 / math.sqrt(2**SKETCH_LG_K)  # docs/OPERATIONS.md: 3 standard errors
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(tmp_path / "u.db").run)
        # 6 hours of 2,000 users each, half of them the previous hour's: 7,000 distinct.
        for h in range(6):
            await store.inbox_add(
                1001, users_of(100_000 + h * 1_000, 2_000, 1 + h * 2_000), None, T0 + 1 + h * HOUR
            )
        hours = await store.usage("hour", T0, T0 + DAY, user_id=1001)
        assert len(hours) == 6
        for row in hours:
            assert abs(row.distinct_users - 2_000) <= bound * 2_000
            assert row.counts["updates.message"] == 2_000  # counts stay exact
        (day,) = await store.usage("day", T0 - DAY, T0 + DAY, user_id=1001)
        assert abs(day.distinct_users - 7_000) <= bound * 7_000
        assert day.distinct_users != sum(r.distinct_users for r in hours)
        (top,) = await store.usage_top("users", T0, 1)
        assert top[0] == 1001 and abs(top[1] - 7_000) <= bound * 7_000
        await store.stop()


async def test_a_day_sketch_is_the_union_of_its_hours(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(tmp_path / "u.db").run)
        for h in range(3):
            await store.inbox_add(
                1001, users_of(h * 700, 1_000, 1 + h * 1_000), None, T0 + 1 + h * HOUR
            )
        await store.stop()
    hours = sketch_blobs(tmp_path / "u.db", "hour")
    (day,) = sketch_blobs(tmp_path / "u.db", "day")
    union = datasketches.hll_union(SKETCH_LG_K)
    for blob in hours:
        union.update(datasketches.hll_sketch.deserialize(blob))
    merged = union.get_result(datasketches.tgt_hll_type.HLL_4)
    # The same registers: the day's sketch merged with one of its hours (a subset, which
    # moves no register, but makes both unions use the same merged-sketch estimator rather
    # than the HIP estimate a directly updated sketch carries) estimates the same as the
    # merge of the hours, bounds included.
    again = datasketches.hll_union(SKETCH_LG_K)
    again.update(datasketches.hll_sketch.deserialize(day))
    again.update(datasketches.hll_sketch.deserialize(hours[0]))
    assert again.get_estimate() == union.get_estimate()
    assert again.get_lower_bound(2) == merged.get_lower_bound(2)
    assert abs(sketch_estimate(day) - 2_400) <= 0.05 * 2_400


async def test_a_redelivered_batch_after_a_restart_counts_nothing_again(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    batch = users_of(1, 500, 1)
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(path).run)
        assert len(await store.inbox_add(1001, batch, 501, T0)) == 500
        (before,) = await store.usage("day", T0 - DAY, T0 + 1, user_id=1001)
        await store.stop()
    async with trio.open_nursery() as nursery:
        # The daemon was killed before confirming the offset: the same updates come back.
        store = await nursery.start(Store(path).run)
        assert await store.inbox_add(1001, batch, 501, T0 + 5) == []
        (after,) = await store.usage("day", T0 - DAY, T0 + 1, user_id=1001)
        assert after == before
        assert after.counts["updates.message"] == 500
        await store.stop()
    # And a sketch given the same members again (idempotent HLL) does not move.
    db = open_database(path)
    try:
        (blob,) = sketch_blobs(path, "day")
        add_members(db.conn, 1001, [("user", n) for n in range(1, 501)], T0)
        assert sketch_blobs(path, "day") == [blob]
    finally:
        db.close()


def test_the_migrations_keep_old_counts_and_turn_large_member_sets_into_sketches(
    tmp_path: Path,
) -> None:
    db = open_database(tmp_path / "old.db")
    try:
        migrate(db, MIGRATIONS[:6])
        hour, day = period_start("hour", T0), period_start("day", T0)
        db.conn.executemany(
            "INSERT INTO usage_members VALUES (?, 1001, ?, ?, ?)",
            [("hour", hour, "user", n) for n in range(300)]
            + [("hour", hour, "chat", n) for n in range(10)]
            + [("day", day, "chat", -100_123)],
        )
        db.conn.executemany(
            "INSERT INTO usage_counts VALUES (?, ?, ?, ?, ?)",
            [
                ("hour", 1001, hour, "updates.message", 300),
                ("hour", 1001, hour, "calls.sendMessage.ok", 290),
                ("day", 1002, day, "sends", 7),
            ],
        )
        assert migrate(db) == (6, SCHEMA_VERSION)
        assert not {"usage_members", "usage_sketches"} & set(db.table_names())
        # The counts read as before, through the view of the one-row-a-bucket table.
        assert sorted(db.execute("SELECT * FROM usage_counts").fetchall()) == [
            ("day", 1002, day, "sends", 7),
            ("hour", 1001, hour, "calls.sendMessage.ok", 290),
            ("hour", 1001, hour, "updates.message", 300),
        ]
        rows = {
            (grain, user_id): (
                unpack_members(chats),
                None if chats_hll is None else sketch_estimate(chats_hll),
                unpack_members(users),
                None if users_hll is None else sketch_estimate(users_hll),
            )
            for grain, user_id, chats, chats_hll, users, users_hll in db.execute(
                "SELECT grain, user_id, chats, chats_hll, users, users_hll FROM usage_buckets"
            ).fetchall()
        }
        assert rows == {
            ("hour", 1001): (list(range(10)), None, [], 300),  # 300 users: a sketch
            ("day", 1001): ([-100_123], None, [], None),
            ("day", 1002): ([], None, [], None),
        }
    finally:
        db.close()
