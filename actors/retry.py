"""Retry strategies, per-category retry policies and retry statistics.

Strategies are small frozen callables with no clock inside, in the style of tenacity's
``wait`` module: a *backoff* maps the 1-based retry number to an un-jittered delay, a *jitter*
spreads that delay using an injected ``random.Random``, and a :class:`BackoffSchedule` composes
one of each with a ceiling. A :class:`RetryPolicy` is a schedule with a retry budget; the
supervisor's restart delays are a schedule too, so botvisor has one backoff family. The callers
do the sleeping, on Trio's clock, so every delay is testable on a ``MockClock``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from actors.botapi.errors import BotApiError, ErrorCategory, TransportError
from actors.config import BackoffKind, JitterKind, RetryConfig, RetryPolicyConfig

__all__ = [
    "Backoff",
    "BackoffSchedule",
    "DecorrelatedJitter",
    "EqualJitter",
    "ExponentialBackoff",
    "FibonacciBackoff",
    "FixedBackoff",
    "FullJitter",
    "Jitter",
    "LinearBackoff",
    "NoJitter",
    "ProportionalJitter",
    "RetryCounters",
    "RetryPolicy",
    "RetryStatistics",
    "combine",
    "forbids_repeat",
]

# Categories whose retries are counted by category (the others are never retried).
RETRYABLE_CATEGORIES: tuple[ErrorCategory, ...] = tuple(c for c in ErrorCategory if c.is_retryable)


class Backoff(Protocol):
    def __call__(self, attempt: int) -> float: ...


class Jitter(Protocol):
    def __call__(self, delay: float, previous: float | None, rng: random.Random) -> float: ...


# Past this many doublings any positive float delay exceeds any float cap (2**-1074 * 2**2100
# > 2**1024), so the cap applies without computing a number that would overflow.
_MAX_DOUBLINGS = 2100
_HUGE = 2**_MAX_DOUBLINGS


def _check_delays(name: str, **values: float) -> None:
    for key, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}.{key} must be a finite number >= 0, got {value!r}")


def _log2_ratio(cap: float, base: float) -> float:
    """``log2(cap / base)`` for positive finite floats, without overflowing."""
    return math.log2(cap) - math.log2(base)


def _times(base: float, n: int) -> float:
    """``base * n`` where the product is finite but ``n`` may be too large for a float."""
    shift = max(0, n.bit_length() - 63)
    return math.ldexp(base * (n >> shift), shift)


def _check_attempt(attempt: int) -> None:
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1 (the first retry is attempt 1), got {attempt!r}")


@dataclass(frozen=True)
class ExponentialBackoff:
    """``min(cap, base * 2 ** (attempt - 1))``, without overflow for any attempt."""

    base: float
    cap: float

    def __post_init__(self) -> None:
        _check_delays("ExponentialBackoff", base=self.base, cap=self.cap)

    def __call__(self, attempt: int) -> float:
        _check_attempt(attempt)
        if self.base == 0 or self.cap == 0:
            return 0.0
        exponent = attempt - 1
        # Compare exponents before multiplying: 2.0 ** 1024 would overflow, and so would
        # cap / base for a tiny (subnormal) base.
        if exponent >= _MAX_DOUBLINGS or exponent >= _log2_ratio(self.cap, self.base):
            return self.cap
        return min(self.cap, math.ldexp(self.base, exponent))


@dataclass(frozen=True)
class LinearBackoff:
    """``min(cap, base * attempt)``."""

    base: float
    cap: float

    def __post_init__(self) -> None:
        _check_delays("LinearBackoff", base=self.base, cap=self.cap)

    def __call__(self, attempt: int) -> float:
        _check_attempt(attempt)
        if self.base == 0:
            return 0.0
        if attempt >= _HUGE or attempt >= self.cap / self.base:
            return self.cap
        return min(self.cap, _times(self.base, attempt))


@dataclass(frozen=True)
class FixedBackoff:
    """The same ``delay`` before every retry."""

    delay: float

    def __post_init__(self) -> None:
        _check_delays("FixedBackoff", delay=self.delay)

    def __call__(self, attempt: int) -> float:
        _check_attempt(attempt)
        return self.delay


@dataclass(frozen=True)
class FibonacciBackoff:
    """``min(cap, base * F(attempt))`` with F = 1, 1, 2, 3, 5, 8, …"""

    base: float
    cap: float

    def __post_init__(self) -> None:
        _check_delays("FibonacciBackoff", base=self.base, cap=self.cap)

    def __call__(self, attempt: int) -> float:
        _check_attempt(attempt)
        if self.base == 0 or self.cap == 0:
            return 0.0
        # In log2: cap / base overflows for a tiny (subnormal) base.
        limit = _log2_ratio(self.cap, self.base)
        previous, current = 0, 1
        # Stops as soon as the cap is reached: at most ~3000 steps even for a huge cap/base.
        for _ in range(attempt - 1):
            if current >= _HUGE or math.log2(current) >= limit:
                return self.cap
            previous, current = current, previous + current
        return min(self.cap, _times(self.base, current))


@dataclass(frozen=True)
class NoJitter:
    """The backoff's delay as it is."""

    def __call__(self, delay: float, previous: float | None, rng: random.Random) -> float:
        return delay


@dataclass(frozen=True)
class FullJitter:
    """Uniform in ``[0, delay]``: spreads retries of many bots the most."""

    def __call__(self, delay: float, previous: float | None, rng: random.Random) -> float:
        return rng.uniform(0.0, delay)


@dataclass(frozen=True)
class EqualJitter:
    """Half the delay, plus uniform in ``[0, delay / 2]``: never retries at once."""

    def __call__(self, delay: float, previous: float | None, rng: random.Random) -> float:
        half = delay / 2
        return half + rng.uniform(0.0, half)


@dataclass(frozen=True)
class DecorrelatedJitter:
    """``min(cap, uniform(base, 3 * previous))``; ignores the backoff (AWS "decorrelated")."""

    base: float
    cap: float

    def __post_init__(self) -> None:
        _check_delays("DecorrelatedJitter", base=self.base, cap=self.cap)

    def __call__(self, delay: float, previous: float | None, rng: random.Random) -> float:
        last = self.base if previous is None else previous
        high = max(self.base, min(self.cap, last) * 3)
        return min(self.cap, rng.uniform(self.base, high))


@dataclass(frozen=True)
class ProportionalJitter:
    """The delay scaled by a random factor in ``[1 - spread, 1 + spread]``.

    Keeps the backoff's shape (a restart after 8 s stays near 8 s) while bots that crashed
    together come back at different times: the supervisor's ``restart_jitter``.
    """

    spread: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spread) and 0 <= self.spread <= 1):
            raise ValueError(
                f"ProportionalJitter.spread must be a number from 0 to 1, got {self.spread!r}"
            )

    def __call__(self, delay: float, previous: float | None, rng: random.Random) -> float:
        if not self.spread:
            # No draw: a seeded generator gives the same numbers as with no jitter at all.
            return delay
        return delay * (1 + rng.uniform(-self.spread, self.spread))


@dataclass(frozen=True)
class BackoffSchedule:
    """The delay before each retry or restart: a backoff, spread by a jitter, capped."""

    backoff: Backoff
    jitter: Jitter
    max_delay: float

    def __post_init__(self) -> None:
        _check_delays("BackoffSchedule", max_delay=self.max_delay)

    def delay(self, attempt: int, previous: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based); in ``[0, max_delay]``.

        ``previous`` is the delay returned for the attempt before (``None`` for the first);
        only a decorrelated jitter uses it.
        """
        value = self.jitter(self.backoff(attempt), previous, rng)
        if not math.isfinite(value):
            return self.max_delay
        return min(self.max_delay, max(0.0, value))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and after how long one error category is retried."""

    max_retries: int
    backoff: Backoff
    jitter: Jitter
    max_delay: float
    schedule: BackoffSchedule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries!r}")
        _check_delays("RetryPolicy", max_delay=self.max_delay)
        # Derived once, so a retry costs no allocation; frozen, hence object.__setattr__.
        object.__setattr__(
            self, "schedule", BackoffSchedule(self.backoff, self.jitter, self.max_delay)
        )

    @classmethod
    def from_config(cls, config: RetryPolicyConfig) -> RetryPolicy:
        base, cap = config.base_delay, config.max_delay
        backoff: Backoff
        if config.backoff is BackoffKind.EXPONENTIAL:
            backoff = ExponentialBackoff(base, cap)
        elif config.backoff is BackoffKind.LINEAR:
            backoff = LinearBackoff(base, cap)
        elif config.backoff is BackoffKind.FIXED:
            backoff = FixedBackoff(base)
        else:
            backoff = FibonacciBackoff(base, cap)
        jitter: Jitter
        if config.jitter is JitterKind.NONE:
            jitter = NoJitter()
        elif config.jitter is JitterKind.FULL:
            jitter = FullJitter()
        elif config.jitter is JitterKind.EQUAL:
            jitter = EqualJitter()
        else:
            jitter = DecorrelatedJitter(base, cap)
        return cls(max_retries=config.max_retries, backoff=backoff, jitter=jitter, max_delay=cap)

    def delay(self, attempt: int, previous: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based); in ``[0, max_delay]``."""
        return self.schedule.delay(attempt, previous, rng)


def retry_policies(retry: RetryConfig) -> dict[ErrorCategory, RetryPolicy]:
    """The policy of each retried error category under ``retry`` (immutable: build once)."""
    return {
        ErrorCategory.RATE_LIMIT: RetryPolicy.from_config(retry.rate_limit),
        ErrorCategory.TRANSIENT_NETWORK: RetryPolicy.from_config(retry.transient_network),
        ErrorCategory.UNKNOWN: RetryPolicy.from_config(retry.unknown),
    }


def forbids_repeat(error: BotApiError, *, idempotent: bool, retry_uncertain_sends: bool) -> bool:
    """Whether ``error`` leaves a call that must not be sent again: a transport error after the
    request went out (it may have reached Telegram) of a non-idempotent method, unless the
    operator chose ``retry_uncertain_sends``. Sending it again could send a message twice;
    connect errors (nothing sent) are always safe to repeat."""
    return (
        isinstance(error, TransportError)
        and error.request_sent
        and not idempotent
        and not retry_uncertain_sends
    )


@dataclass(frozen=True)
class RetryStatistics:
    calls: int  # pipeline calls started
    attempts: int  # HTTP attempts, first ones included
    retries: int  # attempts after the first
    retries_by_category: Mapping[str, int]  # ErrorCategory value -> retries; a plain dict
    recovered: int  # calls that succeeded after at least one retry
    exhausted: int  # calls that gave up with a retryable error
    uncertain: int  # non-idempotent calls not retried because they may have been delivered
    recovery_rate: float  # recovered / (recovered + exhausted); 1.0 when both are 0


def _recovery_rate(recovered: int, exhausted: int) -> float:
    total = recovered + exhausted
    return 1.0 if total == 0 else recovered / total


class RetryCounters:
    """One bot's retry bookkeeping, updated by its request pipeline."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._calls = 0
        self._attempts = 0
        self._retries = 0
        self._by_category = {c.value: 0 for c in RETRYABLE_CATEGORIES}
        self._recovered = 0
        self._exhausted = 0
        self._uncertain = 0

    @property
    def retries(self) -> int:
        """Attempts after the first one so far, without building a statistics record."""
        return self._retries

    def restore(self, *, retries: int) -> None:
        """Seed the cumulative retry count from a stored snapshot (which has no breakdown)."""
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        self._retries = retries

    def record_call(self) -> None:
        self._calls += 1

    def record_attempt(self) -> None:
        self._attempts += 1

    def record_retry(self, category: ErrorCategory) -> None:
        self._retries += 1
        self._by_category[category.value] = self._by_category.get(category.value, 0) + 1

    def record_recovered(self) -> None:
        self._recovered += 1

    def record_exhausted(self) -> None:
        self._exhausted += 1

    def record_uncertain(self) -> None:
        self._uncertain += 1

    def statistics(self) -> RetryStatistics:
        return RetryStatistics(
            calls=self._calls,
            attempts=self._attempts,
            retries=self._retries,
            retries_by_category=dict(self._by_category),
            recovered=self._recovered,
            exhausted=self._exhausted,
            uncertain=self._uncertain,
            recovery_rate=_recovery_rate(self._recovered, self._exhausted),
        )


def combine(stats: Iterable[RetryStatistics]) -> RetryStatistics:
    """Fleet-wide totals of many bots' retry statistics."""
    calls = attempts = retries = recovered = exhausted = uncertain = 0
    by_category = {c.value: 0 for c in RETRYABLE_CATEGORIES}
    for s in stats:
        calls += s.calls
        attempts += s.attempts
        retries += s.retries
        recovered += s.recovered
        exhausted += s.exhausted
        uncertain += s.uncertain
        for key, value in s.retries_by_category.items():
            by_category[key] = by_category.get(key, 0) + value
    return RetryStatistics(
        calls=calls,
        attempts=attempts,
        retries=retries,
        retries_by_category=by_category,
        recovered=recovered,
        exhausted=exhausted,
        uncertain=uncertain,
        recovery_rate=_recovery_rate(recovered, exhausted),
    )
