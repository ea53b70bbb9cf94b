"""Each bot's circuit breaker, and the time-bucketed counter it shares with health tracking.

States and transitions::

    CLOSED ──failure_threshold consecutive failures, or failure rate──> OPEN
    OPEN ──open_seconds later (observed lazily)──> HALF_OPEN
    HALF_OPEN ──half_open_successes successes──> CLOSED
    HALF_OPEN ──any failure──> OPEN
    any ──reset()──> CLOSED      any ──force_open()──> FORCED_OPEN      any ──disable()──> DISABLED

Every call admitted by :meth:`CircuitBreaker.try_acquire` reports exactly one outcome:
``record_success``, ``record_failure`` or ``record_ignored`` (an outcome that says nothing about
the bot: a 429, a chat error, a cancellation). An outcome may name the breaker ``generation``
its call was admitted in; an outcome of an earlier generation (a call that outlived a state
change) is counted but moves no state, so a slow call from before an outage can never be
mistaken for the HALF_OPEN probe.

Polls (``poll=True``: the bot's ``getUpdates``) and calls (everything else) keep separate runs
of consecutive failures, and either run reaching ``failure_threshold`` opens the breaker. A
successful poll ends only the polls' run: it never resets the calls' run, and never closes a
breaker the calls opened (in HALF_OPEN such a breaker admits polls beside its probe, without
counting their successes; a failed poll opens it again). Polls keep an idle bot's updates
flowing while its sends are probed, and a breaker that failing polls opened is closed by
successful polls too, so a bot that sends nothing recovers. The failure-rate window counts
calls only.
"""

from __future__ import annotations

import enum
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors.config import BreakerConfig

__all__ = [
    "BreakerState",
    "BreakerStatistics",
    "BreakerTransition",
    "CircuitBreaker",
    "RollingCounter",
]


class BreakerState(enum.Enum):
    CLOSED = "closed"  # calls flow; failures are counted towards opening
    OPEN = "open"  # calls are refused until open_seconds have passed
    HALF_OPEN = "half_open"  # one probe call at a time decides between CLOSED and OPEN
    DISABLED = "disabled"  # set by an operator: every call is admitted, nothing opens it
    FORCED_OPEN = "forced_open"  # set by an operator: every call is refused until reset()


_MANUAL = (BreakerState.CLOSED, BreakerState.DISABLED, BreakerState.FORCED_OPEN)

# The automatic transitions; manual ones (reset, force_open, disable) may leave any state.
_AUTOMATIC: frozenset[tuple[BreakerState, BreakerState]] = frozenset(
    {
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    }
)


@dataclass(frozen=True)
class BreakerTransition:
    """One state change; ``at`` is Trio time (for OPEN → HALF_OPEN: the moment it became due)."""

    previous: BreakerState
    state: BreakerState
    at: float
    reason: str


@dataclass(frozen=True)
class BreakerStatistics:
    state: BreakerState
    consecutive_failures: int  # the calls' run (everything but getUpdates)
    poll_consecutive_failures: int  # the polls' run
    opened_by_polls: bool  # while OPEN or HALF_OPEN: the polls' run opened it
    failure_count: int  # every failure ever recorded
    success_count: int  # every success ever recorded
    rejected_count: int  # calls refused by try_acquire
    opened_at: float | None  # Trio time of the last opening, while OPEN or HALF_OPEN
    half_open_at: float | None  # while OPEN: when the next probe will be admitted
    transitions: int
    probe_in_flight: bool
    window_calls: int  # calls in the failure-rate window (0 when that rule is off)
    window_failures: int
    generation: int


class RollingCounter:
    """Calls and failures over the last ``window_seconds``, kept in ``buckets`` time buckets.

    Memory is two small fixed arrays whatever the traffic. An outcome recorded at time ``t``
    counts until ``(floor(t / width) + buckets) * width`` where ``width`` is
    ``window_seconds / buckets``: an outcome at a bucket boundary counts for exactly
    ``window_seconds``, one inside a bucket for up to one bucket width less.
    """

    __slots__ = (
        "_buckets",
        "_calls",
        "_failures",
        "_head",
        "_total_calls",
        "_total_failures",
        "_width",
    )

    def __init__(self, window_seconds: float, buckets: int = 60) -> None:
        if not (math.isfinite(window_seconds) and window_seconds > 0):
            raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets!r}")
        self._width = window_seconds / buckets
        self._buckets = buckets
        # Allocated on first use: most of thousands of bots are idle at any moment.
        self._calls: array[int] | None = None
        self._failures: array[int] | None = None
        self._head = 0
        self._total_calls = 0
        self._total_failures = 0

    def add(self, now: float, *, failed: bool) -> None:
        """Count one call at time ``now`` (which never goes backwards)."""
        index = self._advance(now)
        if self._calls is None or self._failures is None:
            self._calls = array("q", bytes(8 * self._buckets))
            self._failures = array("q", bytes(8 * self._buckets))
            self._head = index
        slot = index % self._buckets
        self._calls[slot] += 1
        self._total_calls += 1
        if failed:
            self._failures[slot] += 1
            self._total_failures += 1

    def totals(self, now: float) -> tuple[int, int]:
        """``(calls, failures)`` in the window ending at ``now``."""
        self._advance(now)
        return self._total_calls, self._total_failures

    def clear(self) -> None:
        self._calls = None
        self._failures = None
        self._total_calls = 0
        self._total_failures = 0

    def _advance(self, now: float) -> int:
        index = math.floor(now / self._width)
        if self._calls is None or self._failures is None:
            return index
        gap = index - self._head
        if gap <= 0:
            return self._head
        if gap >= self._buckets:
            self.clear()
            return index
        for absolute in range(self._head + 1, index + 1):
            slot = absolute % self._buckets
            self._total_calls -= self._calls[slot]
            self._total_failures -= self._failures[slot]
            self._calls[slot] = 0
            self._failures[slot] = 0
        self._head = index
        return index


class CircuitBreaker:
    """Fails a bot's calls fast while its Bot API keeps failing, and probes for recovery.

    Time comes from ``clock`` (default :func:`trio.current_time`); :meth:`wait_admitting`
    sleeps on Trio's clock, so use it only with the default.
    """

    def __init__(
        self,
        config: BreakerConfig,
        *,
        on_transition: Callable[[BreakerTransition], None] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._config = config
        self._on_transition = on_transition
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._consecutive_failures = 0
        self._poll_failures = 0
        self._opened_by_polls = False
        self._failure_count = 0
        self._success_count = 0
        self._rejected_count = 0
        self._transitions = 0
        self._opened_at: float | None = None
        self._half_open_successes = 0
        self._probe_in_flight = False
        self._window: RollingCounter | None = (
            RollingCounter(config.rate_window_seconds) if config.failure_rate is not None else None
        )
        # Set (and replaced) whenever admission may have changed; only made when someone waits.
        self._changed: trio.Event | None = None

    @property
    def config(self) -> BreakerConfig:
        return self._config

    @property
    def state(self) -> BreakerState:
        self._refresh()
        return self._state

    @property
    def generation(self) -> int:
        """Changes on every transition; pass it to ``record_*`` to mark which episode a call
        belongs to."""
        self._refresh()
        return self._generation

    def try_acquire(self, *, poll: bool = False) -> bool:
        """Admit a call (True) or refuse it (False, counted as rejected)."""
        self._refresh()
        state = self._state
        if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
            return True
        if state is BreakerState.HALF_OPEN and poll and not self._opened_by_polls:
            return True  # beside the probe, not as one
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        self._rejected_count += 1
        return False

    def record_success(self, *, generation: int | None = None, poll: bool = False) -> None:
        """The admitted call succeeded."""
        self._refresh()
        self._success_count += 1
        if not self._is_current(generation):
            return
        state = self._state
        if state is BreakerState.CLOSED:
            if poll:
                self._poll_failures = 0
                return
            self._consecutive_failures = 0
            if self._window is not None:
                self._window.add(self._clock(), failed=False)
        elif state is BreakerState.HALF_OPEN:
            if poll:
                if not self._opened_by_polls:
                    return  # admitted beside the probe: says nothing about the sends
                self._poll_failures = 0
            else:
                self._consecutive_failures = 0
            self._probe_in_flight = False
            self._half_open_successes += 1
            if self._half_open_successes >= self._config.half_open_successes:
                self._transition(
                    BreakerState.CLOSED,
                    f"{self._half_open_successes} probe calls succeeded",
                )
            else:
                self._notify()

    def record_failure(self, *, generation: int | None = None, poll: bool = False) -> None:
        """The admitted call failed in a way that counts against the bot."""
        self._refresh()
        self._failure_count += 1
        if not self._is_current(generation):
            return
        state = self._state
        if state is BreakerState.CLOSED and poll:
            self._poll_failures += 1
            if self._poll_failures >= self._config.failure_threshold:
                self._open(f"{self._poll_failures} consecutive failed polls", by_polls=True)
            return
        if state is BreakerState.HALF_OPEN and poll and not self._opened_by_polls:
            # Admitted beside the probe: the probe slot is the probe's, but Telegram is
            # still failing.
            self._poll_failures += 1
            self._open("a poll failed while half open")
            return
        if state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            if self._consecutive_failures >= self._config.failure_threshold:
                self._open(f"{self._consecutive_failures} consecutive failures")
                return
            if self._window is not None:
                now = self._clock()
                self._window.add(now, failed=True)
                calls, failures = self._window.totals(now)
                rate = self._config.failure_rate
                # A ratio, not failures >= rate * calls: 3/30 >= 0.1 holds, 3 >= 0.1 * 30 does not.
                if (
                    rate is not None
                    and calls >= self._config.rate_minimum_calls
                    and failures / calls >= rate
                ):
                    self._open(
                        f"failure rate {failures}/{calls} over the last "
                        f"{self._config.rate_window_seconds:g} s reached {rate:.0%}"
                    )
        elif state is BreakerState.HALF_OPEN:
            if poll:
                self._poll_failures += 1
            else:
                self._consecutive_failures += 1
            self._probe_in_flight = False
            self._open("a probe call failed while half open")

    def record_ignored(self, *, generation: int | None = None, poll: bool = False) -> None:
        """The admitted call ended without saying anything about the bot's health."""
        self._refresh()
        if poll and not self._opened_by_polls:
            return  # a poll admitted beside the probe holds no probe slot
        if self._is_current(generation) and self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self._notify()

    async def wait_admitting(self, *, poll: bool = False) -> None:
        """Return as soon as :meth:`try_acquire` would admit a call (it is not taken)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._refresh()
            state = self._state
            if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
                break
            if state is BreakerState.HALF_OPEN and (
                not self._probe_in_flight or (poll and not self._opened_by_polls)
            ):
                break
            if self._changed is None:
                self._changed = trio.Event()
            changed = self._changed
            if state is BreakerState.OPEN and self._opened_at is not None:
                with trio.move_on_at(self._opened_at + self._config.open_seconds):
                    await changed.wait()
            else:
                await changed.wait()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def reset(self) -> None:
        """Operator: close the breaker and clear the current episode's counters."""
        self._refresh()
        self._consecutive_failures = 0
        self._poll_failures = 0
        if self._window is not None:
            self._window.clear()
        if self._state is BreakerState.CLOSED:
            return
        self._transition(BreakerState.CLOSED, "reset by an operator")

    def force_open(self) -> None:
        """Operator: refuse every call until :meth:`reset`."""
        self._refresh()
        if self._state is not BreakerState.FORCED_OPEN:
            self._transition(BreakerState.FORCED_OPEN, "forced open by an operator")

    def disable(self) -> None:
        """Operator: admit every call and never open, until :meth:`reset`."""
        self._refresh()
        if self._state is not BreakerState.DISABLED:
            self._transition(BreakerState.DISABLED, "disabled by an operator")

    def restore(self, *, failure_count: int) -> None:
        """Seed the cumulative failure count from a stored snapshot (at start only)."""
        if failure_count < 0:
            raise ValueError(f"failure_count must be >= 0, got {failure_count!r}")
        self._failure_count = failure_count

    def statistics(self) -> BreakerStatistics:
        self._refresh()
        window_calls, window_failures = (
            self._window.totals(self._clock()) if self._window is not None else (0, 0)
        )
        open_now = self._state is BreakerState.OPEN
        return BreakerStatistics(
            state=self._state,
            consecutive_failures=self._consecutive_failures,
            poll_consecutive_failures=self._poll_failures,
            opened_by_polls=self._opened_by_polls,
            failure_count=self._failure_count,
            success_count=self._success_count,
            rejected_count=self._rejected_count,
            opened_at=self._opened_at,
            half_open_at=(
                self._opened_at + self._config.open_seconds
                if open_now and self._opened_at is not None
                else None
            ),
            transitions=self._transitions,
            probe_in_flight=self._probe_in_flight,
            window_calls=window_calls,
            window_failures=window_failures,
            generation=self._generation,
        )

    def _is_current(self, generation: int | None) -> bool:
        if generation is not None and generation != self._generation:
            return False
        # Without a generation, a HALF_OPEN outcome is the probe's only if a probe is out.
        return self._state is not BreakerState.HALF_OPEN or self._probe_in_flight

    def _refresh(self) -> None:
        if self._state is BreakerState.OPEN and self._opened_at is not None:
            due = self._opened_at + self._config.open_seconds
            if self._clock() >= due:
                self._transition(
                    BreakerState.HALF_OPEN,
                    f"open for {self._config.open_seconds:g} s; admitting a probe",
                    at=due,
                )

    def _open(self, reason: str, *, by_polls: bool = False) -> None:
        # An episode keeps who opened it: reopening from HALF_OPEN does not change it.
        if self._state is BreakerState.CLOSED:
            self._opened_by_polls = by_polls
        self._transition(BreakerState.OPEN, reason)

    def _transition(self, state: BreakerState, reason: str, *, at: float | None = None) -> None:
        previous = self._state
        if state not in _MANUAL and (previous, state) not in _AUTOMATIC:
            raise RuntimeError(
                f"The circuit breaker cannot go from {previous.value} to {state.value}; "
                "only reset(), force_open() and disable() may leave any state."
            )
        now = self._clock() if at is None else at
        self._state = state
        self._generation += 1
        self._transitions += 1
        self._probe_in_flight = False
        self._half_open_successes = 0
        if state is BreakerState.OPEN:
            self._opened_at = now
        elif state is not BreakerState.HALF_OPEN:
            self._opened_at = None
        if state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._poll_failures = 0
            if self._window is not None:
                self._window.clear()
        if state is not BreakerState.OPEN and state is not BreakerState.HALF_OPEN:
            self._opened_by_polls = False
        self._notify()
        if self._on_transition is not None:
            self._on_transition(BreakerTransition(previous, state, now, reason))

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
