"""Events from bot actors to the metrics actor, and the channel that never blocks a sender.

Actors report state transitions as they happen and their cumulative statistics periodically
(``HealthReport``). Because reports carry cumulative counters rather than deltas, a dropped
report costs freshness, never correctness: the next one carries the same totals and more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

__all__ = [
    "BotEvent",
    "BreakerChanged",
    "EventSink",
    "EventSinkStatistics",
    "HealthReport",
    "LifecycleEvent",
    "StatusChanged",
]


@dataclass(frozen=True)
class BotEvent:
    """Base of everything an actor tells the metrics actor."""

    user_id: int
    at: float  # wall-clock epoch seconds

    kind = "event"

    def to_json(self) -> dict[str, Any]:
        data = {k: _plain(v) for k, v in asdict(self).items()}
        return {"type": self.kind, **data}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class StatusChanged(BotEvent):
    """The bot's health status changed (healthy, degraded, unhealthy, suspended)."""

    previous: str
    status: str
    reason: str = ""

    kind = "status"


@dataclass(frozen=True)
class BreakerChanged(BotEvent):
    """The bot's circuit breaker changed state."""

    previous: str
    state: str
    reason: str = ""

    kind = "breaker"


@dataclass(frozen=True)
class LifecycleEvent(BotEvent):
    """The bot was started, crashed, restarted, suspended, resumed, stopped or removed."""

    event: str
    detail: str = ""

    kind = "lifecycle"


@dataclass(frozen=True)
class HealthReport(BotEvent):
    """A bot's cumulative statistics at one moment (``row`` is its storage row)."""

    row: Any = field(compare=False)  # storage.rows.HealthRow
    handled_updates: int = 0
    replies_sent: int = 0
    dead_letters: int = 0
    ambiguous_sends: int = 0
    throttled: int = 0
    chat_errors: int = 0

    kind = "health"


@dataclass(frozen=True)
class EventSinkStatistics:
    sent: int
    dropped: int
    buffer_used: int
    buffer_size: float


class EventSink:
    """The sending side of the actors → metrics channel: ``emit`` never waits.

    A full channel means the metrics actor is behind; the event is counted as dropped rather
    than stalling a bot.
    """

    def __init__(self, channel: trio.MemorySendChannel[BotEvent]) -> None:
        self._channel = channel
        self._sent = 0
        self._dropped = 0

    def emit(self, event: BotEvent) -> bool:
        """Queue ``event``; return False (and count it) if it had to be dropped."""
        try:
            self._channel.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._dropped += 1
            return False
        self._sent += 1
        return True

    def statistics(self) -> EventSinkStatistics:
        stats = self._channel.statistics()
        return EventSinkStatistics(
            sent=self._sent,
            dropped=self._dropped,
            buffer_used=stats.current_buffer_used,
            buffer_size=stats.max_buffer_size,
        )
