"""MetricsActor: the fleet's health snapshots, retention and live event fan-out.

Bot actors tell it what changes over one bounded channel (``EventSink``); it forwards those
events to live subscribers (the admin WebSocket), dropping any subscriber that falls behind.
Its numbers come from the fleet's one health truth (:class:`~actors.fleet_health.FleetHealth`):
the summary, and the snapshot of every bot it writes each ``persist_interval`` through the
store's single writer. It also deletes rows older than ``retention_days``, and handled inbox
rows once no redelivery can need them (below the bot's offset, on the snapshot cadence; or
received more than :data:`DONE_UPDATE_DEDUPE_SECONDS` ago, in the retention task: the only
rule for webhook bots, which have no offset).
It holds the fleet's :class:`~actors.instruments.FleetInstruments` for ``/metrics``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors.events import BotEvent
from actors.fleet_health import FleetHealth, FleetSummary
from actors.instruments import FleetInstruments
from storage import StorageError, Store

__all__ = ["DONE_UPDATE_DEDUPE_SECONDS", "MetricsActor", "MetricsStatistics", "Subscription"]

log = logging.getLogger("botvisor.metrics")

SECONDS_PER_DAY = 86400.0
# A handled update received this long ago is deleted from the inbox, whatever its bot's
# offset: Telegram drops an update it could not deliver about 24 h after it was made, so it
# cannot come again and its row dedupes nothing. Twice that, for clock skew and a margin.
DONE_UPDATE_DEDUPE_SECONDS = 2 * SECONDS_PER_DAY


@dataclass(frozen=True)
class MetricsStatistics:
    events_received: int
    snapshots_written: int
    snapshot_rows_written: int
    last_snapshot_at: float | None
    retention_rows_deleted: int
    inbox_rows_pruned: int
    subscribers: int
    subscribers_dropped: int


class Subscription:
    """A live event subscriber; ``receive`` ends when it is dropped or the daemon stops."""

    def __init__(self, user_id: int | None, buffer: int) -> None:
        self.user_id = user_id
        self._send, self.receive = trio.open_memory_channel[BotEvent](buffer)
        self.dropped = False

    def offer(self, event: BotEvent) -> bool:
        if self.user_id is not None and event.user_id != self.user_id:
            return True
        try:
            self._send.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        self._send.close()


class MetricsActor:
    """Owns the fleet's aggregates; the only component that writes health rows."""

    def __init__(
        self,
        store: Store,
        events: trio.MemoryReceiveChannel[BotEvent],
        *,
        health: FleetHealth,
        wall_clock: Callable[[], float],
        persist_interval: float,
        retention_days: float,
        retention_check_interval: float,
        usage_hour_retention_days: float = 35.0,
        usage_retention_days: float = 400.0,
        subscriber_buffer: int = 256,
        instruments: FleetInstruments | None = None,
    ) -> None:
        self._store = store
        # The bots' counters and histograms (FleetServices.instruments), read at scrape.
        self._instruments = FleetInstruments() if instruments is None else instruments
        self._events = events
        self._health = health
        self._wall_clock = wall_clock
        self._persist_interval = persist_interval
        self._retention_seconds = retention_days * SECONDS_PER_DAY
        self._retention_check = retention_check_interval
        self._usage_hour_retention = usage_hour_retention_days * SECONDS_PER_DAY
        self._usage_retention = usage_retention_days * SECONDS_PER_DAY
        self._subscriber_buffer = subscriber_buffer
        self._subscribers: list[Subscription] = []
        self._recent: deque[BotEvent] = deque(maxlen=1000)
        self._received = 0
        self._snapshots = 0
        self._snapshot_rows = 0
        self._last_snapshot_at: float | None = None
        self._deleted = 0
        self._pruned = 0
        self._dropped_subscribers = 0
        self._stop = trio.Event()
        self._done = trio.Event()
        self._persist_lock = trio.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[MetricsActor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Consume events and keep the cadences until ``stop``; then write a final snapshot."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._consume)
                nursery.start_soon(self._snapshot_loop)
                nursery.start_soon(self._retention_loop)
                task_status.started(self)
                await self._stop.wait()
                nursery.cancel_scope.cancel()
            # Everything already queued is taken in, then one last snapshot: the shutdown state.
            self._drain()
            with trio.CancelScope(shield=True):
                await self.persist_now()
        finally:
            for subscription in self._subscribers:
                subscription.close()
            self._subscribers.clear()
            self._done.set()

    async def stop(self) -> None:
        """Write the final snapshot and return once the actor has finished."""
        self._stop.set()
        await self._done.wait()

    # --- queries -------------------------------------------------------------------------

    @property
    def health(self) -> FleetHealth:
        """The fleet's one health truth, which the summary and the snapshots read."""
        return self._health

    @property
    def instruments(self) -> FleetInstruments:
        """The fleet's Prometheus counters and histograms (updates, calls, latencies)."""
        return self._instruments

    def summary(self) -> FleetSummary:
        return self._health.summary()

    def recent_events(self) -> list[BotEvent]:
        return list(self._recent)

    def subscribe(self, user_id: int | None = None) -> Subscription:
        subscription = Subscription(user_id, self._subscriber_buffer)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
        subscription.close()

    def statistics(self) -> MetricsStatistics:
        return MetricsStatistics(
            events_received=self._received,
            snapshots_written=self._snapshots,
            snapshot_rows_written=self._snapshot_rows,
            last_snapshot_at=self._last_snapshot_at,
            retention_rows_deleted=self._deleted,
            inbox_rows_pruned=self._pruned,
            subscribers=len(self._subscribers),
            subscribers_dropped=self._dropped_subscribers,
        )

    # --- writing -------------------------------------------------------------------------

    async def persist_now(self) -> int:
        """Write one snapshot row per bot now; returns the number of rows written."""
        async with self._persist_lock:
            # Rows and counters from one pull (in chunks: a large fleet does not stall the
            # bots); each bot's row and counters come from one reading of it.
            pull = await self._health.full_pull_async()
            now = self._wall_clock()
            rows, counters = pull.rows(now), pull.counters(now)
            if not rows:
                return 0
            written = await self._store.insert_snapshots(rows, counters)
            self._snapshots += 1
            self._snapshot_rows += written
            self._last_snapshot_at = self._wall_clock()
            return written

    async def cleanup_now(self) -> int:
        """Delete rows older than their retention period (health snapshots and dead letters:
        ``retention_days``; usage: its own periods); returns how many were deleted. Handled
        inbox updates received over :data:`DONE_UPDATE_DEDUPE_SECONDS` ago go too (counted
        in ``inbox_rows_pruned``, not in the result)."""
        now = self._wall_clock()
        cutoff = now - self._retention_seconds
        deleted = await self._store.delete_older_than(cutoff)
        if deleted:
            log.info(
                "retention: deleted %d rows (health snapshots, dead letters) older than %g days",
                deleted,
                self._retention_seconds / SECONDS_PER_DAY,
            )
        usage = await self._store.usage_delete_older(
            now - self._usage_hour_retention, now - self._usage_retention
        )
        if usage:
            log.info(
                "retention: deleted %d usage rows (hours older than %g days, days and months "
                "older than %g days)",
                usage,
                self._usage_hour_retention / SECONDS_PER_DAY,
                self._usage_retention / SECONDS_PER_DAY,
            )
        self._deleted += deleted + usage
        # Webhook bots have no offset to prune their handled updates by (prune_inbox_now):
        # age is their rule (and a safe one for any bot).
        pruned = await self._store.prune_inbox_received_before(now - DONE_UPDATE_DEDUPE_SECONDS)
        if pruned:
            log.info(
                "retention: deleted %d handled inbox updates received more than %g h ago "
                "(Telegram cannot send them again)",
                pruned,
                DONE_UPDATE_DEDUPE_SECONDS / 3600,
            )
        self._pruned += pruned
        return deleted + usage

    async def prune_inbox_now(self) -> int:
        """Delete handled updates Telegram will never send again; returns how many."""
        pruned = await self._store.prune_inbox()
        self._pruned += pruned
        return pruned

    # --- loops ---------------------------------------------------------------------------

    async def _consume(self) -> None:
        async for event in self._events:
            self._take(event)

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            self._take(event)

    def _take(self, event: BotEvent) -> None:
        self._received += 1
        self._recent.append(event)
        kept = []
        for subscription in self._subscribers:
            if subscription.offer(event):
                kept.append(subscription)
            else:
                # A slow client is dropped, never allowed to stall the daemon.
                subscription.dropped = True
                subscription.close()
                self._dropped_subscribers += 1
        self._subscribers = kept

    async def _snapshot_loop(self) -> None:
        next_at = trio.current_time() + self._persist_interval
        while True:
            await trio.sleep_until(next_at)
            next_at += self._persist_interval
            try:
                await self.persist_now()
            except Exception as exc:
                _log_failure("health snapshot failed; will try again next interval", exc)
            # Done inbox rows are only needed until the stored offset passes them; pruning on
            # the snapshot cadence keeps the inbox near the size of the work in flight.
            try:
                await self.prune_inbox_now()
            except Exception as exc:
                _log_failure("inbox pruning failed; will try again next interval", exc)

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.cleanup_now()
            except Exception as exc:
                _log_failure("retention cleanup failed; will try again next interval", exc)
            await trio.sleep(self._retention_check)


def _log_failure(what: str, exc: Exception) -> None:
    """The database failing (full disk, corrupt page) is one line: SQLite's message says it
    all and repeats every interval; anything else is a bug and keeps its traceback."""
    if isinstance(exc, (StorageError, sqlite3.DatabaseError)):
        log.error("%s: %s: %s", what, type(exc).__name__, exc)
    else:
        log.error("%s", what, exc_info=exc)
