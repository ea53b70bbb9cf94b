"""FleetHealth: the one source of every health read of the fleet.

The summary, the unhealthy list, the per-bot endpoint, ``/metrics`` and the snapshot writer
all read one *pull* of the actors. A pull is reused while Trio's clock stands still and no
actor announced a change (an event: status, breaker, lifecycle), so reads in the same instant
agree with each other; any later read pulls again. Nothing is pushed and nothing can be
dropped: right after a breaker opens, the summary's counts by status, the unhealthy list and
the per-bot record say the same thing.

Two depths of pull, so that large fleets stay cheap to summarise:

- a *status* pull reads every bot's :class:`~actors.bot.HealthSample` (its status and the
  counters the summary adds up) and the full statistics of only the bots that are not
  HEALTHY (what the unhealthy list shows): the summary and the unhealthy list;
- a *full* pull reads every bot's full :class:`~actors.bot.BotStatistics`: ``/metrics`` with
  per-bot series, and the snapshots. A full pull serves the summary too.

``/metrics`` without per-bot series needs only fleet-wide sums and counts: :meth:`totals`
reads every bot's :class:`~actors.bot.MetricsSample` in one go (a full pull costs about ten
times as much; 10,000 bots read it in tens of milliseconds), or derives them from the
instant's full pull when there is one.

Each pull is taken in one go, without yielding (the asynchronous full pull yields every
:data:`PULL_CHUNK` bots), so the counts by status and the bots listed come from one reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import trio

from actors.bot import BotActor, BotStatistics, MetricsSample
from actors.breaker import BreakerState
from actors.health import BotStatus, health_row
from storage import BotCounters, HealthRow

__all__ = [
    "PULL_CHUNK",
    "FleetHealth",
    "FleetSummary",
    "FleetTotals",
    "HealthPull",
    "RetiredCounters",
]

# An asynchronous pull yields to the scheduler after this many bots, so reading a fleet of
# 10,000 does not stall the bots for the whole read.
PULL_CHUNK = 500

STATUSES = tuple(s.value for s in BotStatus)


@dataclass(frozen=True)
class FleetSummary:
    total_bots: int
    by_status: dict[str, int]
    polling_by_status: dict[str, int]  # bots by the status of their getUpdates alone
    calls_by_status: dict[str, int]  # bots by the status of their other calls
    by_breaker: dict[str, int]  # bots by breaker state (every state, zeros included)
    total_requests: int
    successful_requests: int
    failed_requests: int
    error_rate: float
    avg_response_time_ms: float
    handled_updates: int
    replies_sent: int
    dead_letters: int


@dataclass(frozen=True)
class FleetTotals:
    """The fleet's bots by status and by breaker state, and its counters summed over the
    bots registered now (what ``/metrics`` shows without per-bot series)."""

    bots: int
    by_status: dict[str, int]  # every BotStatus value, zeros included
    by_breaker: dict[str, int]  # every BreakerState value, zeros included
    requests: int
    failures: int
    throttled: int
    chat_errors: int
    retries: int
    handled_updates: int
    replies_sent: int
    dead_letters: int
    ambiguous_sends: int
    handler_errors: int
    lane_updates: int
    lanes_overflowing: int


# FleetTotals' cumulative counters, in the order RetiredCounters.add reads them off a
# MetricsSample (the gauges, lane updates and overflowing lanes, are not kept for bots that
# left).
_COUNTERS = (
    "requests",
    "failures",
    "throttled",
    "chat_errors",
    "retries",
    "handled_updates",
    "replies_sent",
    "dead_letters",
    "ambiguous_sends",
    "handler_errors",
)


class RetiredCounters:
    """The cumulative counters of bots removed from the fleet, so the fleet's sums never go
    down when a bot goes: ``/metrics`` exposes them as Prometheus counters, and a counter
    that drops reads as a reset, which makes ``rate()`` count the whole fleet's total again."""

    __slots__ = ("_sums",)

    def __init__(self) -> None:
        self._sums = [0] * len(_COUNTERS)

    def add(self, sample: MetricsSample) -> None:
        """Keep a leaving bot's counters (its last :meth:`BotActor.metrics_sample`)."""
        for i, value in enumerate(
            (
                sample.total_requests,
                sample.failed_requests,
                sample.throttled,
                sample.chat_errors,
                sample.retries,
                sample.handled_updates,
                sample.replies_sent,
                sample.dead_letters,
                sample.ambiguous_sends,
                sample.handler_errors,
            )
        ):
            self._sums[i] += value

    def onto(self, totals: FleetTotals) -> FleetTotals:
        """``totals`` with the removed bots' counters added."""
        if not any(self._sums):
            return totals
        return replace(
            totals,
            **{
                name: getattr(totals, name) + value
                for name, value in zip(_COUNTERS, self._sums, strict=True)
            },
        )


_BREAKER_STATES = tuple(s.value for s in BreakerState)


def _totals_of(bots: Sequence[BotStatistics]) -> FleetTotals:
    by_status = dict.fromkeys(STATUSES, 0)
    by_breaker = dict.fromkeys(_BREAKER_STATES, 0)
    sums = [0] * 12
    for s in bots:
        by_status[s.status.value] += 1
        by_breaker[s.breaker.state.value] += 1
        h = s.health
        lanes = s.lanes
        for i, value in enumerate(
            (
                h.total_requests,
                h.failed_requests,
                h.throttled,
                h.chat_errors,
                s.retry.retries,
                s.handled_updates,
                s.replies_sent,
                s.dead_letters,
                s.ambiguous_sends,
                s.handler_errors,
                0 if lanes is None else lanes.queued_updates,
                0 if lanes is None else lanes.overflowing_lanes,
            )
        ):
            sums[i] += value
    return FleetTotals(len(bots), by_status, by_breaker, *sums)


class _Tally:
    """Adds bots up into a :class:`FleetSummary`."""

    __slots__ = (
        "by_breaker",
        "by_status",
        "calls_by_status",
        "dead",
        "failed",
        "handled",
        "polling_by_status",
        "replies",
        "successful",
        "total",
        "weighted",
    )

    def __init__(self) -> None:
        self.by_status = dict.fromkeys(STATUSES, 0)
        self.polling_by_status = dict.fromkeys(STATUSES, 0)
        self.calls_by_status = dict.fromkeys(STATUSES, 0)
        # Counted by member, named in summary() (an enum's .value costs a call per bot).
        self.by_breaker = dict.fromkeys(BreakerState, 0)
        self.total = self.successful = self.failed = 0
        self.handled = self.replies = self.dead = 0
        self.weighted = 0.0

    def add(
        self,
        status: BotStatus,
        total: int,
        successful: int,
        failed: int,
        ema_ms: float | None,
        handled: int,
        replies: int,
        dead: int,
    ) -> None:
        self.by_status[status.value] += 1
        self.total += total
        self.successful += successful
        self.failed += failed
        if ema_ms is not None:
            self.weighted += ema_ms * total
        self.handled += handled
        self.replies += replies
        self.dead += dead

    def add_statistics(self, s: BotStatistics) -> None:
        h = s.health
        self.polling_by_status[s.polling_status.value] += 1
        self.calls_by_status[s.call_status.value] += 1
        self.by_breaker[s.breaker.state] += 1
        self.add(
            s.status,
            h.total_requests,
            h.successful_requests,
            h.failed_requests,
            h.ema_latency_ms,
            s.handled_updates,
            s.replies_sent,
            s.dead_letters,
        )

    def summary(self, bots: int) -> FleetSummary:
        total = self.total
        return FleetSummary(
            total_bots=bots,
            by_status=self.by_status,
            polling_by_status=self.polling_by_status,
            calls_by_status=self.calls_by_status,
            by_breaker={state.value: n for state, n in self.by_breaker.items()},
            total_requests=total,
            successful_requests=self.successful,
            failed_requests=self.failed,
            error_rate=self.failed / total if total else 0.0,
            avg_response_time_ms=self.weighted / total if total else 0.0,
            handled_updates=self.handled,
            replies_sent=self.replies,
            dead_letters=self.dead,
        )


@dataclass(frozen=True)
class HealthPull:
    """One reading of the fleet (bots by ``user_id``)."""

    at: float  # Trio time of the read
    summary: FleetSummary
    not_healthy: tuple[BotStatistics, ...]  # full statistics of every bot not HEALTHY
    bots: tuple[BotStatistics, ...] | None  # every bot's full statistics (a full pull)

    def rows(self, recorded_at: float) -> list[HealthRow]:
        """One ``bot_health_metrics`` row per bot (``recorded_at``: wall clock)."""
        return [
            health_row(s.user_id, recorded_at, s.status, s.health, s.breaker, s.retry)
            for s in self.bots or ()
        ]

    def totals(self) -> FleetTotals:
        """The fleet-wide counts and sums of a full pull (empty for a status pull)."""
        return _totals_of(self.bots or ())

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
            for s in self.bots or ()
        ]


def _full(at: float, bots: Sequence[BotStatistics]) -> HealthPull:
    tally = _Tally()
    for stats in bots:
        tally.add_statistics(stats)
    not_healthy = tuple(s for s in bots if s.status is not BotStatus.HEALTHY)
    return HealthPull(at, tally.summary(len(bots)), not_healthy, tuple(bots))


class FleetHealth:
    """Pulls the actors for every health read, at most once per instant.

    ``actors`` lists the registered actors (by ``user_id``); ``changes`` is a count that moves
    whenever an actor announced a change (the event sink's ``emitted``), so a change within
    one instant is not hidden by a pull taken just before it; ``retired`` holds the counters
    of bots removed since start, added to :meth:`totals`.
    """

    def __init__(
        self,
        actors: Callable[[], Iterable[BotActor]],
        *,
        changes: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = trio.current_time,
        retired: RetiredCounters | None = None,
    ) -> None:
        self._actors = actors
        self._retired = RetiredCounters() if retired is None else retired
        self._changes = changes
        self._clock = clock
        self._pull: HealthPull | None = None
        self._key: tuple[float, int] | None = None
        self._index: dict[int, BotStatistics] | None = None
        # Single bots read alone in the instant of ``_singles_key``.
        self._singles: dict[int, BotStatistics] = {}
        self._singles_key: tuple[float, int] | None = None
        self._pulls = 0
        self._totals: FleetTotals | None = None
        self._totals_key: tuple[float, int] | None = None

    @property
    def pulls(self) -> int:
        """Pulls taken so far (each read either reuses the instant's pull or adds one)."""
        return self._pulls

    def _now(self) -> tuple[float, int]:
        return (self._clock(), self._changes())

    def _current(self, *, full: bool) -> HealthPull | None:
        pull = self._pull
        if pull is None or self._key != self._now() or (full and pull.bots is None):
            return None
        return pull

    # --- pulls ---------------------------------------------------------------------------

    def status_pull(self) -> HealthPull:
        """The instant's pull, or a new status pull (samples, details of the not-HEALTHY)."""
        pull = self._current(full=False)
        if pull is not None:
            return pull
        tally = _Tally()
        not_healthy: list[BotStatistics] = []
        count = healthy_count = 0
        healthy = BotStatus.HEALTHY
        # The HEALTHY majority is added up here, inline: this loop runs over every bot of
        # the fleet on each summary, and a call per bot costs as much as the reading.
        total = successful = failed = handled = replies = dead = 0
        weighted = 0.0
        breakers = tally.by_breaker
        for actor in self._actors():
            count += 1
            status, t, ok, bad, ema, h, r, d, state = actor.health_sample()
            if status is healthy:
                healthy_count += 1
                breakers[state] += 1
                total += t
                successful += ok
                failed += bad
                if ema is not None:
                    weighted += ema * t
                handled += h
                replies += r
                dead += d
            else:
                stats = actor.statistics()
                not_healthy.append(stats)
                tally.add_statistics(stats)
        # A HEALTHY bot's polls and calls are both HEALTHY (its status is the worse of them).
        tally.by_status[healthy.value] += healthy_count
        tally.polling_by_status[healthy.value] += healthy_count
        tally.calls_by_status[healthy.value] += healthy_count
        tally.total += total
        tally.successful += successful
        tally.failed += failed
        tally.weighted += weighted
        tally.handled += handled
        tally.replies += replies
        tally.dead += dead
        return self._keep(HealthPull(0.0, tally.summary(count), tuple(not_healthy), None))

    def full_pull(self) -> HealthPull:
        """The instant's full pull, or a new one: every bot's full statistics."""
        pull = self._current(full=True)
        if pull is not None:
            return pull
        return self._keep(_full(0.0, [actor.statistics() for actor in self._actors()]))

    async def full_pull_async(self) -> HealthPull:
        """:meth:`full_pull`, yielding to the scheduler every :data:`PULL_CHUNK` bots."""
        pull = self._current(full=True)
        if pull is not None:
            return pull
        bots: list[BotStatistics] = []
        for index, actor in enumerate(list(self._actors())):
            bots.append(actor.statistics())
            if index % PULL_CHUNK == PULL_CHUNK - 1:
                await trio.lowlevel.checkpoint()
        return self._keep(_full(0.0, bots))

    def _keep(self, pull: HealthPull) -> HealthPull:
        # Keyed after the read: a breaker that reading moved (OPEN -> HALF_OPEN is noticed
        # lazily) announced it already, and the pull includes it.
        self._key = self._now()
        self._pull = pull = HealthPull(self._key[0], pull.summary, pull.not_healthy, pull.bots)
        self._index = None
        self._pulls += 1
        return pull

    def totals(self, pull: HealthPull | None = None) -> FleetTotals:
        """The fleet's counts by status and breaker state and its summed counters (removed
        bots' included): of ``pull``'s bots if given (a full pull), else now, from the
        instant's full pull if there is one, else read from every bot's cheap
        :class:`~actors.bot.MetricsSample` in one go (no yield: the counts come from one
        reading, and a read that yields waits a whole scheduling round of the fleet each
        time, which under load cost more than the read). Reused within the instant."""
        if pull is None:
            pull = self._current(full=True)
        if pull is not None and pull.bots is not None:
            return self._retired.onto(pull.totals())
        return self._retired.onto(self._sampled_totals())

    def _sampled_totals(self) -> FleetTotals:
        key = self._now()
        if self._totals is not None and self._totals_key == key:
            return self._totals
        # Counted by member, named once at the end (an enum's .value costs a call per bot).
        status_counts = dict.fromkeys(BotStatus, 0)
        breaker_counts = dict.fromkeys(BreakerState, 0)
        count = requests = failures = throttled = chat_errors = retries = 0
        handled = replies = dead = ambiguous = handler_errors = queued = overflowing = 0
        # Inline, as in status_pull: this runs over every bot of the fleet on each scrape.
        for actor in self._actors():
            count += 1
            (
                status,
                state,
                t,
                f,
                th,
                ce,
                r,
                h,
                rs,
                d,
                a,
                he,
                q,
                o,
            ) = actor.metrics_sample()
            status_counts[status] += 1
            breaker_counts[state] += 1
            requests += t
            failures += f
            throttled += th
            chat_errors += ce
            retries += r
            handled += h
            replies += rs
            dead += d
            ambiguous += a
            handler_errors += he
            queued += q
            overflowing += o
        totals = FleetTotals(
            count,
            {status.value: n for status, n in status_counts.items()},
            {state.value: n for state, n in breaker_counts.items()},
            requests,
            failures,
            throttled,
            chat_errors,
            retries,
            handled,
            replies,
            dead,
            ambiguous,
            handler_errors,
            queued,
            overflowing,
        )
        # Keyed after the read, as _keep does: what reading moved was announced already.
        self._totals, self._totals_key = totals, self._now()
        return totals

    # --- reads ---------------------------------------------------------------------------

    def summary(self) -> FleetSummary:
        """The fleet's totals and its bots by status."""
        return self.status_pull().summary

    def unhealthy(self) -> list[BotStatistics]:
        """The bots whose status is not HEALTHY, by ``user_id``."""
        return list(self.status_pull().not_healthy)

    def one(self, actor: BotActor) -> BotStatistics:
        """One bot's statistics, as the instant's pull has it.

        A bot the pull found HEALTHY (a status pull keeps no details of those) is read alone:
        reading 10,000 bots to answer for one would be waste. Should it read as not HEALTHY
        now, it changed in this instant without an event: the pull is dropped, so the
        summary read next agrees with it.
        """
        key = self._now()
        pull = self._current(full=False)
        if pull is not None:
            if self._index is None:
                self._index = {s.user_id: s for s in pull.bots or pull.not_healthy}
            found = self._index.get(actor.user_id)
            if found is not None:
                return found
        if self._singles_key != key:
            self._singles = {}
            self._singles_key = key
        stats = self._singles.get(actor.user_id)
        if stats is None:
            stats = self._singles[actor.user_id] = actor.statistics()
        if pull is not None and (pull.bots is not None or stats.status is not BotStatus.HEALTHY):
            self._pull = None
        return stats
