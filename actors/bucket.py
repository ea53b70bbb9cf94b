"""The one token bucket of botvisor, as a pure core with no clock and no waiting inside.

Every rate limit that counts tokens uses it: the per-bot :class:`~actors.limits.TokenBucket`,
the :class:`~actors.limits.GlobalRateLimiter` and the admin server's per-address limit. The
callers bring the time (Trio's) and decide how to wait, so each keeps its own queueing rule
while the arithmetic, and so the exact time a token comes back, is the same everywhere.

The bucket is kept as one timestamp, the generic cell rate algorithm: a bucket of 1 per second
that was emptied at t=0 admits the next call at exactly t=1.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucketCore"]


def _check_rate(rate: float, burst: int) -> None:
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
    if not (isinstance(burst, int) and burst >= 1):
        raise ValueError(f"burst must be a whole number >= 1, got {burst!r}")


class TokenBucketCore:
    """A token bucket of ``burst`` tokens refilled at ``rate`` per second, as one timestamp.

    The bucket is full again at ``anchor + count * interval``: ``count`` tokens were taken
    since it was last full, at ``anchor``. Multiplying instead of adding ``interval`` once per
    token keeps float error from piling up, so grants fall on exact times (the 25th of a
    burst of 25 at t=0 is at t=0, not at 3e-16). Slotted and small (~100 bytes), so a limiter
    can hold one per client.
    """

    __slots__ = ("anchor", "burst", "count", "interval", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        _check_rate(rate, burst)
        self.rate = rate
        self.burst = burst
        self.interval = 1.0 / rate
        self.anchor = -math.inf
        self.count = 0

    def __repr__(self) -> str:
        return f"TokenBucketCore(rate={self.rate!r}, burst={self.burst!r})"

    def full_at(self) -> float:
        """The time the bucket is full again (``-inf`` if it never was used)."""
        return self.anchor + self.count * self.interval if self.count else self.anchor

    def ready_at(self) -> float:
        """The earliest time a token is available."""
        owed = self.count - (self.burst - 1)
        return self.anchor + owed * self.interval if owed > 0 else -math.inf

    def take(self, now: float) -> None:
        """Take a token at ``now``; the caller checked :meth:`ready_at` (or owes the token)."""
        # Strictly after: under steady load the anchor stays put and no error accumulates.
        if now > self.full_at():
            self.anchor = now
            self.count = 1
        else:
            self.count += 1

    def try_take(self, now: float) -> float:
        """Take a token if one is available at ``now`` and return 0.0; else take nothing and
        return the seconds until one is (always > 0)."""
        # ready_at and take in one, inlined: this is every rate-limited call's fast path.
        count = self.count
        owed = count - (self.burst - 1)
        if owed > 0:
            ready = self.anchor + owed * self.interval
            if now < ready:
                return ready - now
        if now > (self.anchor + count * self.interval if count else self.anchor):
            self.anchor = now
            self.count = 1
        else:
            self.count = count + 1
        return 0.0

    def give_back(self) -> None:
        """Return a token that was taken but not used."""
        if self.count > 0:
            self.count -= 1

    def available(self, now: float) -> float:
        """Tokens available at ``now`` (fractional: a token partly refilled counts partly)."""
        return self.burst - max(0.0, self.full_at() - now) * self.rate
