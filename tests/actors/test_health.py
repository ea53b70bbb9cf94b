"""HealthTracker: every status threshold, window expiry at exact times, restore, rows."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.botapi.errors import ErrorCategory
from actors.breaker import BreakerState, CircuitBreaker
from actors.config import BreakerConfig, HealthConfig
from actors.health import BotStatus, HealthTracker, health_row
from actors.retry import RetryCounters
from storage.rows import HealthRow

CLOSED = BreakerState.CLOSED
TOKEN = "123456789:AAEhBP0av28bM4Nq2mY9sGkPmQ4DkX0aBcD"


class WallClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker(**overrides: float) -> HealthTracker:
    return HealthTracker(HealthConfig(**overrides), wall_clock=WallClock())  # type: ignore[arg-type]


def outcomes(health: HealthTracker, successes: int, failures: int) -> None:
    for _ in range(successes):
        health.record_success(0.1)
    for _ in range(failures):
        health.record_failure("boom", 0.1)


async def test_healthy_until_a_threshold_is_crossed(autojump_clock: trio.testing.MockClock) -> None:
    health = tracker()
    assert health.status(CLOSED) is BotStatus.HEALTHY
    outcomes(health, successes=9, failures=1)  # 10% over the minimum volume of 10
    assert health.status(CLOSED) is BotStatus.DEGRADED


async def test_error_rate_needs_the_minimum_volume(autojump_clock: trio.testing.MockClock) -> None:
    health = tracker(degraded_consecutive_failures=10, unhealthy_consecutive_failures=10)
    outcomes(health, successes=5, failures=4)  # 44%, but only 9 calls
    assert health.status(CLOSED) is BotStatus.HEALTHY
    health.record_success(0.1)  # 10 calls: 40% >= 10%
    assert health.status(CLOSED) is BotStatus.DEGRADED
    outcomes(health, successes=0, failures=2)  # 6 of 12 = 50%
    assert health.status(CLOSED) is BotStatus.UNHEALTHY


async def test_consecutive_failures_thresholds(autojump_clock: trio.testing.MockClock) -> None:
    health = tracker(minimum_volume=1000)
    outcomes(health, successes=0, failures=2)
    assert health.status(CLOSED) is BotStatus.HEALTHY
    outcomes(health, successes=0, failures=1)
    assert health.status(CLOSED) is BotStatus.DEGRADED
    outcomes(health, successes=0, failures=2)
    assert health.status(CLOSED) is BotStatus.UNHEALTHY
    health.record_success(0.1)
    assert health.status(CLOSED) is BotStatus.HEALTHY
    assert health.statistics().consecutive_failures == 0


async def test_breaker_state_decides_too(autojump_clock: trio.testing.MockClock) -> None:
    health = tracker()
    assert health.status(BreakerState.OPEN) is BotStatus.UNHEALTHY
    assert health.status(BreakerState.FORCED_OPEN) is BotStatus.UNHEALTHY
    assert health.status(BreakerState.HALF_OPEN) is BotStatus.DEGRADED
    assert health.status(BreakerState.DISABLED) is BotStatus.HEALTHY


async def test_slow_responses_degrade(autojump_clock: trio.testing.MockClock) -> None:
    health = tracker(slow_response_ms=2000, ema_alpha=0.5)
    health.record_success(1.0)
    health.record_success(3.0)  # EMA 2000 ms: not above
    assert health.statistics().ema_latency_ms == 2000
    assert health.status(CLOSED) is BotStatus.HEALTHY
    health.record_success(3.0)  # 2500 ms
    assert health.status(CLOSED) is BotStatus.DEGRADED
    health.record_success(None)  # a long poll: not a latency sample
    assert health.statistics().ema_latency_ms == 2500
    health.record_success(0.5)  # 1500 ms
    assert health.status(CLOSED) is BotStatus.HEALTHY


async def test_the_latency_average_weighs_a_new_sample_by_alpha(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # α = 0.2 (the default): a new sample moves the average a fifth of the way towards it,
    # so one slow answer does not make the bot look slow.
    health = tracker()
    health.record_success(1.0)
    assert health.statistics().ema_latency_ms == 1000
    health.record_success(2.0)
    assert health.statistics().ema_latency_ms == pytest.approx(1200)
    health.record_success(0.2)
    assert health.statistics().ema_latency_ms == pytest.approx(1000)
    # α = 0.9 follows the newest sample closely.
    quick = tracker(ema_alpha=0.9)
    quick.record_success(1.0)
    quick.record_success(2.0)
    assert quick.statistics().ema_latency_ms == pytest.approx(1900)


async def test_suspension_wins_until_resumed(autojump_clock: trio.testing.MockClock) -> None:
    health = tracker()
    health.suspend(f"getMe failed: 401 Unauthorized for bot{TOKEN}")
    assert health.status(CLOSED) is BotStatus.SUSPENDED
    assert health.status(BreakerState.OPEN) is BotStatus.SUSPENDED
    assert TOKEN not in (health.suspended_reason or "")
    assert "123456789:…" in (health.suspended_reason or "")
    health.resume()
    assert health.status(CLOSED) is BotStatus.HEALTHY
    assert health.suspended_reason is None


async def test_window_forgets_outcomes_exactly_after_window_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    health = tracker(window_seconds=300, minimum_volume=1, degraded_consecutive_failures=5)
    health.record_failure("boom", None)  # at t=0
    health.record_success(0.1)  # at t=0: 50% of 2
    assert health.status(CLOSED) is BotStatus.UNHEALTHY
    await trio.sleep_until(299.999)
    assert health.statistics().window_calls == 2
    assert health.status(CLOSED) is BotStatus.UNHEALTHY
    await trio.sleep_until(300)
    stats = health.statistics()
    assert (stats.window_calls, stats.window_failures, stats.error_rate) == (0, 0, 0.0)
    assert health.status(CLOSED) is BotStatus.HEALTHY
    assert stats.failed_requests == 1  # cumulative counters stay


async def test_throttles_and_chat_errors_are_not_bot_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    health = tracker(minimum_volume=1)
    for _ in range(20):
        health.record_throttled()
        health.record_chat_error(-100)
    stats = health.statistics()
    assert health.status(CLOSED) is BotStatus.HEALTHY
    assert (stats.total_requests, stats.throttled, stats.chat_errors, stats.failed_requests) == (
        40, 20, 20, 0,
    )  # fmt: skip
    assert stats.window_calls == 20  # chat errors were answered calls; 429s are not counted
    assert stats.error_rate == 0


async def test_last_error_is_redacted_and_timestamps_come_from_the_wall_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wall = WallClock()
    health = HealthTracker(HealthConfig(), wall_clock=wall)
    health.record_success(0.05)
    wall.now += 30
    health.record_failure(f"POST https://api.telegram.org/bot{TOKEN}/sendMessage: 502", 0.2)
    stats = health.statistics()
    assert stats.last_success_at == 1_700_000_000.0
    assert stats.last_failure_at == 1_700_000_030.0
    assert stats.last_error == "POST https://api.telegram.org/bot123456789:…/sendMessage: 502"


async def test_row_and_restore_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    health = tracker()
    outcomes(health, successes=7, failures=2)
    health.record_throttled()
    health.record_chat_error(5)
    breaker = CircuitBreaker(BreakerConfig())
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_failure()
    counters = RetryCounters()
    counters.record_retry(ErrorCategory.TRANSIENT_NETWORK)
    row = health_row(
        1001,
        1_700_000_123.0,
        health.status(breaker.state),
        health.statistics(),
        breaker.statistics(),
        counters.statistics(),
    )
    assert row == HealthRow(
        user_id=1001,
        recorded_at=1_700_000_123.0,
        status="degraded",  # 2 of 10 window calls failed: 20%
        total_requests=11,
        successful_requests=7,
        failed_requests=2,
        error_rate=0.2,
        avg_response_time_ms=row.avg_response_time_ms,
        consecutive_failures=2,
        circuit_state="closed",
        circuit_failure_count=2,
        retry_attempts=1,
        rate_limited_count=1,
        last_success_at=1_700_000_000.0,
        last_failure_at=1_700_000_000.0,
        last_error="boom",
    )
    assert abs(row.avg_response_time_ms - 100) < 1e-9

    fresh = tracker()
    fresh.restore(row)
    stats = fresh.statistics()
    assert (
        stats.total_requests,
        stats.successful_requests,
        stats.failed_requests,
        stats.throttled,
        stats.chat_errors,
    ) == (
        11, 7, 2, 1, 1,
    )  # fmt: skip
    assert stats.ema_latency_ms == row.avg_response_time_ms
    assert stats.last_error == "boom"
    assert stats.window_calls == 0  # the recent past is not restored
    assert stats.consecutive_failures == 2  # but a run of failures is
    assert fresh.status(CLOSED) is BotStatus.HEALTHY  # below 3 in a row


async def test_a_failing_bot_is_still_unhealthy_after_a_restore(
    autojump_clock: trio.testing.MockClock,
) -> None:
    health = tracker()
    outcomes(health, successes=0, failures=6)
    before = health.status(CLOSED)
    row = health_row(
        1001,
        1_700_000_000.0,
        before,
        health.statistics(),
        CircuitBreaker(BreakerConfig()).statistics(),
        RetryCounters().statistics(),
    )
    fresh = tracker()
    fresh.restore(row)
    assert before is fresh.status(CLOSED) is BotStatus.UNHEALTHY
    fresh.record_success(0.1)
    assert fresh.status(CLOSED) is BotStatus.HEALTHY


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("success"), st.sampled_from([None, 0.1, 3.0])),
        st.tuples(st.just("failure"), st.sampled_from([None, 0.1])),
        st.tuples(st.just("chat_error"), st.none()),
        st.tuples(st.just("throttled"), st.none()),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 4.9, 5.0, 60.0, 299.0, 301.0])),
        st.tuples(st.just("breaker"), st.sampled_from(list(BreakerState))),
        st.tuples(st.just("suspend"), st.none()),
        st.tuples(st.just("resume"), st.none()),
    ),
    max_size=40,
)


def _apply(health: HealthTracker, clock: FakeClock, op: tuple[str, object]) -> None:
    kind, arg = op
    if kind == "success":
        health.record_success(arg)  # type: ignore[arg-type]
    elif kind == "failure":
        health.record_failure("boom", arg)  # type: ignore[arg-type]
    elif kind == "chat_error":
        health.record_chat_error(5)
    elif kind == "throttled":
        health.record_throttled()
    elif kind == "wait":
        clock.now += arg  # type: ignore[operator]
    elif kind == "suspend":
        health.suspend("bad token")
    elif kind == "resume":
        health.resume()


@settings(max_examples=200, deadline=None)
@given(_OPS)
def test_a_status_asked_often_is_the_status_asked_once(ops: list[tuple[str, object]]) -> None:
    """A quiet bot's status is remembered between outcomes: asking after every step must give
    what a tracker asked only at the end gives, however time and the breaker moved."""
    config = HealthConfig(window_seconds=300.0, minimum_volume=2, slow_response_ms=2000.0)
    watched_clock = FakeClock()
    watched = HealthTracker(config, wall_clock=WallClock(), clock=watched_clock)
    breaker = CLOSED
    for step, op in enumerate(ops):
        _apply(watched, watched_clock, op)
        if op[0] == "breaker":
            breaker = op[1]  # type: ignore[assignment]
        fresh_clock = FakeClock()
        fresh = HealthTracker(config, wall_clock=WallClock(), clock=fresh_clock)
        for earlier in ops[: step + 1]:
            _apply(fresh, fresh_clock, earlier)
        assert watched.status(breaker) is fresh.status(breaker)
