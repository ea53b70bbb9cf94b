"""Event-loop responsiveness: how late a task sleeping 1 ms at a time wakes up.

A task that sleeps ``tick`` seconds in a loop records, for every wake-up, how much later than
asked it ran. Whatever keeps the loop busy without yielding (a long synchronous stretch of
one task, a big JSON dump, a summary over the whole fleet) shows up as lateness; work in
worker threads shows up only through the GIL. The probe competes for the loop itself, so a
benchmark's timed figures are taken with it where it says so.
"""

from __future__ import annotations

import statistics
from typing import Any

import trio

__all__ = ["LatenessProbe", "percentile"]


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    if not values:
        raise ValueError("percentile needs at least one value")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class LatenessProbe:
    """``nursery.start_soon(probe.run)``; then :meth:`figures` of the wake-ups so far.

    :meth:`reset` starts a new window (the wake-ups before it are dropped)."""

    def __init__(self, tick: float = 0.001) -> None:
        self.tick = tick
        self.samples: list[float] = []

    async def run(self) -> None:
        tick = self.tick
        samples = self.samples
        while True:
            before = trio.current_time()
            await trio.sleep(tick)
            samples.append(trio.current_time() - before - tick)

    def reset(self) -> None:
        self.samples.clear()

    def figures(self) -> dict[str, Any]:
        """p50, p99 and max lateness in ms, and how many wake-ups they come from."""
        samples = list(self.samples)
        if not samples:
            return {"wakeups": 0}
        return {
            "wakeups": len(samples),
            "p50_ms": statistics.median(samples) * 1000,
            "p99_ms": percentile(samples, 0.99) * 1000,
            "max_ms": max(samples) * 1000,
        }
