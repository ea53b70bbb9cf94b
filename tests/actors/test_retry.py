"""Retry strategies, policies and statistics: pure functions, no clock."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.botapi.errors import ErrorCategory, TelegramError, TransportError
from actors.config import BackoffKind, JitterKind, RetryPolicyConfig
from actors.delivery import PARK_BACKOFF
from actors.retry import (
    BackoffSchedule,
    DecorrelatedJitter,
    EqualJitter,
    ExponentialBackoff,
    FibonacciBackoff,
    FixedBackoff,
    FullJitter,
    LinearBackoff,
    NoJitter,
    ProportionalJitter,
    RetryCounters,
    RetryPolicy,
    RetryStatistics,
    combine,
    forbids_repeat,
)


def test_exact_sequences() -> None:
    assert [ExponentialBackoff(0.5, 30)(n) for n in range(1, 9)] == [
        0.5, 1, 2, 4, 8, 16, 30, 30,
    ]  # fmt: skip
    assert [LinearBackoff(1.5, 5)(n) for n in range(1, 6)] == [1.5, 3, 4.5, 5, 5]
    assert [FixedBackoff(2)(n) for n in (1, 2, 50)] == [2, 2, 2]
    assert [FibonacciBackoff(1, 100)(n) for n in range(1, 12)] == [
        1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89,
    ]  # fmt: skip
    assert FibonacciBackoff(0.5, 10)(7) == 6.5
    assert FibonacciBackoff(0.5, 10)(8) == 10


def test_huge_attempts_do_not_overflow() -> None:
    for attempt in (1_024, 1_025, 10_000, 10**6, 10**30):
        assert ExponentialBackoff(0.5, 30)(attempt) == 30
        assert LinearBackoff(0.5, 30)(attempt) == 30
    # The smallest positive float doubled 1023 times is still tiny; 10,000 times it is not.
    assert ExponentialBackoff(5e-324, 1e308)(1_024) == 5e-324 * 2.0**1023
    for attempt in (10_000, 10**6, 10**30):
        assert ExponentialBackoff(5e-324, 1e308)(attempt) == 1e308
    assert FibonacciBackoff(5e-324, 1e308)(10_000) == 1e308


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        ExponentialBackoff(1, 2)(0)


def test_decorrelated_jitter_grows_from_previous() -> None:
    jitter = DecorrelatedJitter(base=1, cap=100)
    rng = random.Random(7)
    first = jitter(0, None, rng)
    assert 1 <= first <= 3
    for _ in range(200):
        assert 1 <= jitter(0, 10, rng) <= 30
    assert jitter(0, 1000, rng) <= 100


def test_equal_jitter_never_below_half() -> None:
    rng = random.Random(3)
    samples = [EqualJitter()(8, None, rng) for _ in range(1000)]
    assert min(samples) >= 4
    assert max(samples) <= 8


policy_configs = st.builds(
    lambda backoff, jitter, base, spread, retries: RetryPolicyConfig(
        max_retries=retries,
        backoff=backoff,
        jitter=jitter,
        base_delay=base,
        max_delay=base + spread,
    ),
    st.sampled_from(BackoffKind),
    st.sampled_from(JitterKind),
    st.floats(0, 100, allow_nan=False),
    st.floats(1e-3, 1000, allow_nan=False),
    st.integers(0, 100),
)


@settings(max_examples=300, deadline=None)
@given(
    config=policy_configs,
    attempt=st.integers(1, 10_000),
    previous=st.none() | st.floats(0, 1e6, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_every_delay_is_within_zero_and_max_delay(
    config: RetryPolicyConfig, attempt: int, previous: float | None, seed: int
) -> None:
    policy = RetryPolicy.from_config(config)
    delay = policy.delay(attempt, previous, random.Random(seed))
    assert 0 <= delay <= config.max_delay


@pytest.mark.parametrize("backoff", list(BackoffKind))
@pytest.mark.parametrize("jitter", list(JitterKind))
def test_whole_range_of_attempts_for_every_strategy(
    backoff: BackoffKind, jitter: JitterKind
) -> None:
    policy = RetryPolicy.from_config(
        RetryPolicyConfig(
            max_retries=3, backoff=backoff, jitter=jitter, base_delay=0.5, max_delay=30.0
        )
    )
    rng = random.Random(1)
    previous: float | None = None
    for attempt in range(1, 10_001, 7):
        previous = policy.delay(attempt, previous, rng)
        assert 0 <= previous <= 30


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 8])
def test_full_jitter_mean_is_half_the_backoff(attempt: int) -> None:
    # 20,000 uniform samples on [0, d]: the mean's standard error is d / sqrt(12 * 20000)
    # ~= 0.002 d, so a 2% tolerance is ~10 standard errors: it fails only on a real bias.
    policy = RetryPolicy(
        max_retries=10, backoff=ExponentialBackoff(0.5, 10), jitter=FullJitter(), max_delay=10
    )
    rng = random.Random(2024)
    expected = min(10, 0.5 * 2 ** (attempt - 1)) / 2
    mean = statistics.fmean(policy.delay(attempt, None, rng) for _ in range(20_000))
    assert mean == pytest.approx(expected, rel=0.02)


def test_from_config_picks_the_configured_strategies() -> None:
    config = RetryPolicyConfig(
        max_retries=4,
        backoff=BackoffKind.LINEAR,
        jitter=JitterKind.NONE,
        base_delay=2,
        max_delay=7,
    )
    policy = RetryPolicy.from_config(config)
    assert policy.max_retries == 4
    assert [policy.delay(n, None, random.Random(0)) for n in (1, 2, 3, 4)] == [2, 4, 6, 7]
    assert policy.backoff == LinearBackoff(2, 7)
    assert policy.jitter == NoJitter()


def test_counters_and_recovery_rate() -> None:
    counters = RetryCounters()
    assert counters.statistics().recovery_rate == 1.0
    counters.record_call()
    counters.record_attempt()
    counters.record_retry(ErrorCategory.RATE_LIMIT)
    counters.record_attempt()
    counters.record_recovered()
    counters.record_call()
    counters.record_attempt()
    counters.record_retry(ErrorCategory.TRANSIENT_NETWORK)
    counters.record_attempt()
    counters.record_retry(ErrorCategory.TRANSIENT_NETWORK)
    counters.record_attempt()
    counters.record_exhausted()
    counters.record_call()
    counters.record_attempt()
    counters.record_uncertain()
    stats = counters.statistics()
    assert stats == RetryStatistics(
        calls=3,
        attempts=6,
        retries=3,
        retries_by_category={"rate_limit": 1, "transient_network": 2, "unknown": 0},
        recovered=1,
        exhausted=1,
        uncertain=1,
        recovery_rate=0.5,
    )
    counters.reset()
    assert counters.statistics().retries == 0
    assert counters.statistics().retries_by_category["transient_network"] == 0


def test_combine_sums_a_fleet() -> None:
    a, b = RetryCounters(), RetryCounters()
    for _ in range(3):
        a.record_retry(ErrorCategory.UNKNOWN)
        a.record_recovered()
    b.record_retry(ErrorCategory.RATE_LIMIT)
    b.record_exhausted()
    total = combine([a.statistics(), b.statistics()])
    assert total.retries == 4
    assert total.retries_by_category == {"rate_limit": 1, "transient_network": 0, "unknown": 3}
    assert total.recovery_rate == 0.75
    assert combine([]).recovery_rate == 1.0


# --- the schedule shared by retries and supervisor restarts ---------------------------------


def test_proportional_jitter_scales_by_a_factor_within_its_spread() -> None:
    jitter = ProportionalJitter(0.2)
    rng, mirror = random.Random(7), random.Random(7)
    for _ in range(200):
        delay = jitter(10.0, None, rng)
        assert delay == 10.0 * (1 + mirror.uniform(-0.2, 0.2))
        assert 8.0 <= delay <= 12.0


def test_proportional_jitter_of_zero_draws_nothing() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    assert ProportionalJitter(0.0)(4.0, None, rng) == 4.0
    assert rng.getstate() == state
    with pytest.raises(ValueError, match=r"spread must be a number from 0 to 1, got 1\.5"):
        ProportionalJitter(1.5)


def test_a_schedule_caps_its_jittered_delays() -> None:
    schedule = BackoffSchedule(ExponentialBackoff(1.0, 8.0), ProportionalJitter(0.5), 8.0)
    rng = random.Random(11)
    delays = [schedule.delay(n, None, rng) for n in range(1, 200)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert max(delays) == 8.0  # 8 × up to 1.5 is capped at the ceiling
    unjittered = BackoffSchedule(ExponentialBackoff(1.0, 8.0), NoJitter(), 8.0)
    assert [unjittered.delay(n, None, rng) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_a_policy_delays_as_its_schedule_does() -> None:
    policy = RetryPolicy(2, ExponentialBackoff(0.5, 4.0), FullJitter(), max_delay=3.0)
    assert policy.schedule == BackoffSchedule(ExponentialBackoff(0.5, 4.0), FullJitter(), 3.0)
    a, b = random.Random(5), random.Random(5)
    for attempt in range(1, 10):
        assert policy.delay(attempt, None, a) == policy.schedule.delay(attempt, None, b)


def test_a_parked_reply_waits_one_two_four_seconds_and_at_most_thirty() -> None:
    assert [PARK_BACKOFF(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize(
    ("error", "idempotent", "retry_uncertain", "forbidden"),
    [
        # The request went out: a message may have been sent; repeating could send it twice.
        (
            TransportError("read timeout", method="sendMessage", request_sent=True),
            False,
            False,
            True,
        ),
        # ...unless the operator accepts duplicates, or the method is a read.
        (
            TransportError("read timeout", method="sendMessage", request_sent=True),
            False,
            True,
            False,
        ),
        (TransportError("read timeout", method="getChat", request_sent=True), True, False, False),
        # Nothing was sent (a connect error), or the server answered: safe to repeat.
        (TransportError("refused", method="sendMessage", request_sent=False), False, False, False),
        (
            TelegramError(method="sendMessage", error_code=502, description="Bad Gateway"),
            False,
            False,
            False,
        ),
    ],
)
def test_only_an_uncertain_non_idempotent_send_is_never_repeated(
    error: Exception, idempotent: bool, retry_uncertain: bool, forbidden: bool
) -> None:
    assert isinstance(error, (TransportError, TelegramError))
    assert (
        forbids_repeat(error, idempotent=idempotent, retry_uncertain_sends=retry_uncertain)
        is forbidden
    )


# --- what the mutation run of this module showed untested -----------------------------------


@pytest.mark.parametrize(
    ("build", "field", "shown"),
    [
        (lambda: ExponentialBackoff(-1, 5), "ExponentialBackoff.base", "-1"),
        (lambda: ExponentialBackoff(1, math.inf), "ExponentialBackoff.cap", "inf"),
        (lambda: LinearBackoff(math.nan, 5), "LinearBackoff.base", "nan"),
        (lambda: LinearBackoff(1, -0.5), "LinearBackoff.cap", "-0.5"),
        (lambda: FixedBackoff(math.inf), "FixedBackoff.delay", "inf"),
        (lambda: FibonacciBackoff(-2, 5), "FibonacciBackoff.base", "-2"),
        (lambda: FibonacciBackoff(1, math.inf), "FibonacciBackoff.cap", "inf"),
        (lambda: DecorrelatedJitter(math.inf, 5), "DecorrelatedJitter.base", "inf"),
        (lambda: DecorrelatedJitter(1, -3), "DecorrelatedJitter.cap", "-3"),
        (
            lambda: BackoffSchedule(FixedBackoff(1), NoJitter(), math.inf),
            "BackoffSchedule.max_delay",
            "inf",
        ),
        (
            lambda: RetryPolicy(1, FixedBackoff(1), NoJitter(), max_delay=-1),
            "RetryPolicy.max_delay",
            "-1",
        ),
    ],
)
def test_a_bad_delay_is_refused_naming_the_class_and_the_field(
    build: Callable[[], object], field: str, shown: str
) -> None:
    with pytest.raises(ValueError) as caught:
        build()
    assert str(caught.value) == f"{field} must be a finite number >= 0, got {shown}"


def test_a_negative_retry_count_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        RetryPolicy(-1, FixedBackoff(1), NoJitter(), max_delay=1)
    assert str(caught.value) == "max_retries must be >= 0, got -1"


def test_the_edges_of_the_good_values_are_accepted() -> None:
    assert ExponentialBackoff(0, 0)(3) == 0
    assert FixedBackoff(0)(1) == 0
    assert RetryPolicy(0, FixedBackoff(0), NoJitter(), max_delay=0).max_retries == 0
    assert ProportionalJitter(1.0)(4.0, None, random.Random(1)) <= 8.0


def test_a_zero_base_never_waits_and_a_cap_of_one_second_is_a_cap() -> None:
    for backoff in (ExponentialBackoff(0, 5), LinearBackoff(0, 5), FibonacciBackoff(0, 5)):
        assert [backoff(n) for n in (1, 2, 3)] == [0, 0, 0]
    assert [ExponentialBackoff(0.5, 1)(n) for n in (1, 2, 3)] == [0.5, 1, 1]
    assert [FibonacciBackoff(0.5, 1)(n) for n in (1, 2, 3, 4)] == [0.5, 0.5, 1, 1]


def test_the_attempt_that_reaches_the_cap_waits_the_cap() -> None:
    # cap / base is 11 and log2(cap / base) is 1 in floating point, while base × 11 and
    # base × 2 round just below the cap: the attempt where the cap is reached waits the cap.
    assert LinearBackoff(0.001, 0.011000000000000001)(11) == 0.011000000000000001
    assert ExponentialBackoff(0.001, 0.0020000000000000005)(2) == 0.0020000000000000005


def test_a_linear_backoff_of_a_huge_attempt_neither_overflows_nor_loses_its_scale() -> None:
    # Past 2**2100 attempts, or where cap / base overflows, the cap applies without
    # multiplying out a number a float cannot hold.
    assert LinearBackoff(5e-324, 1e308)(2**2100) == 1e308
    assert LinearBackoff(2, 1e308)(2**1100) == 1e308
    # Below the cap, an attempt too large for a float's 63-bit mantissa still scales right.
    assert LinearBackoff(5e-324, 1e308)(10**30) == pytest.approx(10**30 * 5e-324, rel=1e-12, abs=0)


def test_jitters_reach_across_their_whole_range() -> None:
    rng = random.Random(3)
    equal = [EqualJitter()(8, None, rng) for _ in range(1000)]
    assert min(equal) < 4.1  # from half the delay…
    assert max(equal) > 7.9  # …to all of it
    assert all(EqualJitter()(1.0, None, rng) <= 1.0 for _ in range(1000))
    decorrelated = DecorrelatedJitter(base=1, cap=100)
    grown = [decorrelated(0, 10, rng) for _ in range(1000)]
    assert max(grown) > 29  # up to 3 × the previous delay
    # A policy and its schedule hand the previous delay on to the jitter.
    policy = RetryPolicy.from_config(
        RetryPolicyConfig(
            max_retries=5, jitter=JitterKind.DECORRELATED, base_delay=1, max_delay=100
        )
    )
    assert max(policy.delay(2, 10, rng) for _ in range(1000)) > 29


BACKOFFS = {
    BackoffKind.EXPONENTIAL: ExponentialBackoff(2, 7),
    BackoffKind.LINEAR: LinearBackoff(2, 7),
    BackoffKind.FIXED: FixedBackoff(2),
    BackoffKind.FIBONACCI: FibonacciBackoff(2, 7),
}
JITTERS = {
    JitterKind.NONE: NoJitter(),
    JitterKind.FULL: FullJitter(),
    JitterKind.EQUAL: EqualJitter(),
    JitterKind.DECORRELATED: DecorrelatedJitter(2, 7),
}


@pytest.mark.parametrize("backoff", list(BackoffKind))
@pytest.mark.parametrize("jitter", list(JitterKind))
def test_from_config_builds_each_kind_it_names(backoff: BackoffKind, jitter: JitterKind) -> None:
    policy = RetryPolicy.from_config(
        RetryPolicyConfig(max_retries=1, backoff=backoff, jitter=jitter, base_delay=2, max_delay=7)
    )
    assert (policy.backoff, policy.jitter) == (BACKOFFS[backoff], JITTERS[jitter])


def test_every_counter_counts_every_time_and_a_fleet_sums_them_all() -> None:
    a, b = RetryCounters(), RetryCounters()
    for counters, times in ((a, 2), (b, 3)):
        for _ in range(times):
            counters.record_call()
            counters.record_attempt()
            counters.record_attempt()
            counters.record_retry(ErrorCategory.TRANSIENT_NETWORK)
            counters.record_exhausted()
            counters.record_uncertain()
        counters.record_recovered()
    assert (a.statistics().exhausted, a.statistics().uncertain) == (2, 2)
    assert combine([a.statistics(), b.statistics()]) == RetryStatistics(
        calls=5,
        attempts=10,
        retries=5,
        retries_by_category={"rate_limit": 0, "transient_network": 5, "unknown": 0},
        recovered=2,
        exhausted=5,
        uncertain=5,
        recovery_rate=2 / 7,
    )


def test_restore_seeds_the_retry_count_and_refuses_a_negative_one() -> None:
    counters = RetryCounters()
    counters.restore(retries=0)
    assert counters.statistics().retries == 0
    counters.restore(retries=41)
    counters.record_retry(ErrorCategory.UNKNOWN)
    assert counters.statistics().retries == 42
    with pytest.raises(ValueError) as caught:
        counters.restore(retries=-1)
    assert str(caught.value) == "retries must be >= 0, got -1"
