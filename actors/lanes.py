"""Chat lanes: strict order within a chat, concurrency across chats.

Every chat with work gets a lane, a task that handles that chat's updates one at a time in
arrival order. Lanes of different chats run concurrently, at most ``max_concurrent`` at once
per bot; a lane with nothing to do for ``idle_seconds`` is reaped so a bot that talked to a
million chats keeps only its active ones in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

__all__ = ["ChatLanes", "LaneStatistics", "chat_key", "update_chat_id", "update_payload"]

Update = Mapping[str, Any]
T = TypeVar("T")


def _whole_id(value: Any) -> int | None:
    """``value`` if it is a whole-number id (JSON ``true`` is not an id)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _id_of(holder: Any, field: str) -> int | None:
    """``holder[field].id`` when ``holder[field]`` is an object with a whole-number id."""
    if isinstance(holder, Mapping):
        named = holder.get(field)
        if isinstance(named, Mapping):
            return _whole_id(named.get("id"))
    return None


def update_payload(update: Update) -> tuple[str, Mapping[str, Any]] | None:
    """The update's kind and its object (``("message", {...})``), the one field besides
    ``update_id``; ``None`` for an update that carries no object at all."""
    for name, payload in update.items():
        if name != "update_id" and isinstance(payload, Mapping):
            return name, payload
    return None


def chat_key(update: Update) -> Hashable:
    """The lane an update belongs to: its chat, else its user, else its kind.

    The one rule for "which chat is this update about": lanes order by it, and the inbox and
    dead-letter rows record it (:func:`update_chat_id`). In order:

    1. ``chat`` of the update's object, or of the message it carries (a callback query's
       ``message``). Not a list of known kinds: every Bot API 9.x type that names a chat has
       it there (messages, business messages and their deletions, reactions and reaction
       counts, member changes, join requests, boosts), and so will a type Telegram adds
       later. ``sender_chat`` (a channel or an anonymous admin posting) is the sender, not
       the chat.
    2. ``("user", id)`` of ``from``, else of ``user`` (poll_answer, business_connection):
       inline queries, chosen results, button presses under inline messages, shipping and
       pre-checkout queries, paid media purchases; a user's such updates stay in order.
    3. ``("kind", name)``: a ``poll`` names neither; its updates share one lane per kind.
    """
    found = update_payload(update)
    if found is None:
        return ("kind", "none")
    kind, payload = found
    chat_id = _id_of(payload, "chat")
    if chat_id is None:
        chat_id = _id_of(payload.get("message"), "chat")
    if chat_id is not None:
        return chat_id
    for sender in ("from", "user"):
        user_id = _id_of(payload, sender)
        if user_id is not None:
            return ("user", user_id)
    return ("kind", kind)


def update_chat_id(update: Update) -> int | None:
    """The chat an update is about, by :func:`chat_key`'s rule; ``None`` if it names none."""
    key = chat_key(update)
    return key if isinstance(key, int) else None


@dataclass(frozen=True)
class LaneStatistics:
    active_lanes: int
    busy_lanes: int
    queued_updates: int
    lanes_reaped: int


class _Lane(Generic[T]):
    def __init__(self, buffer: int) -> None:
        self.send, self.receive = trio.open_memory_channel[T](buffer)
        self.busy = False


class ChatLanes(Generic[T]):
    """Dispatches work items to per-chat lanes that run in the given nursery."""

    def __init__(
        self,
        nursery: trio.Nursery,
        process: Callable[[T], Awaitable[None]],
        *,
        max_concurrent: int,
        idle_seconds: float,
        buffer: int = 64,
    ) -> None:
        self._nursery = nursery
        self._process = process
        self._limiter = trio.CapacityLimiter(max_concurrent)
        self._idle = idle_seconds
        self._buffer = buffer
        self._lanes: dict[Hashable, _Lane[T]] = {}
        self._closing = False
        self._reaped = 0
        self._all_done = trio.Event()
        self._all_done.set()

    async def dispatch(self, key: Hashable, item: T) -> None:
        """Queue ``item`` on lane ``key``; waits only when that lane's buffer is full."""
        if self._closing:
            raise RuntimeError("chat lanes are closing; no update can be dispatched now")
        lane = self._lanes.get(key)
        if lane is None:
            lane = _Lane[T](self._buffer)
            self._lanes[key] = lane
            self._all_done = trio.Event()
            self._nursery.start_soon(self._run_lane, key, lane)
        try:
            lane.send.send_nowait(item)
        except trio.WouldBlock:
            await lane.send.send(item)

    async def close(self) -> None:
        """Stop taking updates; each lane finishes the update in hand and exits.

        Updates still queued are left undone: they stay in the durable inbox and are handled
        after the next start.
        """
        self._closing = True
        for lane in self._lanes.values():
            lane.send.close()
        await self._all_done.wait()

    def statistics(self) -> LaneStatistics:
        return LaneStatistics(
            active_lanes=len(self._lanes),
            busy_lanes=sum(1 for lane in self._lanes.values() if lane.busy),
            queued_updates=sum(
                lane.receive.statistics().current_buffer_used for lane in self._lanes.values()
            ),
            lanes_reaped=self._reaped,
        )

    async def _run_lane(self, key: Hashable, lane: _Lane[T]) -> None:
        try:
            while not self._closing:
                item = await self._next(lane)
                if item is None:
                    break
                lane.busy = True
                try:
                    async with self._limiter:
                        await self._process(item)
                finally:
                    lane.busy = False
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]
            lane.receive.close()
            if not self._lanes:
                self._all_done.set()

    async def _next(self, lane: _Lane[T]) -> T | None:
        """The lane's next update, or None when closed or idle long enough to be reaped."""
        try:
            with trio.move_on_after(self._idle):
                return await lane.receive.receive()
        except trio.EndOfChannel:
            return None
        # Idle: reap only if nothing arrived in the same instant (no await since the check).
        try:
            return lane.receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            self._reaped += 1
            return None
