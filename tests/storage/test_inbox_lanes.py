"""A lane that fell behind re-reads its own undone updates from the inbox, in order."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from storage import InboxEntry, Store

T0 = 1_800_000_000.0


def update(update_id: int, chat_id: int) -> dict[str, Any]:
    return {"update_id": update_id, "message": {"chat": {"id": chat_id}, "text": f"n{update_id}"}}


async def test_a_lane_reads_its_undone_updates_after_its_cursor_in_order(store: Store) -> None:
    entries = [
        InboxEntry(update(i, -7 if i % 3 else 8), -7 if i % 3 else 8, "-7" if i % 3 else "8")
        for i in range(1, 31)
    ]
    # Rows stored without a lane name are offered to every lane (its reader checks them).
    entries.append(InboxEntry(update(31, -7), -7, None))
    await store.inbox_add(1001, entries, 32, T0)
    await store.inbox_done(1001, [5], T0 + 1)
    group = [i for i in range(1, 32) if i % 3 or i == 31]

    first = await store.inbox_lane_undone(1001, "-7", 2, 4)
    assert [row["update_id"] for row in first] == [4, 7, 8, 10]  # 5 is done
    assert {row["lane"] for row in first} == {"-7"}
    assert first[0]["update"] == update(4, -7)
    assert first[0]["received_at"] == T0

    rest = await store.inbox_lane_undone(1001, "-7", 10, 100)
    assert [row["update_id"] for row in rest] == [i for i in group if i > 10]
    assert rest[-1]["lane"] is None
    # Fewer than asked means there are no more; another bot's rows never show.
    assert await store.inbox_lane_undone(1001, "-7", 31, 5) == []
    assert await store.inbox_lane_undone(1002, "-7", 0, 5) == []
    with pytest.raises(ValueError, match="limit must be >= 1"):
        await store.inbox_lane_undone(1001, "-7", 0, 0)


async def test_the_read_back_uses_the_lane_index(store: Store, db_path: Path) -> None:
    await store.flush()
    with sqlite3.connect(db_path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT update_id FROM inbox WHERE user_id = 1 AND lane = '-7' "
            "AND update_id > 5 AND done_at IS NULL ORDER BY update_id LIMIT 64"
        ).fetchall()
    conn.close()
    assert any("idx_inbox_lane_undone" in str(row) for row in plan), plan


async def test_naming_lanes_at_a_start_changes_only_undone_rows_that_differ(store: Store) -> None:
    entries = [InboxEntry(update(1, -7), -7, None), InboxEntry(update(2, -7), -7, "-7")]
    entries.append(InboxEntry(update(3, -7), -7, "old"))
    await store.inbox_add(1001, entries, 4, T0)
    await store.inbox_done(1001, [3], T0)
    assert await store.inbox_name_lanes(1001, [(1, "-7"), (2, "-7"), (3, "-7")]) == 1
    assert await store.inbox_name_lanes(1001, []) == 0
    rows = await store.inbox_lane_undone(1001, "-7", 0, 10)
    assert [(row["update_id"], row["lane"]) for row in rows] == [(1, "-7"), (2, "-7")]


async def test_a_read_back_merges_unnamed_rows_by_update_and_names_their_chat(store: Store) -> None:
    # An unnamed row of another chat (stored before lanes were named) sits between the
    # lane's own: the lane's reader gets them in update order, each with its chat.
    entries = [
        InboxEntry(update(1, 9), 9, "9"),
        InboxEntry(update(2, -7), -7, None),
        InboxEntry(update(3, 9), 9, "9"),
    ]
    await store.inbox_add(1001, entries, 4, T0)
    rows = await store.inbox_lane_undone(1001, "9", 0, 10)
    assert [(row["update_id"], row["chat_id"]) for row in rows] == [(1, 9), (2, -7), (3, 9)]
