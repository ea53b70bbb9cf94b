"""Dead letters an operator can act on: stored with their update, listed, redriven, discarded.

A dead letter (the ``dead_letters`` table) is an update botvisor gave up on, with its reason
and, from schema 8 on, the update itself as received and the lane it belongs to (the inbox
row is pruned once done, so the dead letter carries its own copy). A *redrive* puts the update
back into the bot's inbox as undone, received now (so its delivery deadline starts over), in
the transaction that stamps the dead letter ``redriven_at``; the actors then hand it to its
chat's lane. The rules, checked in that transaction:

- a dead letter stored without its update (before schema 8) cannot be redriven;
- a dead letter redriven once is not redriven again: its update was handled again, or is
  waiting to be, or dead-lettered again (that newer dead letter can be redriven);
- an update still undone in the inbox is not redriven (it is about to be handled), and one
  request redrives each update at most once (an old duplicate dead letter is refused).

A redrive by ``reason_contains`` or ``all`` takes only the dead letters not redriven yet; by
``ids`` it takes exactly those, and refuses an id the bot does not have. A discard deletes
whatever it selects, redriven or not.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from storage.usage import iso_utc

__all__ = [
    "DeadLetter",
    "DeadLetterPage",
    "DeadLetterSelection",
    "Redrive",
    "Refusal",
]

_COLUMNS = "id, user_id, update_id, chat_id, reason, recorded_at, payload, lane, redriven_at"


@dataclass(frozen=True)
class DeadLetter:
    """An update botvisor gave up on (a ``dead_letters`` row)."""

    user_id: int
    update_id: int
    chat_id: int | None
    reason: str
    recorded_at: float
    id: int = 0
    payload: Mapping[str, Any] | None = None  # the update as received; None before schema 8
    lane: str | None = None  # the lane name the inbox stores for it
    redriven_at: float | None = None


@dataclass(frozen=True)
class DeadLetterSelection:
    """Which of a bot's dead letters an action takes: exactly one of the three."""

    ids: tuple[int, ...] | None = None
    reason_contains: str | None = None
    all: bool = False

    def __post_init__(self) -> None:
        chosen = (self.ids is not None) + (self.reason_contains is not None) + self.all
        if chosen != 1:
            raise ValueError("a selection takes exactly one of ids, reason_contains and all")


@dataclass(frozen=True)
class Refusal:
    """A dead letter a redrive left alone, and why."""

    id: int
    update_id: int | None  # None for an id the bot does not have
    reason: str


@dataclass(frozen=True)
class Redrive:
    """What a redrive did: the dead letters whose updates are undone again (in
    ``update_id`` order, the order to hand them on in) and those it refused."""

    redriven: list[DeadLetter]
    refused: list[Refusal]


@dataclass(frozen=True)
class DeadLetterPage:
    """A page of one bot's dead letters, newest first."""

    dead_letters: list[DeadLetter]
    next_cursor: int | None  # the id to pass as ``before`` for the next page
    total: int  # every dead letter of the bot matching the filter


def encode_payload(update: Mapping[str, Any] | None) -> str | None:
    """The update's JSON as the inbox stores it."""
    if update is None:
        return None
    return json.dumps(update, ensure_ascii=False, separators=(",", ":"))


def _letter(row: Sequence[Any]) -> DeadLetter:
    id_, user_id, update_id, chat_id, reason, recorded_at, payload, lane, redriven_at = row
    return DeadLetter(
        user_id=user_id,
        update_id=update_id,
        chat_id=chat_id,
        reason=reason,
        recorded_at=recorded_at,
        id=id_,
        payload=None if payload is None else json.loads(payload),
        lane=lane,
        redriven_at=redriven_at,
    )


def _reason_clause(reason: str | None) -> tuple[str, list[Any]]:
    # A case-insensitive substring (instr, not LIKE: no wildcard to escape in the operator's
    # text).
    if reason is None:
        return "", []
    return " AND instr(lower(reason), lower(?)) > 0", [reason]


def _selected(
    user_id: int, selection: DeadLetterSelection, conn: sqlite3.Connection
) -> list[DeadLetter]:
    if selection.ids is not None:
        marks = ", ".join("?" for _ in selection.ids)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE user_id = ? AND id IN ({marks})",
            (user_id, *selection.ids),
        ).fetchall()
    else:
        clause, params = _reason_clause(selection.reason_contains)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE user_id = ? AND redriven_at IS NULL"
            f"{clause}",
            (user_id, *params),
        ).fetchall()
    return [_letter(row) for row in rows]


def insert_dead_letter(
    user_id: int,
    update_id: int,
    chat_id: int | None,
    reason: str,
    at: float,
    payload: str | None,
    lane: str | None,
    conn: sqlite3.Connection,
) -> None:
    conn.execute(
        "INSERT INTO dead_letters (user_id, update_id, chat_id, reason, recorded_at, payload, "
        "lane) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (user_id, update_id, chat_id, reason, at, payload, lane),
    )


def _inbox_undone(user_id: int, update_id: int, conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM inbox WHERE user_id = ? AND update_id = ? AND done_at IS NULL",
        (user_id, update_id),
    ).fetchone()
    return row is not None


def _why_redriven(letter: DeadLetter, conn: sqlite3.Connection) -> str:
    assert letter.redriven_at is not None
    when = f"redriven at {iso_utc(letter.redriven_at)}"
    newer = conn.execute(
        "SELECT id FROM dead_letters WHERE user_id = ? AND update_id = ? AND id > ? "
        "ORDER BY id DESC LIMIT 1",
        (letter.user_id, letter.update_id, letter.id),
    ).fetchone()
    if newer is not None:
        return f"already {when} and dead-lettered again: redrive dead letter {newer[0]} instead"
    if _inbox_undone(letter.user_id, letter.update_id, conn):
        return f"already {when}; it waits in the inbox to be handled"
    return f"already {when} and handled again"


def redrive(
    user_id: int, selection: DeadLetterSelection, at: float, conn: sqlite3.Connection
) -> Redrive:
    """The writer job of :meth:`Store.redrive_dead_letters` (one transaction)."""
    letters = sorted(_selected(user_id, selection, conn), key=lambda d: (d.update_id, d.id))
    refused: list[Refusal] = []
    if selection.ids is not None:
        found = {letter.id for letter in letters}
        refused += [
            Refusal(id_, None, f"bot {user_id} has no dead letter {id_}")
            for id_ in dict.fromkeys(selection.ids)
            if id_ not in found
        ]
    redriven: list[DeadLetter] = []
    taken: dict[int, int] = {}  # update_id -> the dead letter redriving it in this request
    for letter in letters:
        reason: str | None = None
        if letter.payload is None:
            reason = (
                "stored without its update (before botvisor kept payloads): it cannot be "
                "redriven; discard it"
            )
        elif letter.redriven_at is not None:
            reason = _why_redriven(letter, conn)
        elif letter.update_id in taken:
            reason = (
                f"update {letter.update_id} is redriven by dead letter "
                f"{taken[letter.update_id]} in this request"
            )
        elif _inbox_undone(user_id, letter.update_id, conn):
            reason = f"update {letter.update_id} waits in the inbox to be handled already"
        if reason is not None:
            refused.append(Refusal(letter.id, letter.update_id, reason))
            continue
        taken[letter.update_id] = letter.id
        # Undone again and received now: its delivery deadline starts over (its old one has
        # passed, or it would be dead-lettered again at once).
        changed = conn.execute(
            "UPDATE inbox SET done_at = NULL, received_at = ?, lane = ? "
            "WHERE user_id = ? AND update_id = ?",
            (at, letter.lane, user_id, letter.update_id),
        ).rowcount
        if not changed:
            # The inbox row was pruned (done, below the offset): the dead letter's copy.
            # Not through the inbox's insert: this update was counted when it first came.
            conn.execute(
                "INSERT INTO inbox (user_id, update_id, chat_id, lane, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    letter.update_id,
                    letter.chat_id,
                    letter.lane,
                    encode_payload(letter.payload),
                    at,
                ),
            )
        conn.execute("UPDATE dead_letters SET redriven_at = ? WHERE id = ?", (at, letter.id))
        redriven.append(
            DeadLetter(
                user_id=user_id,
                update_id=letter.update_id,
                chat_id=letter.chat_id,
                reason=letter.reason,
                recorded_at=letter.recorded_at,
                id=letter.id,
                payload=letter.payload,
                lane=letter.lane,
                redriven_at=at,
            )
        )
    refused.sort(key=lambda r: r.id)
    return Redrive(redriven, refused)


def discard(user_id: int, selection: DeadLetterSelection, conn: sqlite3.Connection) -> int:
    """The writer job of :meth:`Store.discard_dead_letters`: delete the selected rows."""
    if selection.ids is not None:
        marks = ", ".join("?" for _ in selection.ids)
        return conn.execute(
            f"DELETE FROM dead_letters WHERE user_id = ? AND id IN ({marks})",
            (user_id, *selection.ids),
        ).rowcount
    clause, params = _reason_clause(selection.reason_contains)
    return conn.execute(
        f"DELETE FROM dead_letters WHERE user_id = ?{clause}",
        (user_id, *params),
    ).rowcount


def page(
    user_id: int,
    limit: int,
    before: int | None,
    reason: str | None,
    db: sqlite_utils.Database,
) -> DeadLetterPage:
    """A page of the bot's dead letters, newest (highest id) first."""
    clause, params = _reason_clause(reason)
    total = db.execute(
        f"SELECT count(*) FROM dead_letters WHERE user_id = ?{clause}", (user_id, *params)
    ).fetchone()[0]
    cursor_clause = "" if before is None else " AND id < ?"
    cursor_params = [] if before is None else [before]
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM dead_letters WHERE user_id = ?{clause}{cursor_clause} "
        "ORDER BY id DESC LIMIT ?",
        (user_id, *params, *cursor_params, limit + 1),
    ).fetchall()
    letters = [_letter(row) for row in rows[:limit]]
    more = len(rows) > limit
    return DeadLetterPage(letters, letters[-1].id if more else None, int(total))


def recent(user_id: int | None, limit: int, db: sqlite_utils.Database) -> list[DeadLetter]:
    """The most recent dead letters (of one bot, or of all), newest first."""
    where, params = ("", []) if user_id is None else ("WHERE user_id = ? ", [user_id])
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM dead_letters {where}ORDER BY recorded_at DESC, id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_letter(row) for row in rows]
