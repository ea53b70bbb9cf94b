"""Telegram-like flood limits of the simulated Bot API: when sendMessage answers 429.

The buckets are botvisor's one token bucket (:class:`actors.bucket.TokenBucketCore`), so the
simulator and the client's own limiters agree on when a token is back.
"""

from __future__ import annotations

import math

from actors.bucket import TokenBucketCore
from actors.simulator.bots import SimBot
from actors.simulator.faults import FloodLimits

__all__ = ["flood_wait"]

# A client pacing exactly at the limit must pass despite float rounding (1 / (20 / 60) is not
# exactly 3).
_SLACK = 1e-6


def flood_wait(bot: SimBot, limits: FloodLimits, chat_id: int, chat_type: str, now: float) -> int:
    """0 with a token taken from the chat's bucket and the bot's, or the whole seconds until
    both have one (what ``retry_after`` says), taking nothing."""
    if chat_type == "private":
        chat_rate, chat_burst = limits.private_per_second, limits.private_burst
    else:
        chat_rate, chat_burst = limits.group_per_minute / 60, limits.group_burst
    if bot.buckets is None:
        bot.buckets = {}
    buckets = []
    for key, rate, burst in (
        (chat_id, chat_rate, chat_burst),
        (None, limits.bot_per_second, limits.bot_burst),
    ):
        bucket = bot.buckets.get(key)
        if bucket is None:
            bucket = bot.buckets[key] = TokenBucketCore(rate, burst)
        buckets.append(bucket)
    wait = max(bucket.ready_at() for bucket in buckets) - now
    if wait > _SLACK:
        return max(1, math.ceil(wait - _SLACK))
    for bucket in buckets:
        bucket.take(now)
    return 0
