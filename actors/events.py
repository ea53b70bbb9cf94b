"""Events from bot actors to the metrics actor, and the channel that never blocks a sender.

Actors report changes as they happen: status, breaker and lifecycle transitions. The numbers
(requests, latencies, counters) are not sent: every health read pulls them from the actors'
``statistics()`` (:class:`~actors.fleet_health.FleetHealth`), so a dropped event costs a
live subscriber a notification, never a wrong count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import trio

__all__ = [
    "BotEvent",
    "BreakerChanged",
    "EventSink",
    "EventSinkStatistics",
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

    @property
    def emitted(self) -> int:
        """Events offered so far, sent or dropped: it moves whenever some bot changed."""
        return self._sent + self._dropped

    def statistics(self) -> EventSinkStatistics:
        stats = self._channel.statistics()
        return EventSinkStatistics(
            sent=self._sent,
            dropped=self._dropped,
            buffer_used=stats.current_buffer_used,
            buffer_size=stats.max_buffer_size,
        )
