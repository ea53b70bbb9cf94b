"""Shard identity: which of N botvisor processes owns a bot.

A bot's owner is the jump consistent hash (Lamping and Veach, "A Fast, Minimal Memory,
Consistent Hash Algorithm", 2014) of its ``user_id`` over the shard count. Unlike
``user_id % N``, growing N to N+1 moves only the bots the new shard takes (about 1/(N+1) of
them; ``% N`` moves about N/(N+1)), and shrinking N+1 to N moves only the last shard's bots,
which is what a Kubernetes StatefulSet removes first.

Pure: :func:`parse_shard` and :func:`shard_from_environment` take text and a mapping; only
the CLI reads the process's environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_SHARDS",
    "SHARD_COUNT_ENV",
    "SHARD_INDEX_ENV",
    "Shard",
    "ShardError",
    "jump_hash",
    "parse_shard",
    "shard_from_environment",
]

SHARD_INDEX_ENV = "BOTVISOR_SHARD_INDEX"
SHARD_COUNT_ENV = "BOTVISOR_SHARD_COUNT"

# The paper's 64-bit linear congruential step.
_LCG_MULTIPLIER = 2862933555777941757
_MASK_64 = (1 << 64) - 1
# More shards than this is not a deployment, it is a typo.
MAX_SHARDS = 4096


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``range(buckets)`` of the 64-bit ``key`` (negative keys are taken modulo
    2**64, as the paper's unsigned arithmetic would).

    The paper's loop: a pseudo-random walk seeded by the key jumps forward from bucket 0;
    each jump lands at ``(b + 1) / r`` for a fresh uniform ``r``, and the last landing below
    ``buckets`` is the answer. Going from ``n`` to ``n + 1`` buckets, a key moves exactly
    when one of its jumps lands on ``n``, which happens with probability ``1 / (n + 1)``."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    key &= _MASK_64
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * _LCG_MULTIPLIER + 1) & _MASK_64
        # (key >> 33) + 1 is uniform on 1..2**31: the division draws r in (0, 1].
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


class ShardError(ValueError):
    """A shard given on the command line or in the environment that cannot be one; the
    message names what to fix."""


@dataclass(frozen=True)
class Shard:
    """This process is shard ``index`` of ``count`` (0-based, like a StatefulSet ordinal)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ShardError(f"the shard count must be from 1 to {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ShardError(
                f"the shard index must be from 0 to {self.count - 1} (index < count), "
                f"got {self.index}"
            )

    def owner(self, user_id: int) -> int:
        """The index of the shard that owns bot ``user_id``."""
        return jump_hash(user_id, self.count)

    def owns(self, user_id: int) -> bool:
        return self.owner(user_id) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _whole(text: str, what: str, given: str) -> int:
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > 6:
        raise ShardError(f"{what} must be a whole number, got {given!r}")
    return int(stripped)


def parse_shard(text: str) -> Shard:
    """``"i/N"`` (``--shard 2/3``) as a Shard; ShardError naming what to fix."""
    index, slash, count = text.partition("/")
    if not slash:
        raise ShardError(
            f"--shard must be INDEX/COUNT, e.g. 0/3 for the first of three shards, got {text!r}"
        )
    return Shard(
        _whole(index, "--shard's INDEX (before the /)", text),
        _whole(count, "--shard's COUNT (after the /)", text),
    )


def shard_from_environment(environ: Mapping[str, str]) -> Shard | None:
    """The shard named by ``BOTVISOR_SHARD_INDEX`` (in Kubernetes, the pod-index label
    through the downward API) and ``BOTVISOR_SHARD_COUNT``; None when neither is set (one
    process owns every bot). One without the other is a ShardError."""
    index = environ.get(SHARD_INDEX_ENV)
    count = environ.get(SHARD_COUNT_ENV)
    if index is None and count is None:
        return None
    if index is None or count is None:
        present, missing = (
            (SHARD_INDEX_ENV, SHARD_COUNT_ENV)
            if count is None
            else (SHARD_COUNT_ENV, SHARD_INDEX_ENV)
        )
        raise ShardError(f"${present} is set but ${missing} is not: set both, or neither")
    return Shard(
        _whole(index, f"${SHARD_INDEX_ENV}", index), _whole(count, f"${SHARD_COUNT_ENV}", count)
    )
