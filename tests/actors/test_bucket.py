"""The one token bucket core: exact grant times with no clock inside."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import TokenBucketCore


def test_a_burst_then_one_token_per_interval_at_exact_times() -> None:
    bucket = TokenBucketCore(rate=2, burst=3)
    assert [bucket.try_take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    # Empty: the next token is half a second away, and asking takes nothing.
    assert bucket.try_take(0.0) == 0.5
    assert bucket.try_take(0.2) == pytest.approx(0.3)
    assert bucket.try_take(0.5) == 0.0
    assert bucket.ready_at() == 1.0
    # Ten idle seconds refill it to the burst, no further.
    assert bucket.available(11.0) == 3
    assert [bucket.try_take(11.0) for _ in range(4)][-1] == 0.5


def test_the_25th_token_of_a_burst_is_at_zero_not_at_float_noise() -> None:
    bucket = TokenBucketCore(rate=25, burst=25)
    for _ in range(25):
        assert bucket.try_take(0.0) == 0.0
    assert bucket.ready_at() == 0.04


def test_a_token_given_back_is_available_again() -> None:
    bucket = TokenBucketCore(rate=1, burst=1)
    assert bucket.try_take(5.0) == 0.0
    assert bucket.try_take(5.0) == 1.0
    bucket.give_back()
    assert bucket.try_take(5.0) == 0.0


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [
        (0, 1, "rate must be a finite number > 0, got 0"),
        (float("inf"), 1, "rate must be a finite number > 0, got inf"),
        (1, 0, "burst must be a whole number >= 1, got 0"),
        (1, 1.5, "burst must be a whole number >= 1, got 1.5"),
    ],
)
def test_the_shape_is_validated(rate: float, burst: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenBucketCore(rate, burst)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=1_000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200),
)
def test_never_more_than_rate_times_t_plus_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucketCore(rate, burst)
    now = 0.0
    granted: list[float] = []
    for gap in gaps:
        now += gap
        wait = bucket.try_take(now)
        if wait == 0.0:
            granted.append(now)
        else:
            # The wait it names ends when a token is there, and nothing was taken meanwhile.
            assert wait > 0
            assert now + wait == pytest.approx(bucket.ready_at(), rel=1e-12, abs=1e-12)
            now = bucket.ready_at()
            assert bucket.try_take(now) == 0.0
            granted.append(now)
    span = granted[-1] - granted[0] if granted else 0.0
    assert len(granted) <= rate * span + burst + 1e-9


def test_a_fresh_bucket_is_full_and_ready_now() -> None:
    bucket = TokenBucketCore(rate=2, burst=4)
    assert bucket.full_at() == -math.inf
    assert bucket.ready_at() == -math.inf
    assert bucket.available(0.0) == 4


def test_full_at_ready_at_and_available_as_tokens_are_taken() -> None:
    bucket = TokenBucketCore(rate=2, burst=4)
    for _ in range(2):
        bucket.take(10.0)
    # Two tokens out, each refilled in half a second: full again at 11, a token ready now.
    assert bucket.full_at() == 11.0
    assert bucket.ready_at() == -math.inf
    assert bucket.available(10.0) == 2
    assert bucket.available(10.5) == 3
    assert bucket.available(12.0) == 4
    bucket.take(10.0)  # the last token but one: still ready now
    assert bucket.ready_at() == -math.inf
    bucket.take(10.0)  # empty: the next one comes back half a second later
    assert bucket.ready_at() == 10.5
    assert bucket.available(10.0) == 0


def test_a_token_taken_while_owed_is_owed_until_its_time() -> None:
    # take() is for a caller that waits its turn after taking: the debt moves ready_at on.
    bucket = TokenBucketCore(rate=1, burst=2)
    for _ in range(3):
        bucket.take(0.0)
    assert (bucket.ready_at(), bucket.full_at()) == (2.0, 3.0)
    bucket.give_back()
    assert (bucket.ready_at(), bucket.full_at()) == (1.0, 2.0)
    # After the bucket was full again, a take starts over from that moment.
    bucket.take(7.0)
    assert (bucket.ready_at(), bucket.full_at()) == (-math.inf, 8.0)


def test_a_bucket_refilled_after_a_pause_starts_counting_from_the_new_grant() -> None:
    bucket = TokenBucketCore(rate=2, burst=1)
    assert bucket.try_take(0.0) == 0.0
    assert bucket.try_take(0.5) == 0.0  # exactly when the token is back
    assert bucket.try_take(0.9) == pytest.approx(0.1)
    assert bucket.try_take(1.2) == 0.0  # after a pause: full since 1.0
    assert bucket.try_take(1.2) == 0.5


@pytest.mark.parametrize("method", ["take", "try_take"])
def test_steady_grants_fall_on_exact_multiples_of_the_interval(method: str) -> None:
    # A caller taking each token the moment it is back keeps the anchor where it was: the
    # 1000th grant is at 1000 × 0.1 exactly, not at a sum of 1000 float steps.
    bucket = TokenBucketCore(rate=10, burst=1)
    grant = getattr(bucket, method)
    grant(0.0)
    for _ in range(1000):
        grant(bucket.full_at())
    assert bucket.full_at() == 1001 * 0.1
    assert bucket.ready_at() == bucket.full_at()  # burst 1: the next token is the last
