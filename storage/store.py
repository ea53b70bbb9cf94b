"""``Store``: the daemon's one door to SQLite — typed writes through the writer, fast reads.

Writes are jobs for the :class:`~storage.writer.StoreWriter` (one transaction per batch of
jobs; each ``async`` write returns once its transaction committed). Reads run on separate
read-only connections in worker threads, so an admin query never waits for a write and never
blocks the event loop; they see every write whose method has returned.

Timestamps are wall-clock epoch seconds passed in by the caller (the daemon's injected clock):
storage never reads a clock. Retention deletes rows strictly older than the cutoff; a row
recorded exactly at the cutoff is kept.
"""

from __future__ import annotations

import json
import operator
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import sqlite_utils
import trio

from storage.db import open_database
from storage.dead_letters import (
    DeadLetter,
    DeadLetterPage,
    DeadLetterSelection,
    Redrive,
    encode_payload,
    insert_dead_letter,
)
from storage.dead_letters import discard as _discard_dead_letters
from storage.dead_letters import page as _dead_letters_page
from storage.dead_letters import recent as _recent_dead_letters
from storage.dead_letters import redrive as _redrive_dead_letters
from storage.errors import DatabaseFailedError, StoreClosedError
from storage.rows import (
    COUNTER_COLUMNS,
    HEALTH_COLUMNS,
    BotCounters,
    HealthRow,
    InboxEntry,
    WebhookRegistration,
)
from storage.usage import UsageRow, add_counts, add_members, delete_older, read_top, read_usage
from storage.writer import Offload, StoreWriter, WriterState, WriterStatistics

__all__ = [
    "BOT_SOURCES",
    "UNHEALTHY_STATUSES",
    "BotRecord",
    "DeadLetter",
    "Store",
    "StoreStatistics",
]

T = TypeVar("T")

BOT_SOURCES = frozenset({"config", "api"})
# What "unhealthy history" shows: bots that were failing or taken out of service. DEGRADED is a
# warning, not an outage, and would drown the outages in a 168-hour window.
UNHEALTHY_STATUSES: tuple[str, ...] = ("unhealthy", "suspended")

_HEALTH_SELECT = ", ".join(HEALTH_COLUMNS)
_INSERT_HEALTH = (
    f"INSERT INTO bot_health_metrics ({_HEALTH_SELECT}) "
    f"VALUES ({', '.join('?' for _ in HEALTH_COLUMNS)})"
)
_health_values = operator.attrgetter(*HEALTH_COLUMNS)
_COUNTER_SELECT = ", ".join(COUNTER_COLUMNS)
_UPSERT_COUNTERS = (
    f"INSERT INTO bot_counters ({_COUNTER_SELECT}) "
    f"VALUES ({', '.join('?' for _ in COUNTER_COLUMNS)}) ON CONFLICT (user_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COUNTER_COLUMNS[1:])
)
_counter_values = operator.attrgetter(*COUNTER_COLUMNS)
_BOT_COLUMNS = "user_id, token, handler, settings, source, suspended_reason, created_at, updated_at"


@dataclass(frozen=True, repr=False)
class BotRecord:
    """A tenant bot in the registry (the ``bots`` table). Its repr never shows the token."""

    user_id: int
    token: str  # the secret
    handler: str  # "echo", "autoreply" or "module:function"
    settings: dict[str, Any]  # JSON object: autoreply rules, rps...
    source: str  # "config" or "api"
    suspended_reason: str | None
    created_at: float
    updated_at: float

    def __post_init__(self) -> None:
        if self.source not in BOT_SOURCES:
            raise ValueError(f"BotRecord.source must be 'config' or 'api', got {self.source!r}")

    def __repr__(self) -> str:
        return (
            f"BotRecord(user_id={self.user_id!r}, token={_public_token(self.token)!r}, "
            f"handler={self.handler!r}, settings={self.settings!r}, source={self.source!r}, "
            f"suspended_reason={self.suspended_reason!r}, created_at={self.created_at!r}, "
            f"updated_at={self.updated_at!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class StoreStatistics:
    """The writer's counters plus the read side's."""

    writer: WriterStatistics
    readers: int  # read connections open
    reads: int  # read queries run


def _public_token(token: str) -> str:
    head = token.split(":", 1)[0]
    return f"{head}:…" if head.isdigit() else "…"


class Store:
    """Typed operations on the botvisor database; ``run`` it with ``nursery.start``.

    ``await nursery.start(store.run)`` opens and migrates the file, opens the read
    connections, and returns the store; ``await store.stop()`` commits every queued write and
    closes everything.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readers: int = 2,
        max_batch: int = 5_000,
        queue_size: int = 20_000,
        offload: Offload = trio.to_thread.run_sync,
    ) -> None:
        if readers < 1:
            raise ValueError(f"readers must be >= 1, got {readers}")
        self.path = os.fspath(path)
        self.writer = StoreWriter(path, max_batch=max_batch, queue_size=queue_size, offload=offload)
        self._offload = offload
        self._reader_count = readers
        self._pool_send, self._pool_receive = trio.open_memory_channel[sqlite_utils.Database](
            readers
        )
        self._readers_open = 0
        # stop() and the end of run() may both close the readers.
        self._closing = trio.Lock()
        self._reading = False
        self._reads = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Store] = trio.TASK_STATUS_IGNORED) -> None:
        """Open and migrate the file, open the readers, ``started(self)``, serve until stopped."""
        try:
            await self.writer.open()
            # Readers open after the migration: they need the schema it creates.
            for _ in range(self._reader_count):
                try:
                    db = await self._offload(partial(open_database, self.path, readonly=True))
                except sqlite3.DatabaseError as exc:
                    raise DatabaseFailedError(self.path, "opening a reader", exc) from None
                self._readers_open += 1
                self._pool_send.send_nowait(db)
            self._reading = True
            task_status.started(self)
            await self.writer.serve()
        finally:
            await self._close_readers()
            with trio.CancelScope(shield=True):
                await self.writer.stop()

    async def stop(self) -> None:
        """Refuse new reads and writes, commit every queued write, close the file. Idempotent."""
        await self._close_readers()
        await self.writer.stop()

    async def check_writable(self, within: float = 5.0) -> tuple[bool, str]:
        """Readiness: ``(True, "ok")`` if a write transaction commits within ``within``
        seconds, else ``(False, why)``."""
        state = self.writer.state
        if state is not WriterState.RUNNING:
            return False, f"the store writer is {state.value}"
        if (failing := self.writer.failing) is not None:
            return False, f"the last write failed: {failing}"
        with trio.move_on_after(within):
            try:
                await self.writer.submit(_take_write_lock)
            except Exception as exc:
                return False, f"a write transaction failed: {type(exc).__name__}: {exc}"
            return True, "ok"
        return False, f"a write transaction did not commit within {within:g} s"

    async def flush(self) -> None:
        """Return once every write queued before the call, fire-and-forget ones included,
        has been committed (or failed on its own): reads after it see them."""
        await self.writer.submit(_take_write_lock)

    def statistics(self) -> StoreStatistics:
        """Counters for the admin API and tests."""
        return StoreStatistics(self.writer.statistics(), self._readers_open, self._reads)

    # --- health snapshots ----------------------------------------------------------------

    async def insert_snapshots(
        self, rows: Sequence[HealthRow], counters: Sequence[BotCounters] = ()
    ) -> int:
        """Append health rows (one ``executemany``) and replace each bot's ``counters`` in the
        same transaction; return the health rows written."""
        if not rows and not counters:
            return 0
        return await self.writer.submit(partial(_insert_snapshots, list(rows), list(counters)))

    async def latest_snapshots(self) -> dict[int, HealthRow]:
        """The most recent row of every bot that has one (removed bots included)."""
        return await self._read(_latest_snapshots)

    async def latest_counters(self) -> dict[int, BotCounters]:
        """The stored delivery counters of every bot that has them (removed bots included)."""
        return await self._read(_latest_counters)

    async def history(
        self, user_id: int, since: float, *, limit: int | None = None
    ) -> list[HealthRow]:
        """One bot's rows recorded at or after ``since``, oldest first (only the newest
        ``limit`` of them if given)."""
        _check_limit(limit)
        return await self._read(partial(_history, user_id, since, limit))

    async def unhealthy_history(
        self,
        since: float,
        statuses: Collection[str] = UNHEALTHY_STATUSES,
        *,
        limit: int | None = None,
    ) -> list[HealthRow]:
        """Rows at or after ``since`` whose status is in ``statuses`` (by default unhealthy or
        suspended; degraded is left out), oldest first (only the newest ``limit`` if given:
        a week of a large fleet's outages is hundreds of thousands of rows)."""
        _check_limit(limit)
        return await self._read(partial(_unhealthy_history, since, tuple(statuses), limit))

    async def snapshot_count(self, user_id: int | None = None) -> int:
        """Health rows stored, of one bot or of all."""
        return await self._read(partial(_snapshot_count, user_id))

    async def delete_older_than(self, cutoff: float, batch_size: int = 5_000) -> int:
        """Retention: delete health rows and dead letters recorded before ``cutoff`` (a row at
        exactly ``cutoff`` is kept), ``batch_size`` rows per short transaction; return rows
        deleted."""
        _check_batch_size(batch_size)
        deleted = 0
        for table in ("bot_health_metrics", "dead_letters"):
            while True:
                count = await self.writer.submit(
                    partial(_delete_older_batch, table, cutoff, batch_size)
                )
                deleted += count
                if count < batch_size:
                    break
        return deleted

    # --- bots registry -------------------------------------------------------------------

    async def upsert_bot(self, record: BotRecord) -> BotRecord:
        """Insert or update a bot; return it as stored.

        An existing bot keeps its ``created_at`` and its ``suspended_reason`` (suspension is
        changed only by :meth:`set_suspended`, so a restart does not silently resume a bot whose
        token was revoked); everything else, ``updated_at`` included, comes from ``record``.
        """
        return await self.writer.submit(partial(_upsert_bot, record))

    async def remove_bot(self, user_id: int) -> bool:
        """Remove a bot with its offset and inbox; keep its health history and dead letters.
        Return whether it was registered."""
        return await self.writer.submit(partial(_remove_bot, user_id))

    async def set_suspended(
        self, user_id: int, reason: str | None, *, at: float | None = None
    ) -> bool:
        """Suspend a bot (``reason``) or resume it (``None``); ``at`` becomes its
        ``updated_at`` when given. Return whether the bot is registered."""
        return await self.writer.submit(partial(_set_suspended, user_id, reason, at))

    def set_suspended_nowait(
        self, user_id: int, reason: str | None, *, at: float | None = None
    ) -> None:
        """:meth:`set_suspended` without waiting for the commit (for synchronous callers).
        Raises ``trio.WouldBlock`` if the write queue is full."""
        self.writer.submit_nowait(partial(_set_suspended, user_id, reason, at))

    async def list_bots(self) -> list[BotRecord]:
        """Every registered bot, by ``user_id``."""
        return await self._read(_list_bots)

    async def get_bot(self, user_id: int) -> BotRecord | None:
        """One registered bot, or ``None``."""
        return await self._read(partial(_get_bot, user_id))

    # --- inbox and offsets ---------------------------------------------------------------

    async def inbox_add(
        self,
        user_id: int,
        entries: Sequence[InboxEntry],
        next_offset: int | None,
        received_at: float,
        *,
        wait_for_room: bool = True,
    ) -> list[int]:
        """Store fetched updates and the bot's next ``getUpdates`` offset in one transaction
        (``next_offset`` None: pushed by a webhook, there is no offset to keep).
        ``wait_for_room=False`` raises ``trio.WouldBlock`` instead of waiting when the write
        queue is full (nothing stored).

        Return the ``update_id`` of every update that was NEW, in the given order; an update
        already in the inbox (done or not) is a duplicate and is left out.
        """
        ids = [_update_id(entry.update) for entry in entries]
        return await self.writer.submit(
            partial(_inbox_add, user_id, ids, list(entries), next_offset, received_at),
            wait_for_room=wait_for_room,
        )

    async def inbox_done(
        self,
        user_id: int,
        update_ids: Iterable[int],
        done_at: float,
        usage: Mapping[str, int] | None = None,
    ) -> int:
        """Mark updates handled and add ``usage`` (metric -> count, see :mod:`storage.usage`)
        to the bot's usage at ``done_at`` in the same transaction; return how many were undone
        before."""
        return await self.writer.submit(
            partial(_inbox_done, user_id, list(update_ids), done_at, dict(usage or {}))
        )

    def inbox_done_nowait(
        self,
        user_id: int,
        update_ids: Iterable[int],
        done_at: float,
        usage: Mapping[str, int] | None = None,
    ) -> None:
        """:meth:`inbox_done` without waiting for the commit (a lost mark only means the update
        is handled again after a crash, and its usage counted when it is). Raises
        ``trio.WouldBlock`` if the write queue is full."""
        self.writer.submit_nowait(
            partial(_inbox_done, user_id, list(update_ids), done_at, dict(usage or {}))
        )

    # --- usage analytics -----------------------------------------------------------------

    async def usage_add(self, user_id: int, counts: Mapping[str, int], at: float) -> None:
        """Add ``counts`` (metric -> count) to the bot's hour, day and month holding ``at``."""
        if counts:
            await self.writer.submit(partial(_usage_add, user_id, dict(counts), at))

    def usage_add_nowait(self, user_id: int, counts: Mapping[str, int], at: float) -> None:
        """:meth:`usage_add` without waiting for the commit. Raises ``trio.WouldBlock`` if the
        write queue is full."""
        if counts:
            self.writer.submit_nowait(partial(_usage_add, user_id, dict(counts), at))

    def usage_add_many_nowait(
        self, counts: Sequence[tuple[int, Mapping[str, int]]], at: float
    ) -> None:
        """:meth:`usage_add_nowait` for many bots (``(user_id, counts)`` pairs) in one job: the
        fleet's periodic flush. Raises ``trio.WouldBlock`` if the write queue is full."""
        items = [(user_id, dict(bot_counts)) for user_id, bot_counts in counts if bot_counts]
        if items:
            self.writer.submit_nowait(partial(_usage_add_many, items, at))

    async def usage(
        self,
        grain: str,
        start: float,
        end: float,
        *,
        user_id: int | None = None,
        per_bot: bool = False,
    ) -> list[UsageRow]:
        """Usage buckets of ``grain`` starting in ``[start, end)``, oldest first: of one bot,
        of every bot (``per_bot``) or of the fleet summed."""
        return await self._read(
            partial(read_usage, grain=grain, start=start, end=end, user_id=user_id, per_bot=per_bot)
        )

    async def usage_top(self, metric: str, since: float, limit: int) -> list[tuple[int, int]]:
        """The busiest bots by ``metric`` (updates, sends, users) in the hours since
        ``since``: ``(user_id, value)``, largest first."""
        _check_limit(limit)
        return await self._read(partial(read_top, metric=metric, since=since, limit=limit))

    async def usage_delete_older(
        self, hour_cutoff: float, rollup_cutoff: float, batch_size: int = 5_000
    ) -> int:
        """Retention of usage: delete hour rows whose hour started before ``hour_cutoff`` and
        day and month rows that started before ``rollup_cutoff``; return rows deleted."""
        _check_batch_size(batch_size)
        deleted = 0
        while True:
            count = await self.writer.submit(
                partial(_usage_delete_batch, hour_cutoff, rollup_cutoff, batch_size)
            )
            deleted += count
            if count < batch_size:
                return deleted

    async def upsert_bots(self, records: Sequence[BotRecord]) -> None:
        """:meth:`upsert_bot` for many bots in one transaction (the daemon's start-up)."""
        await self.writer.submit(partial(_upsert_bots, list(records)))

    async def load_offsets(self) -> dict[int, int]:
        """Every bot's stored next ``getUpdates`` offset, in one query (start-up)."""
        return await self._read(_load_offsets)

    async def inbox_pending_all(self) -> dict[int, list[dict[str, Any]]]:
        """:meth:`inbox_pending` of every bot that has undone updates, in one query."""
        return await self._read(_inbox_pending_all)

    async def inbox_pending(self, user_id: int) -> list[dict[str, Any]]:
        """The bot's undone updates by ``update_id``: dicts with keys ``update_id``,
        ``chat_id``, ``update`` (the update as Telegram sent it) and ``received_at``."""
        return await self._read(partial(_inbox_pending, user_id))

    async def inbox_name_lanes(self, user_id: int, lanes: Iterable[tuple[int, str]]) -> int:
        """Record the lane of undone updates, ``(update_id, lane)`` pairs (at a start, so rows
        stored by an earlier version, or under an earlier rule, are found by their lane's
        re-read); return how many rows changed."""
        pairs = list(lanes)
        if not pairs:
            return 0
        return await self.writer.submit(partial(_inbox_name_lanes, user_id, pairs))

    async def inbox_lane_undone(
        self, user_id: int, lane: str, after_update_id: int, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` of the bot's undone updates of ``lane`` (or stored without a lane)
        whose ``update_id`` is above ``after_update_id``, by ``update_id``: the dicts of
        :meth:`inbox_pending` plus ``lane``. Fewer than ``limit`` means there are no more."""
        _check_limit(limit)
        return await self._read(partial(_inbox_lane_undone, user_id, lane, after_update_id, limit))

    async def load_offset(self, user_id: int) -> int | None:
        """The bot's stored next ``getUpdates`` offset, or ``None`` if it never stored one."""
        return await self._read(partial(_load_offset, user_id))

    async def prune_inbox(self, batch_size: int = 5_000) -> int:
        """Delete done updates below their bot's stored offset (Telegram will never send them
        again, so they are no longer needed for deduplication); return rows deleted."""
        _check_batch_size(batch_size)
        deleted = 0
        while True:
            count = await self.writer.submit(partial(_prune_inbox_batch, batch_size))
            deleted += count
            if count < batch_size:
                return deleted

    async def prune_inbox_received_before(self, cutoff: float, batch_size: int = 5_000) -> int:
        """Delete done updates received before ``cutoff`` (wall clock), whatever their bot's
        offset; return rows deleted. For webhook bots, which have no offset: Telegram gives up
        on an update about 24 h after it was made, so one received long before cannot be
        delivered again and needs no row to be deduplicated. Undone updates are never deleted
        here."""
        _check_batch_size(batch_size)
        deleted = 0
        while True:
            count = await self.writer.submit(
                partial(_prune_inbox_received_before, cutoff, batch_size)
            )
            deleted += count
            if count < batch_size:
                return deleted

    # --- chat migrations -----------------------------------------------------------------

    async def record_chat_migration(
        self, user_id: int, old_chat_id: int, new_chat_id: int, at: float
    ) -> None:
        """Remember that the bot's chat ``old_chat_id`` is now ``new_chat_id`` (a group
        upgraded to a supergroup); a later record of the same old chat replaces it."""
        await self.writer.submit(
            partial(_record_chat_migration, user_id, old_chat_id, new_chat_id, at)
        )

    async def load_chat_migrations(self) -> dict[int, dict[int, int]]:
        """Every bot's chat migrations (user_id -> old chat -> new chat), in one query
        (start-up)."""
        return await self._read(_load_chat_migrations)

    async def load_bot_chat_migrations(self, user_id: int) -> dict[int, int]:
        """One bot's chat migrations (old chat -> new chat)."""
        return await self._read(partial(_load_bot_chat_migrations, user_id))

    # --- webhook registrations -----------------------------------------------------------

    async def load_webhook_registrations(self) -> dict[int, WebhookRegistration]:
        """Every bot's stored webhook registration, in one query (start-up)."""
        return await self._read(_load_webhook_registrations)

    async def upsert_webhook_registration(self, registration: WebhookRegistration) -> None:
        """Store what ``setWebhook`` accepted for the bot (replacing an earlier one)."""
        await self.writer.submit(partial(_upsert_webhook_registration, registration))

    async def delete_webhook_registration(self, user_id: int) -> bool:
        """Forget the bot's registration (after ``deleteWebhook``); return whether there was
        one."""
        return await self.writer.submit(partial(_delete_webhook_registration, user_id))

    # --- dead letters --------------------------------------------------------------------

    async def dead_letter(
        self,
        user_id: int,
        update_id: int,
        chat_id: int | None,
        reason: str,
        at: float,
        *,
        update: Mapping[str, Any] | None = None,
        lane: str | None = None,
    ) -> None:
        """Record an update botvisor gave up on (``reason`` must be redacted), with the
        update as received and its lane name, so that it can be redriven. It does not mark
        the update done: that is :meth:`inbox_done`."""
        await self.writer.submit(
            partial(
                insert_dead_letter,
                user_id,
                update_id,
                chat_id,
                reason,
                at,
                encode_payload(update),
                lane,
            )
        )

    async def list_dead_letters(
        self, user_id: int | None = None, *, limit: int = 100
    ) -> list[DeadLetter]:
        """The most recent dead letters (of one bot, or of all), newest first."""
        _check_limit(limit)
        return await self._read(partial(_recent_dead_letters, user_id, limit))

    async def dead_letters_page(
        self,
        user_id: int,
        *,
        limit: int = 50,
        before: int | None = None,
        reason: str | None = None,
    ) -> DeadLetterPage:
        """A page of one bot's dead letters, newest first: those with an id below ``before``
        (the previous page's ``next_cursor``), whose reason contains ``reason`` (any case)."""
        _check_limit(limit)
        return await self._read(partial(_dead_letters_page, user_id, limit, before, reason))

    async def redrive_dead_letters(
        self, user_id: int, selection: DeadLetterSelection, at: float
    ) -> Redrive:
        """Put the selected dead letters' updates back into the bot's inbox as undone,
        received at ``at``, in one transaction; see :mod:`storage.dead_letters` for what is
        refused. The caller hands the redriven updates to the bot."""
        return await self.writer.submit(partial(_redrive_dead_letters, user_id, selection, at))

    async def discard_dead_letters(self, user_id: int, selection: DeadLetterSelection) -> int:
        """Delete the selected dead letters; return how many were deleted."""
        return await self.writer.submit(partial(_discard_dead_letters, user_id, selection))

    async def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: ``["ok"]`` for a sound file."""
        return await self._read(_integrity_check)

    # --- internals -----------------------------------------------------------------------

    async def _read(self, query: Callable[[sqlite_utils.Database], T]) -> T:
        if not self._reading:
            raise StoreClosedError(
                f"the store of {self.path} is not open for reads: start it with "
                "nursery.start(store.run) and do not read after stop()"
            )
        db = await self._pool_receive.receive()
        try:
            self._reads += 1
            result: T = await self._offload(query, db)
            return result
        except sqlite3.DatabaseError as exc:
            # The file itself failed (a corrupt page, an I/O error): one line that names it.
            raise DatabaseFailedError(self.path, "reading", exc) from None
        finally:
            self._pool_send.send_nowait(db)

    async def _close_readers(self) -> None:
        self._reading = False
        # Shielded: a read still running gives its connection back soon, and every
        # connection must be closed.
        with trio.CancelScope(shield=True):
            async with self._closing:
                while self._readers_open:
                    db = await self._pool_receive.receive()
                    await self._offload(db.close)
                    self._readers_open -= 1


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _update_id(update: Mapping[str, Any]) -> int:
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise ValueError(f"every update must have an integer update_id, got {update_id!r}")
    return update_id


def _health_row(row: Sequence[Any]) -> HealthRow:
    return HealthRow(*row)


# --- jobs, run by the writer in its thread ---------------------------------------------------


def _take_write_lock(conn: sqlite3.Connection) -> None:
    # The writer's BEGIN IMMEDIATE already took the lock; proving the commit works is enough.
    return None


def _insert_snapshots(
    rows: list[HealthRow], counters: list[BotCounters], conn: sqlite3.Connection
) -> int:
    if counters:
        conn.executemany(_UPSERT_COUNTERS, map(_counter_values, counters))
    if not rows:
        return 0
    return conn.executemany(_INSERT_HEALTH, map(_health_values, rows)).rowcount


def _delete_older_batch(
    table: str, cutoff: float, batch_size: int, conn: sqlite3.Connection
) -> int:
    # The subquery walks the recorded_at index, so each batch touches only what it deletes.
    return conn.execute(
        f"DELETE FROM {table} WHERE id IN "
        f"(SELECT id FROM {table} WHERE recorded_at < ? ORDER BY recorded_at LIMIT ?)",
        (cutoff, batch_size),
    ).rowcount


def _upsert_bot(record: BotRecord, conn: sqlite3.Connection) -> BotRecord:
    row = conn.execute(
        f"INSERT INTO bots ({_BOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (user_id) DO UPDATE SET token = excluded.token, "
        "handler = excluded.handler, settings = excluded.settings, source = excluded.source, "
        f"updated_at = excluded.updated_at RETURNING {_BOT_COLUMNS}",
        (
            record.user_id,
            record.token,
            record.handler,
            json.dumps(record.settings, sort_keys=True, separators=(",", ":")),
            record.source,
            record.suspended_reason,
            record.created_at,
            record.updated_at,
        ),
    ).fetchone()
    return _bot_record(row)


def _remove_bot(user_id: int, conn: sqlite3.Connection) -> bool:
    existed = conn.execute("DELETE FROM bots WHERE user_id = ?", (user_id,)).rowcount > 0
    conn.execute("DELETE FROM offsets WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM inbox WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM chat_migrations WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM webhook_registrations WHERE user_id = ?", (user_id,))
    return existed


def _set_suspended(
    user_id: int, reason: str | None, at: float | None, conn: sqlite3.Connection
) -> bool:
    cursor = conn.execute(
        "UPDATE bots SET suspended_reason = ?, updated_at = COALESCE(?, updated_at) "
        "WHERE user_id = ?",
        (reason, at, user_id),
    )
    return cursor.rowcount > 0


def _inbox_add(
    user_id: int,
    ids: list[int],
    entries: list[InboxEntry],
    next_offset: int | None,
    received_at: float,
    conn: sqlite3.Connection,
) -> list[int]:
    new: list[int] = []
    kinds: dict[str, int] = {}
    members: list[tuple[str, int]] = []
    for update_id, entry in zip(ids, entries, strict=True):
        cursor = conn.execute(
            "INSERT OR IGNORE INTO inbox "
            "(user_id, update_id, chat_id, lane, payload, received_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                user_id,
                update_id,
                entry.chat_id,
                entry.lane,
                encode_payload(entry.update),
                received_at,
            ),
        )
        if cursor.rowcount == 1:
            new.append(update_id)
            # Counted only when this INSERT stored it: a redelivered update is not counted
            # again, and the count commits (or not) with the row.
            metric = "updates." + entry.kind
            kinds[metric] = kinds.get(metric, 0) + 1
            if entry.chat_id is not None:
                members.append(("chat", entry.chat_id))
            if entry.sender_id is not None:
                members.append(("user", entry.sender_id))
    add_counts(conn, user_id, kinds, received_at)
    add_members(conn, user_id, members, received_at)
    if next_offset is None:
        return new
    conn.execute(
        "INSERT INTO offsets (user_id, next_offset, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (user_id) DO UPDATE SET next_offset = excluded.next_offset, "
        "updated_at = excluded.updated_at",
        (user_id, next_offset, received_at),
    )
    return new


def _inbox_done(
    user_id: int,
    update_ids: list[int],
    done_at: float,
    usage: Mapping[str, int],
    conn: sqlite3.Connection,
) -> int:
    add_counts(conn, user_id, usage, done_at)
    return conn.executemany(
        "UPDATE inbox SET done_at = ? WHERE user_id = ? AND update_id = ? AND done_at IS NULL",
        [(done_at, user_id, update_id) for update_id in update_ids],
    ).rowcount


def _usage_add(user_id: int, counts: dict[str, int], at: float, conn: sqlite3.Connection) -> None:
    add_counts(conn, user_id, counts, at)


def _usage_add_many(
    items: list[tuple[int, dict[str, int]]], at: float, conn: sqlite3.Connection
) -> None:
    for user_id, counts in items:
        add_counts(conn, user_id, counts, at)


def _usage_delete_batch(
    hour_cutoff: float, rollup_cutoff: float, batch_size: int, conn: sqlite3.Connection
) -> int:
    return delete_older(conn, hour_cutoff, rollup_cutoff, batch_size)


def _inbox_name_lanes(user_id: int, pairs: list[tuple[int, str]], conn: sqlite3.Connection) -> int:
    return conn.executemany(
        "UPDATE inbox SET lane = ? WHERE user_id = ? AND update_id = ? AND done_at IS NULL "
        "AND lane IS NOT ?",
        [(lane, user_id, update_id, lane) for update_id, lane in pairs],
    ).rowcount


def _prune_inbox_batch(batch_size: int, conn: sqlite3.Connection) -> int:
    return conn.execute(
        "DELETE FROM inbox WHERE rowid IN (SELECT inbox.rowid FROM inbox "
        "JOIN offsets ON offsets.user_id = inbox.user_id "
        "WHERE inbox.done_at IS NOT NULL AND inbox.update_id < offsets.next_offset LIMIT ?)",
        (batch_size,),
    ).rowcount


def _prune_inbox_received_before(cutoff: float, batch_size: int, conn: sqlite3.Connection) -> int:
    return conn.execute(
        "DELETE FROM inbox WHERE rowid IN (SELECT rowid FROM inbox "
        "WHERE done_at IS NOT NULL AND received_at < ? LIMIT ?)",
        (cutoff, batch_size),
    ).rowcount


def _record_chat_migration(
    user_id: int, old_chat_id: int, new_chat_id: int, at: float, conn: sqlite3.Connection
) -> None:
    conn.execute(
        "INSERT INTO chat_migrations (user_id, old_chat_id, new_chat_id, migrated_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (user_id, old_chat_id) DO UPDATE SET "
        "new_chat_id = excluded.new_chat_id, migrated_at = excluded.migrated_at",
        (user_id, old_chat_id, new_chat_id, at),
    )


# --- queries, run on a read connection in a worker thread ------------------------------------


def _latest_snapshots(db: sqlite_utils.Database) -> dict[int, HealthRow]:
    # A skip-scan over the (user_id, recorded_at) index: one seek per bot instead of a pass
    # over every row (GROUP BY would read the whole index, ~1M entries a month for 1,000 bots).
    rows = db.execute(
        f"""
        WITH RECURSIVE users(user_id) AS (
            SELECT MIN(user_id) FROM bot_health_metrics
            UNION ALL
            SELECT (SELECT MIN(user_id) FROM bot_health_metrics WHERE user_id > users.user_id)
            FROM users WHERE users.user_id IS NOT NULL
        )
        SELECT {_HEALTH_SELECT} FROM bot_health_metrics WHERE id IN (
            SELECT (SELECT id FROM bot_health_metrics AS m WHERE m.user_id = users.user_id
                    ORDER BY m.recorded_at DESC, m.id DESC LIMIT 1)
            FROM users WHERE users.user_id IS NOT NULL
        )
        """
    ).fetchall()
    return {row[0]: _health_row(row) for row in rows}


def _select_health(
    db: sqlite_utils.Database, where: str, params: tuple[Any, ...], limit: int | None
) -> list[HealthRow]:
    """Rows matching ``where``, oldest first; with ``limit``, only the newest ``limit``."""
    select = f"SELECT {_HEALTH_SELECT} FROM bot_health_metrics WHERE {where} "
    if limit is None:
        rows = db.execute(select + "ORDER BY recorded_at, id", params).fetchall()
    else:
        # Newest first so SQLite can stop after `limit` rows; then back to oldest first.
        newest = select + "ORDER BY recorded_at DESC, id DESC LIMIT ?"
        rows = db.execute(newest, (*params, limit)).fetchall()
        rows.reverse()
    return [_health_row(row) for row in rows]


def _latest_counters(db: sqlite_utils.Database) -> dict[int, BotCounters]:
    rows = db.execute(f"SELECT {_COUNTER_SELECT} FROM bot_counters").fetchall()
    return {row[0]: BotCounters(*row) for row in rows}


def _history(
    user_id: int, since: float, limit: int | None, db: sqlite_utils.Database
) -> list[HealthRow]:
    return _select_health(db, "user_id = ? AND recorded_at >= ?", (user_id, since), limit)


def _unhealthy_history(
    since: float, statuses: tuple[str, ...], limit: int | None, db: sqlite_utils.Database
) -> list[HealthRow]:
    if not statuses:
        return []
    marks = ", ".join("?" for _ in statuses)
    return _select_health(
        db, f"status IN ({marks}) AND recorded_at >= ?", (*statuses, since), limit
    )


def _snapshot_count(user_id: int | None, db: sqlite_utils.Database) -> int:
    if user_id is None:
        cursor = db.execute("SELECT COUNT(*) FROM bot_health_metrics")
    else:
        cursor = db.execute("SELECT COUNT(*) FROM bot_health_metrics WHERE user_id = ?", (user_id,))
    count: int = cursor.fetchone()[0]
    return count


def _bot_record(row: Sequence[Any]) -> BotRecord:
    user_id, token, handler, settings, source, suspended_reason, created_at, updated_at = row
    return BotRecord(
        user_id=user_id,
        token=token,
        handler=handler,
        settings=json.loads(settings),
        source=source,
        suspended_reason=suspended_reason,
        created_at=created_at,
        updated_at=updated_at,
    )


def _list_bots(db: sqlite_utils.Database) -> list[BotRecord]:
    rows = db.execute(f"SELECT {_BOT_COLUMNS} FROM bots ORDER BY user_id").fetchall()
    return [_bot_record(row) for row in rows]


def _get_bot(user_id: int, db: sqlite_utils.Database) -> BotRecord | None:
    row = db.execute(f"SELECT {_BOT_COLUMNS} FROM bots WHERE user_id = ?", (user_id,)).fetchone()
    return None if row is None else _bot_record(row)


def _inbox_pending(user_id: int, db: sqlite_utils.Database) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT update_id, chat_id, payload, received_at FROM inbox "
        "WHERE user_id = ? AND done_at IS NULL ORDER BY update_id",
        (user_id,),
    ).fetchall()
    return [
        {
            "update_id": update_id,
            "chat_id": chat_id,
            "update": json.loads(payload),
            "received_at": received_at,
        }
        for update_id, chat_id, payload, received_at in rows
    ]


def _inbox_lane_undone(
    user_id: int, lane: str, after: int, limit: int, db: sqlite_utils.Database
) -> list[dict[str, Any]]:
    # Two seeks on the partial (user_id, lane, update_id) index: the lane's rows and rows
    # stored without a lane; merged by update_id and cut to ``limit`` (if either side had
    # ``limit`` rows, the result has ``limit`` rows: "fewer means no more" holds).
    select = (
        "SELECT update_id, chat_id, lane, payload, received_at FROM inbox "
        "WHERE user_id = ? AND {lane} AND update_id > ? AND done_at IS NULL "
        "ORDER BY update_id LIMIT ?"
    )
    rows = db.execute(select.format(lane="lane = ?"), (user_id, lane, after, limit)).fetchall()
    rows += db.execute(select.format(lane="lane IS NULL"), (user_id, after, limit)).fetchall()
    rows.sort(key=operator.itemgetter(0))
    return [
        {
            "update_id": update_id,
            "chat_id": chat_id,
            "lane": lane_name,
            "update": json.loads(payload),
            "received_at": received_at,
        }
        for update_id, chat_id, lane_name, payload, received_at in rows[:limit]
    ]


def _inbox_pending_all(db: sqlite_utils.Database) -> dict[int, list[dict[str, Any]]]:
    pending: dict[int, list[dict[str, Any]]] = {}
    rows = db.execute(
        "SELECT user_id, update_id, chat_id, payload, received_at FROM inbox "
        "WHERE done_at IS NULL ORDER BY user_id, update_id"
    ).fetchall()
    for user_id, update_id, chat_id, payload, received_at in rows:
        pending.setdefault(user_id, []).append(
            {
                "update_id": update_id,
                "chat_id": chat_id,
                "update": json.loads(payload),
                "received_at": received_at,
            }
        )
    return pending


def _load_offsets(db: sqlite_utils.Database) -> dict[int, int]:
    rows = db.execute("SELECT user_id, next_offset FROM offsets").fetchall()
    return {int(user_id): int(offset) for user_id, offset in rows}


def _load_chat_migrations(db: sqlite_utils.Database) -> dict[int, dict[int, int]]:
    result: dict[int, dict[int, int]] = {}
    for user_id, old, new in db.execute(
        "SELECT user_id, old_chat_id, new_chat_id FROM chat_migrations"
    ).fetchall():
        result.setdefault(int(user_id), {})[int(old)] = int(new)
    return result


def _load_bot_chat_migrations(user_id: int, db: sqlite_utils.Database) -> dict[int, int]:
    rows = db.execute(
        "SELECT old_chat_id, new_chat_id FROM chat_migrations WHERE user_id = ?", (user_id,)
    ).fetchall()
    return {int(old): int(new) for old, new in rows}


def _upsert_bots(records: list[BotRecord], conn: sqlite3.Connection) -> None:
    for record in records:
        _upsert_bot(record, conn)


def _load_offset(user_id: int, db: sqlite_utils.Database) -> int | None:
    row = db.execute("SELECT next_offset FROM offsets WHERE user_id = ?", (user_id,)).fetchone()
    return None if row is None else int(row[0])


def _integrity_check(db: sqlite_utils.Database) -> list[str]:
    return [str(row[0]) for row in db.execute("PRAGMA integrity_check").fetchall()]


_REGISTRATION_COLUMNS = (
    "user_id, url, secret_fingerprint, allowed_updates, max_connections, registered_at, "
    "certificate_fingerprint"
)


def _load_webhook_registrations(db: sqlite_utils.Database) -> dict[int, WebhookRegistration]:
    # Most bots ask for the same update types: one tuple for each distinct list, shared (a
    # copy each is a kilobyte a bot at 100,000 bots).
    shared: dict[str, tuple[str, ...]] = {}
    registrations = {}
    for row in db.execute(f"SELECT {_REGISTRATION_COLUMNS} FROM webhook_registrations"):
        allowed = shared.get(row[3])
        if allowed is None:
            allowed = shared[row[3]] = tuple(json.loads(row[3]))
        registrations[row[0]] = WebhookRegistration(
            user_id=row[0],
            url=row[1],
            secret_fingerprint=row[2],
            allowed_updates=allowed,
            max_connections=row[4],
            registered_at=row[5],
            certificate_fingerprint=row[6],
        )
    return registrations


def _upsert_webhook_registration(
    registration: WebhookRegistration, conn: sqlite3.Connection
) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO webhook_registrations ({_REGISTRATION_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            registration.user_id,
            registration.url,
            registration.secret_fingerprint,
            json.dumps(list(registration.allowed_updates)),
            registration.max_connections,
            registration.registered_at,
            registration.certificate_fingerprint,
        ),
    )


def _delete_webhook_registration(user_id: int, conn: sqlite3.Connection) -> bool:
    cursor = conn.execute("DELETE FROM webhook_registrations WHERE user_id = ?", (user_id,))
    return cursor.rowcount > 0
