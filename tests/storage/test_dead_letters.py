"""Dead letters in the store: kept with their update, paged, redriven into the inbox, discarded,
and the schema 8 migration of a file that already holds dead letters."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from actors import update_chat_id, update_payload
from storage import (
    MIGRATIONS,
    DeadLetterSelection,
    InboxEntry,
    Store,
    migrate,
    open_database,
)
from tests import payloads

T0 = 1_700_000_000.0
BOT = 1001


async def dead(store: Store, update: payloads.Update, reason: str, at: float, lane: str) -> None:
    """Store ``update`` in the inbox, mark it done and dead-letter it, as a bot does."""
    key = update_chat_id(update)
    update_id = int(update["update_id"])
    found = update_payload(update)
    kind = "other" if found is None else found[0]
    await store.inbox_add(BOT, [InboxEntry(update, key, lane, kind)], update_id + 1, at - 10)
    await store.dead_letter(BOT, update_id, key, reason, at, update=update, lane=lane)
    await store.inbox_done(BOT, [update_id], at)


async def undone(store: Store) -> dict[int, float]:
    return {row["update_id"]: row["received_at"] for row in await store.inbox_pending(BOT)}


# --- migration ---------------------------------------------------------------------------------


def test_schema_7_file_with_dead_letters_migrates_and_keeps_them(db_path: Path) -> None:
    db = open_database(db_path)
    try:
        assert migrate(db, MIGRATIONS[:7]) == (0, 7)
        db.execute(
            "INSERT INTO dead_letters (user_id, update_id, chat_id, reason, recorded_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (BOT, 41, 555, "delivery deadline passed; last error: 502", T0),
        )
        db.conn.commit()
        assert migrate(db) == (7, len(MIGRATIONS))
        row = db.execute(
            "SELECT id, update_id, reason, payload, lane, redriven_at FROM dead_letters"
        ).fetchone()
        assert row == (1, 41, "delivery deadline passed; last error: 502", None, None, None)
    finally:
        db.close()


async def test_a_legacy_dead_letter_is_listed_but_not_redriven(store: Store) -> None:
    # Stored the way schema 7 stored them: no payload, no lane.
    await store.dead_letter(BOT, 41, 555, "handler raised KeyError: 'x'", T0)
    page = await store.dead_letters_page(BOT)
    (letter,) = page.dead_letters
    assert (letter.update_id, letter.payload, letter.redriven_at) == (41, None, None)
    result = await store.redrive_dead_letters(BOT, DeadLetterSelection(all=True), T0 + 5)
    assert result.redriven == []
    (refusal,) = result.refused
    assert (refusal.id, refusal.update_id) == (letter.id, 41)
    assert "stored without its update" in refusal.reason
    assert await undone(store) == {}


# --- stored and listed -------------------------------------------------------------------------


async def test_dead_letter_keeps_the_update_as_received(store: Store) -> None:
    update = payloads.forum_topic_message(7, chat_id=-1001234567890, thread_id=77)
    await dead(store, update, "the handler's sendMessage call failed: 403", T0, "-1001234567890")
    (letter,) = (await store.dead_letters_page(BOT)).dead_letters
    assert letter.payload == update
    assert letter.payload["message"]["message_thread_id"] == 77
    assert (letter.chat_id, letter.lane) == (-1001234567890, "-1001234567890")
    # Exactly the JSON the inbox keeps (non-ASCII text as it came).
    conn = sqlite3.connect(store.path)
    try:
        stored = conn.execute("SELECT payload FROM dead_letters").fetchone()[0]
    finally:
        conn.close()
    assert json.loads(stored) == update


async def test_pages_newest_first_with_a_cursor_and_a_reason_filter(store: Store) -> None:
    updates = [
        payloads.callback_query(1, chat_id=111),
        payloads.business_message(2, chat_id=555),
        payloads.message(3, chat_id=111, text="three"),
        payloads.forum_topic_message(4),
    ]
    reasons = ["handler raised KeyError", "deadline passed", "DEADLINE passed", "handler raised"]
    for i, (update, reason) in enumerate(zip(updates, reasons, strict=True)):
        await dead(store, update, reason, T0 + i, str(update_chat_id(update)))
    first = await store.dead_letters_page(BOT, limit=3)
    assert [d.update_id for d in first.dead_letters] == [4, 3, 2]
    assert first.total == 4 and first.next_cursor == first.dead_letters[-1].id
    second = await store.dead_letters_page(BOT, limit=3, before=first.next_cursor)
    assert [d.update_id for d in second.dead_letters] == [1]
    assert second.next_cursor is None
    deadline = await store.dead_letters_page(BOT, reason="deadline")
    assert [d.update_id for d in deadline.dead_letters] == [3, 2] and deadline.total == 2
    assert (await store.dead_letters_page(2002)).total == 0


# --- redrive -----------------------------------------------------------------------------------


async def test_redrive_puts_the_update_back_undone_and_received_now(store: Store) -> None:
    update = payloads.callback_query(5, chat_id=111)
    await dead(store, update, "delivery deadline passed", T0, "111")
    assert await undone(store) == {}
    result = await store.redrive_dead_letters(BOT, DeadLetterSelection(all=True), T0 + 900)
    (letter,) = result.redriven
    assert (letter.update_id, letter.payload, letter.redriven_at) == (5, update, T0 + 900)
    assert result.refused == []
    # Received now: its delivery deadline starts over.
    assert await undone(store) == {5: T0 + 900}
    (row,) = await store.inbox_lane_undone(BOT, "111", 0, 10)
    assert row["update"] == update
    listed = (await store.dead_letters_page(BOT)).dead_letters
    assert [d.redriven_at for d in listed] == [T0 + 900]


async def test_redrive_restores_an_inbox_row_that_was_pruned(store: Store) -> None:
    update = payloads.business_message(8, chat_id=555)
    await dead(store, update, "the handler's sendMessage call failed", T0, "555")
    assert await store.prune_inbox() == 1
    result = await store.redrive_dead_letters(BOT, DeadLetterSelection(ids=(1,)), T0 + 60)
    assert [d.update_id for d in result.redriven] == [8]
    assert await undone(store) == {8: T0 + 60}
    # Not counted again as a received update: it was counted when it first came.
    rows = await store.usage("hour", T0 - 3600, T0 + 3600, user_id=BOT)
    assert sum(r.counts.get("updates.business_message", 0) for r in rows) == 1


async def test_a_redriven_dead_letter_is_not_redriven_again(store: Store) -> None:
    await dead(store, payloads.message(1, chat_id=111), "handler raised", T0, "111")
    result = await store.redrive_dead_letters(BOT, DeadLetterSelection(ids=(1,)), T0 + 1)
    (first,) = result.redriven

    # Waiting in the inbox: refused.
    again = await store.redrive_dead_letters(BOT, DeadLetterSelection(ids=(first.id,)), T0 + 2)
    assert again.redriven == []
    assert "waits in the inbox" in again.refused[0].reason
    # "all" takes only those not redriven yet.
    every = await store.redrive_dead_letters(BOT, DeadLetterSelection(all=True), T0 + 2)
    assert (every.redriven, every.refused) == ([], [])

    # Handled again: refused for good.
    await store.inbox_done(BOT, [1], T0 + 3)
    handled = await store.redrive_dead_letters(BOT, DeadLetterSelection(ids=(first.id,)), T0 + 4)
    assert handled.redriven == []
    assert handled.refused[0].reason == "already redriven at 2023-11-14T22:13:21Z and handled again"
    assert await undone(store) == {}


async def test_an_update_that_dead_letters_again_can_be_redriven_again(store: Store) -> None:
    update = payloads.forum_topic_message(3)
    await dead(store, update, "handler raised", T0, "-1001234567890")
    await store.redrive_dead_letters(BOT, DeadLetterSelection(all=True), T0 + 1)
    # Handled again and dead-lettered again: a second dead letter of the same update.
    await store.dead_letter(
        BOT, 3, -1001234567890, "handler raised again", T0 + 2, update=update, lane="-1001234567890"
    )
    await store.inbox_done(BOT, [3], T0 + 2)
    old, new = sorted(d.id for d in (await store.dead_letters_page(BOT)).dead_letters)
    refused = await store.redrive_dead_letters(BOT, DeadLetterSelection(ids=(old,)), T0 + 3)
    assert refused.refused[0].reason.endswith(f"redrive dead letter {new} instead")
    result = await store.redrive_dead_letters(BOT, DeadLetterSelection(ids=(new,)), T0 + 3)
    assert [d.id for d in result.redriven] == [new]
    assert await undone(store) == {3: T0 + 3}


async def test_refusals_name_what_was_wrong(store: Store) -> None:
    await dead(store, payloads.message(1, chat_id=111), "handler raised", T0, "111")
    # A second, older-style duplicate dead letter of update 1.
    await store.dead_letter(
        BOT, 1, 111, "handler raised", T0 + 1, update=payloads.message(1, chat_id=111), lane="111"
    )
    # Update 2 dead-lettered, but its done mark is not stored yet: it is undone.
    update2 = payloads.message(2, chat_id=111)
    await store.inbox_add(BOT, [InboxEntry(update2, 111, "111")], 3, T0)
    await store.dead_letter(BOT, 2, 111, "handler raised", T0 + 2, update=update2, lane="111")
    result = await store.redrive_dead_letters(BOT, DeadLetterSelection(ids=(1, 2, 3, 99)), T0 + 5)
    assert [d.id for d in result.redriven] == [1]
    assert [(r.id, r.update_id, r.reason) for r in result.refused] == [
        (2, 1, "update 1 is redriven by dead letter 1 in this request"),
        (3, 2, "update 2 waits in the inbox to be handled already"),
        (99, None, f"bot {BOT} has no dead letter 99"),
    ]
    # Another bot's dead letter is not this bot's.
    other = await store.redrive_dead_letters(2002, DeadLetterSelection(ids=(1,)), T0 + 5)
    assert other.redriven == [] and other.refused[0].reason == "bot 2002 has no dead letter 1"


async def test_redrive_by_reason_takes_only_matching_ones(store: Store) -> None:
    await dead(store, payloads.message(1, chat_id=111), "delivery deadline passed", T0, "111")
    await dead(store, payloads.message(2, chat_id=111), "handler raised KeyError", T0 + 1, "111")
    result = await store.redrive_dead_letters(
        BOT, DeadLetterSelection(reason_contains="KEYERROR"), T0 + 5
    )
    assert [d.update_id for d in result.redriven] == [2]
    assert set(await undone(store)) == {2}


# --- discard -----------------------------------------------------------------------------------


async def test_discard_deletes_the_selected_rows_only(store: Store) -> None:
    await dead(store, payloads.message(1, chat_id=111), "delivery deadline passed", T0, "111")
    await dead(store, payloads.message(2, chat_id=111), "handler raised", T0 + 1, "111")
    await dead(store, payloads.message(3, chat_id=111), "handler raised", T0 + 2, "111")
    await store.dead_letter(2002, 1, 5, "handler raised", T0)
    assert await store.discard_dead_letters(BOT, DeadLetterSelection(ids=(1, 99))) == 1
    assert await store.discard_dead_letters(BOT, DeadLetterSelection(reason_contains="x")) == 0
    handler = DeadLetterSelection(reason_contains="handler")
    assert await store.discard_dead_letters(BOT, handler) == 2
    assert (await store.dead_letters_page(BOT)).total == 0
    assert (await store.dead_letters_page(2002)).total == 1
    # The inbox is untouched: nothing became undone.
    assert await undone(store) == {}


def test_a_selection_takes_exactly_one_key() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DeadLetterSelection()
    with pytest.raises(ValueError, match="exactly one"):
        DeadLetterSelection(ids=(1,), all=True)


def test_a_bots_page_of_dead_letters_reads_its_index_in_order(db_path: Path) -> None:
    db = open_database(db_path)
    try:
        migrate(db)
        plan = " ".join(
            str(row[3])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM dead_letters WHERE user_id = 1 AND id < 99 "
                "ORDER BY id DESC LIMIT 51"
            )
        )
    finally:
        db.close()
    assert "idx_dead_user_id" in plan and "TEMP B-TREE" not in plan, plan
