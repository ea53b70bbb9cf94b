"""CircuitBreaker: exact timing on MockClock, manual controls, and a model-based state machine."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors.breaker import (
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    RollingCounter,
)
from actors.config import BreakerConfig

CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
DISABLED = BreakerState.DISABLED
FORCED_OPEN = BreakerState.FORCED_OPEN


def make(
    config: BreakerConfig | None = None,
) -> tuple[CircuitBreaker, list[BreakerTransition]]:
    log: list[BreakerTransition] = []
    return CircuitBreaker(config or BreakerConfig(), on_transition=log.append), log


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.try_acquire()
        breaker.record_failure()


async def test_opens_after_threshold_consecutive_failures_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, log = make()
    fail(breaker, 4)
    assert breaker.try_acquire()
    breaker.record_success()  # resets the run of failures
    fail(breaker, 4)
    assert breaker.state is CLOSED
    fail(breaker, 1)
    assert breaker.state is OPEN
    assert [(t.previous, t.state) for t in log] == [(CLOSED, OPEN)]
    assert log[0].reason == "5 consecutive failures"
    assert not breaker.try_acquire()
    stats = breaker.statistics()
    assert stats.rejected_count == 1
    assert stats.failure_count == 9
    assert stats.success_count == 1
    assert stats.opened_at == 0
    assert stats.half_open_at == 60


async def test_open_until_exactly_open_seconds(autojump_clock: trio.testing.MockClock) -> None:
    breaker, log = make()
    fail(breaker, 5)
    await trio.sleep(59.999)
    assert breaker.state is OPEN
    assert not breaker.try_acquire()
    await trio.sleep_until(60)
    assert breaker.state is HALF_OPEN
    assert log[-1] == BreakerTransition(OPEN, HALF_OPEN, 60.0, log[-1].reason)
    assert breaker.statistics().half_open_at is None


async def test_half_open_walk_with_ordered_transitions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, log = make()
    fail(breaker, 5)  # OPEN at 0
    await trio.sleep(60)
    assert breaker.try_acquire()  # probe: HALF_OPEN at 60
    breaker.record_failure()  # OPEN again at 60
    assert breaker.statistics().half_open_at == 120
    await trio.sleep(30)
    assert breaker.state is OPEN
    await trio.sleep(30)
    assert breaker.try_acquire()  # HALF_OPEN at 120
    breaker.record_success()
    assert breaker.state is HALF_OPEN  # one of two successes
    await trio.sleep(1)
    assert breaker.try_acquire()
    breaker.record_success()  # CLOSED at 121
    assert breaker.state is CLOSED
    assert [(t.previous, t.state, t.at) for t in log] == [
        (CLOSED, OPEN, 0.0),
        (OPEN, HALF_OPEN, 60.0),
        (HALF_OPEN, OPEN, 60.0),
        (OPEN, HALF_OPEN, 120.0),
        (HALF_OPEN, CLOSED, 121.0),
    ]
    assert breaker.statistics().transitions == 5
    assert breaker.statistics().consecutive_failures == 0


async def test_half_open_admits_one_probe_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, _ = make()
    fail(breaker, 5)
    await trio.sleep(60)
    assert breaker.try_acquire()
    assert not breaker.try_acquire()
    assert not breaker.try_acquire()
    assert breaker.statistics().rejected_count == 2
    breaker.record_ignored()  # a 429 or a cancelled probe frees the slot, decides nothing
    assert breaker.state is HALF_OPEN
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.try_acquire()
    assert not breaker.try_acquire()


async def test_wait_admitting_wakes_exactly_at_half_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, _ = make()
    await trio.sleep(10)
    fail(breaker, 5)
    await breaker.wait_admitting()
    assert trio.current_time() == 70
    assert breaker.try_acquire()
    # The probe is out: the next waiter wakes when its outcome frees the slot.
    woke: list[float] = []

    async def waiter() -> None:
        await breaker.wait_admitting()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(5)
        assert woke == []
        breaker.record_success()
    assert woke == [75]


async def test_wait_admitting_returns_at_once_when_closed_and_on_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, _ = make()
    await breaker.wait_admitting()
    assert trio.current_time() == 0
    breaker.force_open()

    async def operator() -> None:
        await trio.sleep(3)
        breaker.reset()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator)
        await breaker.wait_admitting()
        assert trio.current_time() == 3


async def test_wait_admitting_is_cancellable(autojump_clock: trio.testing.MockClock) -> None:
    breaker, _ = make()
    breaker.force_open()
    with trio.move_on_after(7):
        await breaker.wait_admitting()
    assert trio.current_time() == 7
    assert breaker.state is FORCED_OPEN


async def test_manual_reset_force_open_disable(autojump_clock: trio.testing.MockClock) -> None:
    breaker, log = make()
    fail(breaker, 5)
    breaker.reset()
    assert breaker.state is CLOSED
    assert breaker.statistics().consecutive_failures == 0
    assert breaker.statistics().failure_count == 5  # cumulative survives a reset
    fail(breaker, 4)
    assert breaker.state is CLOSED  # the run restarted from zero

    breaker.force_open()
    assert not breaker.try_acquire()
    await trio.sleep(3600)
    assert breaker.state is FORCED_OPEN  # no timer leaves FORCED_OPEN

    breaker.disable()
    fail(breaker, 50)
    assert breaker.state is DISABLED
    breaker.reset()
    breaker.reset()  # resetting a closed breaker is not an error, and no transition
    assert [(t.previous, t.state) for t in log] == [
        (CLOSED, OPEN),
        (OPEN, CLOSED),
        (CLOSED, FORCED_OPEN),
        (FORCED_OPEN, DISABLED),
        (DISABLED, CLOSED),
    ]
    assert log[1].reason == "reset by an operator"


async def test_failure_rate_needs_minimum_volume(autojump_clock: trio.testing.MockClock) -> None:
    config = BreakerConfig(
        failure_threshold=100, failure_rate=0.5, rate_window_seconds=60, rate_minimum_calls=10
    )
    breaker, log = make(config)
    for _ in range(4):  # 4 of 8 failed: rate reached, volume not
        for ok in (True, False):
            assert breaker.try_acquire()
            breaker.record_success() if ok else breaker.record_failure()
    assert breaker.state is CLOSED
    assert breaker.try_acquire()
    breaker.record_success()  # 9 calls, 4 failures
    assert breaker.try_acquire()
    breaker.record_failure()  # 10 calls, 5 failures: 50%
    assert breaker.state is OPEN
    assert log[0].reason == "failure rate 5/10 over the last 60 s reached 50%"


async def test_failure_rate_forgets_calls_outside_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = BreakerConfig(
        failure_threshold=100, failure_rate=0.5, rate_window_seconds=60, rate_minimum_calls=4
    )
    breaker, _ = make(config)
    fail(breaker, 3)  # at t=0
    await trio.sleep(60)  # those three have left the window exactly now
    assert breaker.statistics().window_calls == 0
    for _ in range(3):
        assert breaker.try_acquire()
        breaker.record_success()
    fail(breaker, 1)  # 1 of 4
    assert breaker.state is CLOSED
    fail(breaker, 1)  # 2 of 5
    fail(breaker, 1)  # 3 of 6: 50%
    assert breaker.state is OPEN


async def test_a_stale_outcome_is_not_taken_for_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, _ = make()
    assert breaker.try_acquire()
    slow_call = breaker.generation  # admitted while CLOSED, still running
    fail(breaker, 5)
    await trio.sleep(60)
    assert breaker.try_acquire()
    probe = breaker.generation
    breaker.record_failure(generation=slow_call)  # the slow call fails long after
    assert breaker.state is HALF_OPEN
    assert breaker.statistics().probe_in_flight
    breaker.record_success(generation=probe)
    assert breaker.statistics().failure_count == 6


def test_illegal_transition_is_a_runtime_error() -> None:
    breaker = CircuitBreaker(BreakerConfig(), clock=lambda: 0.0)
    with pytest.raises(RuntimeError, match="cannot go from closed to half_open") as caught:
        breaker._transition(HALF_OPEN, "a bug")
    # The message says what is allowed instead.
    assert str(caught.value).endswith(
        "only reset(), force_open() and disable() may leave any state."
    )


def test_rolling_counter_rejects_bad_arguments_and_takes_the_smallest_good_ones() -> None:
    for window in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"^window_seconds must be > 0, got "):
            RollingCounter(window)
    with pytest.raises(ValueError, match=r"^buckets must be >= 1, got 0$"):
        RollingCounter(10, buckets=0)
    # Half a second, one bucket: a window as narrow as it gets still counts.
    narrow = RollingCounter(0.5, buckets=1)
    narrow.add(0.0, failed=True)
    assert narrow.totals(0.25) == (1, 1)
    assert narrow.totals(0.5) == (0, 0)


def test_rolling_counter_forgets_every_failure_of_a_bucket() -> None:
    # Several outcomes in one bucket leave the window together, failures included.
    counter = RollingCounter(60, buckets=6)
    for at in (0.0, 1.0, 2.0):
        counter.add(at, failed=True)
    counter.add(3.0, failed=False)
    counter.add(15.0, failed=True)
    assert counter.totals(59.0) == (5, 4)
    assert counter.totals(60.0) == (1, 1)  # the bucket [0, 10) is gone, all four of it
    assert counter.totals(80.0) == (0, 0)


async def test_a_stale_success_is_not_taken_for_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, _ = make(BreakerConfig(half_open_successes=1))
    assert breaker.try_acquire()
    slow_call = breaker.generation  # admitted while CLOSED, still running
    fail(breaker, 5)
    await trio.sleep(60)
    assert breaker.try_acquire()  # the probe
    breaker.record_success(generation=slow_call)  # the slow call succeeds long after
    assert breaker.state is HALF_OPEN  # one success would close it, were it the probe's
    assert not breaker.try_acquire()  # and the probe's slot is still taken


async def test_a_probe_success_short_of_closing_clears_the_failure_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, _ = make(BreakerConfig(half_open_successes=2))
    fail(breaker, 5)
    await trio.sleep(60)
    assert breaker.try_acquire()
    breaker.record_success()
    stats = breaker.statistics()
    assert (stats.state, stats.consecutive_failures) == (HALF_OPEN, 0)
    assert breaker.try_acquire()
    breaker.record_failure()  # the second probe fails: open again, a run of one
    stats = breaker.statistics()
    assert (stats.state, stats.consecutive_failures) == (OPEN, 1)


async def test_opened_at_is_kept_while_half_open_and_cleared_once_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # opened_at is in the admin API's breaker statistics: when this episode began.
    breaker, _ = make(BreakerConfig(half_open_successes=1))
    await trio.sleep(5)
    fail(breaker, 5)
    assert breaker.statistics().opened_at == 5
    await trio.sleep(60)
    assert breaker.state is HALF_OPEN
    assert breaker.statistics().opened_at == 5
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.statistics().opened_at is None
    for leave in (breaker.reset, breaker.force_open, breaker.disable):
        fail(breaker, 5)
        assert breaker.statistics().opened_at is not None
        leave()
        assert breaker.statistics().opened_at is None
        breaker.reset()


async def test_wait_admitting_is_a_checkpoint_even_when_it_need_not_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A loop of wait_admitting() and a quick call must still let other tasks run.
    breaker, _ = make()
    with trio.testing.assert_checkpoints():
        await breaker.wait_admitting()  # CLOSED
    fail(breaker, 5)
    await trio.sleep(60)
    with trio.testing.assert_checkpoints():
        await breaker.wait_admitting()  # HALF_OPEN, the probe slot free


def test_rolling_counter_expires_buckets_at_exact_times() -> None:
    counter = RollingCounter(300, buckets=60)
    counter.add(0.0, failed=True)
    counter.add(4.9, failed=False)
    counter.add(5.0, failed=False)
    assert counter.totals(299.999) == (3, 1)
    assert counter.totals(300.0) == (1, 0)  # the bucket [0, 5) has left the window
    assert counter.totals(305.0) == (0, 0)
    counter.add(10_000.0, failed=True)
    assert counter.totals(10_000.0) == (1, 1)


# --- model-based: the breaker against a small reference model ---------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Model:
    """The breaker's rules, written as plainly as possible."""

    def __init__(self, config: BreakerConfig) -> None:
        self.c = config
        self.state = CLOSED
        self.generation = 0
        self.transitions: list[tuple[BreakerState, BreakerState, float]] = []
        self.consecutive = 0
        self.failures = 0
        self.successes = 0
        self.rejected = 0
        self.opened_at: float | None = None
        self.probe = False
        self.probe_successes = 0
        self.window: list[tuple[int, bool]] = []  # (bucket index, failed)

    def width(self) -> float:
        return self.c.rate_window_seconds / 60

    def go(self, state: BreakerState, at: float) -> None:
        self.transitions.append((self.state, state, at))
        self.state = state
        self.generation += 1
        self.probe = False
        self.probe_successes = 0
        if state is OPEN:
            self.opened_at = at
        elif state is not HALF_OPEN:
            self.opened_at = None
        if state is CLOSED:
            self.consecutive = 0
            self.window = []

    def tick(self, now: float) -> None:
        if self.state is OPEN:
            assert self.opened_at is not None
            due = self.opened_at + self.c.open_seconds
            if now >= due:
                self.go(HALF_OPEN, due)

    def acquire(self, now: float) -> bool:
        self.tick(now)
        if self.state in (CLOSED, DISABLED) or (self.state is HALF_OPEN and not self.probe):
            if self.state is HALF_OPEN:
                self.probe = True
            return True
        self.rejected += 1
        return False

    def current(self, generation: int) -> bool:
        return generation == self.generation

    def success(self, now: float, generation: int) -> None:
        self.tick(now)
        self.successes += 1
        if not self.current(generation):
            return
        if self.state is CLOSED:
            self.consecutive = 0
            self.window.append((math.floor(now / self.width()), False))
        elif self.state is HALF_OPEN:
            self.consecutive = 0
            self.probe = False
            self.probe_successes += 1
            if self.probe_successes >= self.c.half_open_successes:
                self.go(CLOSED, now)

    def failure(self, now: float, generation: int) -> None:
        self.tick(now)
        self.failures += 1
        if not self.current(generation):
            return
        if self.state is CLOSED:
            self.consecutive += 1
            if self.consecutive >= self.c.failure_threshold:
                self.go(OPEN, now)
                return
            if self.c.failure_rate is not None:
                index = math.floor(now / self.width())
                self.window.append((index, True))
                live = [failed for b, failed in self.window if b > index - 60]
                if (
                    len(live) >= self.c.rate_minimum_calls
                    and sum(live) / len(live) >= self.c.failure_rate
                ):
                    self.go(OPEN, now)
        elif self.state is HALF_OPEN:
            self.consecutive += 1
            self.go(OPEN, now)

    def ignored(self, now: float, generation: int) -> None:
        self.tick(now)
        if self.current(generation) and self.state is HALF_OPEN:
            self.probe = False

    def manual(self, now: float, state: BreakerState) -> None:
        self.tick(now)
        if state is CLOSED:
            self.consecutive = 0
            self.window = []
        if self.state is not state:
            self.go(state, now)


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.time = FakeTime()
        self.permits: list[int] = []  # generations of admitted calls without an outcome

    @initialize(
        threshold=st.integers(1, 4),
        open_seconds=st.sampled_from([1.0, 2.5, 10.0]),
        successes=st.integers(1, 3),
        rate=st.sampled_from([None, 0.5, 0.75]),
        minimum=st.integers(1, 6),
    )
    def build(
        self,
        threshold: int,
        open_seconds: float,
        successes: int,
        rate: float | None,
        minimum: int,
    ) -> None:
        config = BreakerConfig(
            failure_threshold=threshold,
            open_seconds=open_seconds,
            half_open_successes=successes,
            failure_rate=rate,
            rate_window_seconds=6.0,
            rate_minimum_calls=minimum,
        )
        self.log: list[BreakerTransition] = []
        self.breaker = CircuitBreaker(config, on_transition=self.log.append, clock=self.time)
        self.model = Model(config)

    @rule()
    def try_acquire(self) -> None:
        admitted = self.breaker.try_acquire()
        assert admitted == self.model.acquire(self.time.now)
        if admitted:
            self.permits.append(self.breaker.generation)

    @precondition(lambda self: bool(self.permits))
    @rule(which=st.integers(0, 10**6), outcome=st.sampled_from(["success", "failure", "ignored"]))
    def finish(self, which: int, outcome: str) -> None:
        generation = self.permits.pop(which % len(self.permits))
        getattr(self.breaker, f"record_{outcome}")(generation=generation)
        getattr(self.model, outcome)(self.time.now, generation)

    @rule(action=st.sampled_from(["reset", "force_open", "disable"]))
    def operator(self, action: str) -> None:
        getattr(self.breaker, action)()
        state = {"reset": CLOSED, "force_open": FORCED_OPEN, "disable": DISABLED}[action]
        self.model.manual(self.time.now, state)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 7.0]))
    def advance(self, seconds: float) -> None:
        self.time.now += seconds

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "breaker"):
            return
        stats = self.breaker.statistics()
        self.model.tick(self.time.now)
        assert stats.state is self.model.state
        assert stats.consecutive_failures == self.model.consecutive
        assert stats.failure_count == self.model.failures
        assert stats.success_count == self.model.successes
        assert stats.rejected_count == self.model.rejected
        assert stats.probe_in_flight == self.model.probe
        assert stats.generation == self.model.generation
        assert [(t.previous, t.state, t.at) for t in self.log] == self.model.transitions
        assert stats.transitions == len(self.log)


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


async def test_every_transition_says_why(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[tuple[str, str, str]] = []
    breaker = CircuitBreaker(
        BreakerConfig(failure_threshold=1, open_seconds=10, half_open_successes=2),
        on_transition=lambda t: seen.append((t.previous.value, t.state.value, t.reason)),
    )
    assert breaker.try_acquire()
    breaker.record_failure()
    await trio.sleep(10)
    assert breaker.try_acquire()  # the probe
    breaker.record_failure()
    await trio.sleep(10)
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_success()
    breaker.force_open()
    breaker.disable()
    breaker.reset()
    reasons = [reason for _, _, reason in seen]
    assert [(a, b) for a, b, _ in seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("closed", "forced_open"),
        ("forced_open", "disabled"),
        ("disabled", "closed"),
    ]
    assert reasons[1] == reasons[3] == "open for 10 s; admitting a probe"
    assert reasons[2] == "a probe call failed while half open"
    assert reasons[4] == "2 probe calls succeeded"
    assert reasons[5:] == [
        "forced open by an operator",
        "disabled by an operator",
        "reset by an operator",
    ]
    assert all(isinstance(reason, str) and reason for reason in reasons)


async def test_statistics_count_the_failure_rate_window_only_when_that_rule_is_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plain = CircuitBreaker(BreakerConfig(failure_threshold=100))
    windowed = CircuitBreaker(
        BreakerConfig(
            failure_threshold=100,
            failure_rate=0.9,
            rate_minimum_calls=100,
            rate_window_seconds=60,
        )
    )
    for breaker in (plain, windowed):
        for failed in (True, False, True):
            assert breaker.try_acquire()
            if failed:
                breaker.record_failure()
            else:
                breaker.record_success()
    assert (plain.statistics().window_calls, plain.statistics().window_failures) == (0, 0)
    stats = windowed.statistics()
    assert (stats.window_calls, stats.window_failures) == (3, 2)
    assert stats.consecutive_failures == 1
    assert (stats.opened_at, stats.half_open_at) == (None, None)


def test_restore_seeds_the_failure_count_and_refuses_a_negative_one() -> None:
    breaker = CircuitBreaker(BreakerConfig())
    breaker.restore(failure_count=0)
    assert breaker.statistics().failure_count == 0
    breaker.restore(failure_count=7)
    assert breaker.statistics().failure_count == 7
    with pytest.raises(ValueError) as caught:
        breaker.restore(failure_count=-1)
    assert str(caught.value) == "failure_count must be >= 0, got -1"


async def test_an_ignored_poll_or_stale_outcome_never_frees_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sends opened the breaker; HALF_OPEN with the probe out.
    breaker, _ = make(BreakerConfig(half_open_successes=1))
    assert breaker.try_acquire()
    slow_call = breaker.generation  # admitted while CLOSED
    breaker.record_failure(generation=slow_call)
    fail(breaker, 4)
    await trio.sleep(60)
    assert breaker.try_acquire()  # the probe
    breaker.record_ignored(poll=True)  # a poll beside the probe, cancelled
    assert breaker.statistics().probe_in_flight
    breaker.record_ignored(generation=slow_call)  # a call of the old episode, cancelled
    assert breaker.statistics().probe_in_flight
    assert not breaker.try_acquire()
    breaker.record_ignored()  # the probe itself, cancelled: its slot is free again
    assert breaker.try_acquire()


async def test_a_poll_waits_for_the_probe_only_when_polls_opened_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sends opened it: a poll is admitted beside their probe, so waiting returns at once.
    breaker, _ = make()
    fail(breaker, 5)
    await trio.sleep(60)
    assert breaker.try_acquire()  # the sends' probe
    with trio.move_on_after(1) as waited:
        await breaker.wait_admitting(poll=True)
    assert not waited.cancelled_caught
    # Polls opened it: a poll is the probe, and waits while another one is out.
    polled, _ = make()
    for _ in range(5):
        assert polled.try_acquire(poll=True)
        polled.record_failure(poll=True)
    assert polled.statistics().opened_by_polls
    await trio.sleep(60)
    assert polled.try_acquire(poll=True)  # the polls' probe
    with trio.move_on_after(1) as waited:
        await polled.wait_admitting(poll=True)
    assert waited.cancelled_caught


def test_the_failure_rate_window_has_sixty_buckets_by_default() -> None:
    # A five-minute window in 5 s buckets: an outcome at 5.0 s counts until exactly 305 s
    # (with another bucket count it would leave at another time).
    counter = RollingCounter(300)
    counter.add(5.0, failed=True)
    assert counter.totals(304.99) == (1, 1)
    assert counter.totals(305.0) == (0, 0)


def fail_polls(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.try_acquire(poll=True)
        breaker.record_failure(poll=True)


async def test_polls_keep_their_own_run_which_a_poll_success_or_a_reset_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, log = make()
    assert breaker.statistics().opened_by_polls is False
    fail_polls(breaker, 4)
    assert breaker.statistics().poll_consecutive_failures == 4
    assert breaker.try_acquire(poll=True)
    breaker.record_success(poll=True)  # the polls' run ends
    assert breaker.statistics().poll_consecutive_failures == 0
    fail_polls(breaker, 4)
    breaker.reset()
    assert breaker.statistics().poll_consecutive_failures == 0
    fail_polls(breaker, 4)
    assert breaker.state is CLOSED
    fail_polls(breaker, 1)
    assert breaker.state is OPEN
    assert log[-1].reason == "5 consecutive failed polls"
    # Opened by polls: after open_seconds a poll is the probe, and its successes close it.
    await trio.sleep(60)
    assert breaker.state is HALF_OPEN
    assert breaker.try_acquire(poll=True)
    breaker.record_success(poll=True)
    probed = breaker.statistics()
    assert (probed.state, probed.poll_consecutive_failures, probed.probe_in_flight) == (
        HALF_OPEN,
        0,
        False,
    )
    assert breaker.try_acquire(poll=True)
    breaker.record_success(poll=True)
    assert breaker.state is CLOSED
    closed = breaker.statistics()
    assert (closed.poll_consecutive_failures, closed.opened_by_polls) == (0, False)


async def test_a_poll_beside_the_sends_probe_is_admitted_and_its_failure_reopens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker, log = make()
    fail(breaker, 5)  # the sends opened it
    opened_at = trio.current_time()
    await trio.sleep(90)
    assert breaker.state is HALF_OPEN
    # Looked at late, it says when it became due, not when it was looked at.
    assert (log[-1].state, log[-1].at) == (HALF_OPEN, opened_at + 60)
    assert breaker.try_acquire()  # the sends' probe
    assert breaker.try_acquire(poll=True)  # a poll beside it, not a second probe
    assert not breaker.try_acquire()
    breaker.record_failure(poll=True)
    assert breaker.state is OPEN
    assert log[-1].reason == "a poll failed while half open"
