"""The daemon's one wall clock: epoch seconds derived from Trio's clock.

Storage needs wall-clock timestamps; everything else uses Trio time. Anchoring the wall clock
to ``trio.current_time()`` once keeps a single source of time, so a MockClock moves both.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import trio

__all__ = ["anchored_wall_clock", "system_wall_clock"]


def anchored_wall_clock(epoch_at_zero: float) -> Callable[[], float]:
    """A wall clock that reads ``epoch_at_zero`` when Trio's clock reads 0."""
    return lambda: epoch_at_zero + trio.current_time()


def system_wall_clock() -> Callable[[], float]:
    """A wall clock anchored to the system's time now (call inside ``trio.run``)."""
    return anchored_wall_clock(datetime.now(UTC).timestamp() - trio.current_time())
