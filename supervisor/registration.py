"""When a webhook bot's failed setWebhook is tried again: one schedule for the fleet.

A webhook bot Telegram does not know the URL of gets no update at all, so a failed
registration (Telegram unreachable at the start, a 5xx, a 429, a circuit breaker open) is not
left for the next start: the fleet tries it again after :data:`RETRY_MIN` seconds, doubling
up to :data:`RETRY_MAX`, each delay spread by ±:data:`RETRY_JITTER` so that bots which failed
together (every bot of a start during an outage) do not come back together. A success, the
bot's removal, its switch to polling or its suspension ends its retries; a PERMANENT error
(401: the token is bad) suspends the bot as it does a polling bot, and is not retried.

There is no task per bot (a fleet of 100,000 dormant bots failing together would be 100,000
tasks): one heap of due times, served by :meth:`RegistrationRetries.run`, hands each due bot
back to the fleet's registration queue, whose concurrency bounds the calls.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors import BackoffSchedule, ExponentialBackoff, ProportionalJitter

__all__ = [
    "RETRY_JITTER",
    "RETRY_MAX",
    "RETRY_MIN",
    "RegistrationRetries",
    "RegistrationRetryStatistics",
]

# The first retry of a failed setWebhook comes about this many seconds after it...
RETRY_MIN = 5.0
# ...and the delay doubles with each failure in a row up to this (10 min)...
RETRY_MAX = 600.0
# ...each delay scaled by a random factor in [1 - RETRY_JITTER, 1 + RETRY_JITTER].
RETRY_JITTER = 0.2


@dataclass(frozen=True)
class RegistrationRetryStatistics:
    waiting: int  # bots whose setWebhook is due again
    next_due: float | None  # Trio time of the earliest, None if none


class RegistrationRetries:
    """The due times of failed registrations; :meth:`run` hands each due bot to ``due``."""

    __slots__ = ("_due", "_failures", "_heap", "_rng", "_schedule", "_wakeup")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._schedule = BackoffSchedule(
            ExponentialBackoff(RETRY_MIN, RETRY_MAX),
            ProportionalJitter(RETRY_JITTER),
            RETRY_MAX * (1 + RETRY_JITTER),
        )
        self._heap: list[tuple[float, int]] = []
        # user_id -> its current due time (a heap entry with another time is stale).
        self._due: dict[int, float] = {}
        # user_id -> (failures in a row, the last delay).
        self._failures: dict[int, tuple[int, float]] = {}
        self._wakeup = trio.Event()

    def statistics(self) -> RegistrationRetryStatistics:
        return RegistrationRetryStatistics(
            waiting=len(self._due), next_due=min(self._due.values(), default=None)
        )

    def failures(self, user_id: int) -> int:
        """The bot's failed registrations in a row (0 when none is being retried)."""
        entry = self._failures.get(user_id)
        return 0 if entry is None else entry[0]

    def failed(self, user_id: int) -> float:
        """The bot's setWebhook failed again: schedule the next try; return its delay."""
        count, previous = self._failures.get(user_id, (0, None))
        delay = self._schedule.delay(count + 1, previous, self._rng)
        self._failures[user_id] = (count + 1, delay)
        due = trio.current_time() + delay
        self._due[user_id] = due
        heapq.heappush(self._heap, (due, user_id))
        self._wakeup.set()
        return delay

    def forget(self, user_id: int) -> None:
        """No more retries for the bot (registered, removed, switched, suspended); the next
        failure starts again at :data:`RETRY_MIN`."""
        self._failures.pop(user_id, None)
        self._due.pop(user_id, None)

    async def run(self, due: Callable[[int], None]) -> None:
        """Call ``due(user_id)`` when each bot's retry is due, until cancelled."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and (self._due.get(heap[0][1]) != heap[0][0] or heap[0][0] <= now):
                at, user_id = heapq.heappop(heap)
                if self._due.get(user_id) == at:
                    del self._due[user_id]  # its failures stay: the next delay doubles
                    due(user_id)
            self._wakeup = trio.Event()
            # Woken early by a new entry, which may be due before the earliest one now.
            with trio.move_on_at(heap[0][0] if heap else float("inf")):
                await self._wakeup.wait()
