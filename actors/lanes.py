"""Chat lanes: strict order within a chat, concurrency across chats, no head-of-line blocking.

Every chat with work gets a lane, a task that handles that chat's updates one at a time in
arrival order. Lanes of different chats run concurrently, at most ``max_concurrent`` at once
per bot; a lane with nothing to do for ``idle_seconds`` is reaped so a bot that talked to a
million chats keeps only its active ones in memory.

A lane never makes its dispatcher wait. It holds at most ``buffer`` updates in memory; when
it is full it *overflows*: further updates of its chat are not kept (each is already committed
to the durable inbox before it is dispatched), and once the lane has worked through what it
holds it re-reads its chat's undone updates from the inbox, in order, after the last one it
took (``refill``). So one group chat paced at Telegram's 20 messages a minute with thousands
queued neither stops ``getUpdates`` nor delays any other chat of the bot, and memory per lane
stays at ``buffer`` updates whatever the backlog.

Why order, at-least-once and dedupe hold: updates of one chat enter the inbox in ``update_id``
order (Telegram numbers them increasingly) and the lane's cursor is the highest position it
ever took, so a re-read returns exactly the undone updates it never took, in order. An update
dispatched while a re-read is in flight may have committed after the read's snapshot: the lane
then stays overflowed and reads once more, so nothing falls between the two. An update whose
dispatch comes after a re-read already took it is at or behind the cursor and is not taken
twice: the lane remembers the positions it took lately (twice its buffer), and skips those.
An update behind the cursor that was never taken is taken: webhook deliveries of one lane can
come out of id order, because Telegram queues a chat's button presses per user, apart from its
messages (one that comes while the lane overflows waits in the inbox for the next start).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

from actors.config import UPDATE_TYPES

__all__ = [
    "ChatLanes",
    "LaneStatistics",
    "Refill",
    "chat_key",
    "key_chat_id",
    "lane_name",
    "update_chat_id",
    "update_payload",
    "usage_kind",
]

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


def usage_kind(update: Update) -> tuple[str, int | None]:
    """What usage analytics counts of an update: its type (``other`` for one botvisor does
    not know) and its sender's id (``from.id``; ``None`` without one)."""
    found = update_payload(update)
    if found is None:
        return "other", None
    kind, payload = found
    return (kind if kind in UPDATE_TYPES else "other"), _id_of(payload, "from")


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
    return key_chat_id(chat_key(update))


def key_chat_id(key: Hashable) -> int | None:
    """The chat of a lane key from :func:`chat_key` (a per-user or per-kind key has none)."""
    return key if isinstance(key, int) else None


def lane_name(key: Hashable) -> str:
    """The text the inbox stores for lane ``key`` (a :func:`chat_key` value), so a lane can
    re-read its own undone updates: a chat id as its digits, any other key as its repr."""
    return str(key) if isinstance(key, int) else repr(key)


# ``refill(key, after, limit)``: up to ``limit`` of lane ``key``'s undone updates that come
# after the item ``after``, in order, and whether that was all of them (fewer than ``limit``
# rows were left).
Refill = Callable[[Hashable, T, int], Awaitable[tuple[list[T], bool]]]


@dataclass(frozen=True)
class LaneStatistics:
    active_lanes: int
    busy_lanes: int
    queued_updates: int  # held in memory, at most ``buffer`` per lane
    lanes_reaped: int
    overflowing_lanes: int  # lanes whose further updates wait in the inbox, not in memory
    refills: int  # re-reads of a lane's undone updates from the inbox


class _Lane(Generic[T]):
    def __init__(self) -> None:
        self.queue: deque[T] = deque()
        self.wakeup = trio.Event()
        self.busy = False
        # Full once: later updates of the chat are read back from the inbox, not kept here.
        self.overflow = False
        # An update was left to the inbox since the current (or last) re-read began.
        self.missed = False
        # The item taken last (the re-read cursor) and its position.
        self.last: T | None = None
        self.last_position = -1
        # Positions taken lately (oldest first, at most 2 x buffer): an item behind the cursor
        # is a second dispatch of one of these, or one that arrived out of order.
        self.taken: dict[int, None] = {}

    def take(self, item: T, position: int, keep: int) -> None:
        self.queue.append(item)
        self.taken[position] = None
        if len(self.taken) > keep:
            del self.taken[next(iter(self.taken))]
        if position > self.last_position:
            self.last, self.last_position = item, position


class ChatLanes(Generic[T]):
    """Dispatches work items to per-chat lanes that run in the given nursery.

    ``position`` orders a chat's items (the update_id); ``refill`` re-reads an overflowed
    lane's items from the durable store (see the module docstring).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        process: Callable[[T], Awaitable[None]],
        *,
        max_concurrent: int,
        idle_seconds: float,
        refill: Refill[T],
        position: Callable[[T], int],
        buffer: int = 64,
    ) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {buffer}")
        self._nursery = nursery
        self._process = process
        self._refill = refill
        self._position = position
        self._limiter = trio.CapacityLimiter(max_concurrent)
        self._idle = idle_seconds
        self._buffer = buffer
        self._lanes: dict[Hashable, _Lane[T]] = {}
        self._closing = False
        self._reaped = 0
        self._refills = 0
        self._all_done = trio.Event()
        self._all_done.set()

    def dispatch_nowait(self, key: Hashable, item: T) -> None:
        """Queue ``item`` on lane ``key``, or leave it to the inbox if that lane is full.

        Never waits: ``item`` must already be committed to the inbox, where a full lane
        finds it again.
        """
        if self._closing:
            raise RuntimeError("chat lanes are closing; no update can be dispatched now")
        lane = self._lanes.get(key)
        if lane is None:
            lane = _Lane[T]()
            self._lanes[key] = lane
            self._all_done = trio.Event()
            self._nursery.start_soon(self._run_lane, key, lane)
        position = self._position(item)
        if position in lane.taken:
            # A re-read already took it (it committed, the lane read it, and only then did its
            # dispatch come). Taking it again would handle it twice.
            pass
        elif lane.overflow or len(lane.queue) >= self._buffer:
            lane.overflow = True
            lane.missed = True
        else:
            # Behind the cursor and never taken: a webhook delivery that came out of id order
            # (Telegram queues a chat's button presses per user, apart from its messages).
            lane.take(item, position, 2 * self._buffer)
        lane.wakeup.set()

    def redrive_nowait(self, key: Hashable, item: T, *, forget: bool = True) -> None:
        """Queue ``item``, an update an operator redrove (already undone in the inbox again),
        in its place in the lane's order: before the queued updates that come after it.

        ``forget``: the lane took this position before (when the update dead-lettered) and
        must take it again; False for a redrive that reached an incarnation while it started,
        whose undone inbox may hold the update already (then it is not taken twice). A lane
        that overflowed leaves an update after its cursor to its re-read, which comes to it in
        order; one behind the cursor is queued even when the lane is full (redrives are few,
        and chosen by an operator). Never waits.
        """
        if self._closing:
            raise RuntimeError("chat lanes are closing; no update can be redriven now")
        lane = self._lanes.get(key)
        if lane is None:
            lane = _Lane[T]()
            self._lanes[key] = lane
            self._all_done = trio.Event()
            self._nursery.start_soon(self._run_lane, key, lane)
        position = self._position(item)
        if any(self._position(queued) == position for queued in lane.queue):
            return  # waiting in the lane already
        if not forget and position in lane.taken:
            return
        if lane.overflow and position > lane.last_position:
            lane.missed = True
        else:
            lane.take(item, position, 2 * self._buffer)
            # take() appended it: move it before the queued updates that come after it.
            lane.queue.pop()
            index = next(
                (i for i, queued in enumerate(lane.queue) if self._position(queued) > position),
                len(lane.queue),
            )
            lane.queue.insert(index, item)
        lane.wakeup.set()

    async def dispatch(self, key: Hashable, item: T) -> None:
        """:meth:`dispatch_nowait`, then a checkpoint (it never waits for the lane)."""
        self.dispatch_nowait(key, item)
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        """Stop taking updates; each lane finishes the update in hand and exits.

        Updates still queued are left undone: they stay in the durable inbox and are handled
        after the next start.
        """
        self._closing = True
        for lane in self._lanes.values():
            lane.wakeup.set()
        await self._all_done.wait()

    @property
    def idle(self) -> bool:
        """No lane exists: nothing queued, in hand or waiting in the inbox for a re-read."""
        return not self._lanes

    async def wait_idle(self) -> None:
        """Return once no lane exists (each reaped after ``idle_seconds`` without work)."""
        await self._all_done.wait()

    def occupancy(self) -> tuple[int, int]:
        """(updates queued in lanes, lanes overflowing): the two figures of
        :meth:`statistics` the fleet's ``/metrics`` totals add up, read cheaply."""
        lanes = self._lanes
        if not lanes:
            return 0, 0
        queued = overflowing = 0
        for lane in lanes.values():
            queued += len(lane.queue)
            overflowing += lane.overflow
        return queued, overflowing

    def statistics(self) -> LaneStatistics:
        lanes = self._lanes.values()
        return LaneStatistics(
            active_lanes=len(self._lanes),
            busy_lanes=sum(1 for lane in lanes if lane.busy),
            queued_updates=sum(len(lane.queue) for lane in lanes),
            lanes_reaped=self._reaped,
            overflowing_lanes=sum(1 for lane in lanes if lane.overflow),
            refills=self._refills,
        )

    async def _run_lane(self, key: Hashable, lane: _Lane[T]) -> None:
        try:
            while not self._closing:
                item = await self._next(key, lane)
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
            if not self._lanes:
                self._all_done.set()

    async def _next(self, key: Hashable, lane: _Lane[T]) -> T | None:
        """The lane's next update, or None when closing or idle long enough to be reaped."""
        while not self._closing:
            if lane.queue:
                return lane.queue.popleft()
            if lane.overflow and lane.last is not None:
                await self._read_back(key, lane)
                continue
            lane.wakeup = trio.Event()
            with trio.move_on_after(self._idle):
                await lane.wakeup.wait()
                continue
            # Idle: reap only if nothing arrived in the same instant (no await since the wait).
            if not lane.queue and not lane.overflow:
                self._reaped += 1
                return None
        return None

    async def _read_back(self, key: Hashable, lane: _Lane[T]) -> None:
        """Take the lane's next undone updates from the inbox, after its cursor."""
        assert lane.last is not None
        lane.missed = False
        self._refills += 1
        items, exhausted = await self._refill(key, lane.last, self._buffer)
        for item in items:
            position = self._position(item)
            if position > lane.last_position:
                lane.take(item, position, 2 * self._buffer)
        # Anything dispatched during the read may have committed after its snapshot.
        if exhausted and not lane.missed:
            lane.overflow = False
