"""FleetHealth: the one source of every health read of the fleet.

The summary, the unhealthy list, the per-bot endpoint, ``/metrics`` and the snapshot writer
all read one *pull* of the actors' ``statistics()``. A pull is reused while Trio's clock
stands still and no actor announced a change (an event: status, breaker, lifecycle), so reads
in the same instant agree with each other; any later read pulls again. Nothing is pushed and
nothing can be dropped: right after a breaker opens, the summary's counts by status, the
unhealthy list and the per-bot record say the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import trio

from actors.bot import BotActor, BotStatistics
from actors.health import BotStatus, health_row
from storage import BotCounters, HealthRow

__all__ = ["PULL_CHUNK", "FleetHealth", "FleetSummary", "HealthPull"]

# An asynchronous pull yields to the scheduler after this many bots, so reading a fleet of
# 10,000 does not stall the bots for the whole read.
PULL_CHUNK = 500

STATUSES = tuple(s.value for s in BotStatus)


@dataclass(frozen=True)
class FleetSummary:
    total_bots: int
    by_status: dict[str, int]
    total_requests: int
    successful_requests: int
    failed_requests: int
    error_rate: float
    avg_response_time_ms: float
    handled_updates: int
    replies_sent: int
    dead_letters: int


@dataclass(frozen=True)
class HealthPull:
    """Every registered bot's statistics, read in one go (by ``user_id``)."""

    at: float  # Trio time of the read
    bots: tuple[BotStatistics, ...]

    def summary(self) -> FleetSummary:
        """The fleet's totals and its bots counted by status."""
        by_status = dict.fromkeys(STATUSES, 0)
        total = successful = failed = handled = replies = dead = 0
        weighted = 0.0
        for stats in self.bots:
            by_status[stats.status.value] += 1
            health = stats.health
            total += health.total_requests
            successful += health.successful_requests
            failed += health.failed_requests
            if health.ema_latency_ms is not None:
                weighted += health.ema_latency_ms * health.total_requests
            handled += stats.handled_updates
            replies += stats.replies_sent
            dead += stats.dead_letters
        return FleetSummary(
            total_bots=len(self.bots),
            by_status=by_status,
            total_requests=total,
            successful_requests=successful,
            failed_requests=failed,
            error_rate=failed / total if total else 0.0,
            avg_response_time_ms=weighted / total if total else 0.0,
            handled_updates=handled,
            replies_sent=replies,
            dead_letters=dead,
        )

    def unhealthy(self) -> list[BotStatistics]:
        """The bots whose status is not HEALTHY."""
        return [s for s in self.bots if s.status is not BotStatus.HEALTHY]

    def rows(self, recorded_at: float) -> list[HealthRow]:
        """One ``bot_health_metrics`` row per bot (``recorded_at``: wall clock)."""
        return [
            health_row(s.user_id, recorded_at, s.status, s.health, s.breaker, s.retry)
            for s in self.bots
        ]

    def counters(self, recorded_at: float) -> list[BotCounters]:
        """The delivery counters of every bot, stored beside the rows."""
        return [
            BotCounters(
                user_id=s.user_id,
                recorded_at=recorded_at,
                handled_updates=s.handled_updates,
                replies_sent=s.replies_sent,
                dead_letters=s.dead_letters,
                ambiguous_sends=s.ambiguous_sends,
                handler_errors=s.handler_errors,
            )
            for s in self.bots
        ]


class FleetHealth:
    """Pulls the actors' statistics for every health read, at most once per instant.

    ``actors`` lists the registered actors (by ``user_id``); ``changes`` is a count that moves
    whenever an actor announced a change (the event sink's :attr:`~EventSink.emitted`), so a
    change within one instant is not hidden by a pull taken just before it.
    """

    def __init__(
        self,
        actors: Callable[[], Iterable[BotActor]],
        *,
        changes: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._actors = actors
        self._changes = changes
        self._clock = clock
        self._pull: HealthPull | None = None
        self._key: tuple[float, int] | None = None
        self._summary: FleetSummary | None = None
        self._index: dict[int, BotStatistics] | None = None
        # Single bots read since the last full pull, in the same instant.
        self._singles: dict[int, BotStatistics] = {}
        self._singles_key: tuple[float, int] | None = None
        self._pulls = 0

    @property
    def pulls(self) -> int:
        """Full pulls so far (tests and benchmarks check the reuse)."""
        return self._pulls

    def _now(self) -> tuple[float, int]:
        return (self._clock(), self._changes())

    def pull(self) -> HealthPull:
        """Every bot's statistics now (the instant's pull if there is one)."""
        if self._pull is not None and self._key == self._now():
            return self._pull
        return self._keep([actor.statistics() for actor in self._actors()])

    async def pull_async(self) -> HealthPull:
        """:meth:`pull`, yielding to the scheduler every :data:`PULL_CHUNK` bots."""
        if self._pull is not None and self._key == self._now():
            return self._pull
        bots: list[BotStatistics] = []
        for index, actor in enumerate(list(self._actors())):
            bots.append(actor.statistics())
            if index % PULL_CHUNK == PULL_CHUNK - 1:
                await trio.lowlevel.checkpoint()
        return self._keep(bots)

    def _keep(self, bots: Sequence[BotStatistics]) -> HealthPull:
        # Keyed after the read: a breaker that reading moved (OPEN -> HALF_OPEN is noticed
        # lazily) announced it already, and the pull includes it.
        self._key = self._now()
        self._pull = HealthPull(self._key[0], tuple(bots))
        self._summary = None
        self._index = None
        self._pulls += 1
        return self._pull

    def summary(self) -> FleetSummary:
        """The fleet's totals and its bots by status, from the instant's pull."""
        pull = self.pull()
        if self._summary is None:
            self._summary = pull.summary()
        return self._summary

    def unhealthy(self) -> list[BotStatistics]:
        """The bots whose status is not HEALTHY, from the instant's pull."""
        return self.pull().unhealthy()

    def one(self, actor: BotActor) -> BotStatistics:
        """One bot's statistics: from the instant's pull if there is one, else read alone
        (reading 10,000 bots to answer for one would be wasted), and kept for the instant."""
        key = self._now()
        if self._pull is not None and self._key == key:
            if self._index is None:
                self._index = {s.user_id: s for s in self._pull.bots}
            found = self._index.get(actor.user_id)
            if found is not None:
                return found
        if self._singles_key != key:
            self._singles = {}
            self._singles_key = key
        stats = self._singles.get(actor.user_id)
        if stats is None:
            stats = self._singles[actor.user_id] = actor.statistics()
        return stats
