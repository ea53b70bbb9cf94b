"""Simulated users: every chat of every bot driven by one task and one timer heap.

Ten thousand bots with a few chats each must not mean fifty thousand tasks: each simulated chat
is an entry ``(next message time, tie-breaker, chat)`` in one heap, and one task sleeps until the
earliest entry is due. Messages of a chat arrive as a Poisson process at the chat's rate; what
each one is (a message, in which forum topic, an edit, a button press) the API decides from the
chat's shares when it is due.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = ["ChatTraffic", "UserTraffic", "UserTrafficStatistics"]


class ChatTraffic:
    """One simulated chat: who writes, how often, how many messages are left."""

    __slots__ = (
        "bot_key",
        "callback_share",
        "chat_id",
        "chat_type",
        "edit_share",
        "rate",
        "remaining",
        "topics",
        "user_id",
    )

    def __init__(
        self,
        bot_key: str,
        chat_id: int,
        chat_type: str,
        user_id: int,
        rate: float,
        remaining: int | None,
        *,
        topics: tuple[int, ...] = (),
        edit_share: float = 0.0,
        callback_share: float = 0.0,
    ) -> None:
        self.bot_key = bot_key
        self.chat_id = chat_id
        self.chat_type = chat_type
        self.user_id = user_id
        self.rate = rate
        self.remaining = remaining  # None: unbounded
        self.topics = topics  # a forum's topics: each message goes to one of them
        self.edit_share = edit_share  # of its messages, edits of the last one
        self.callback_share = callback_share  # of its messages, presses of a bot's button


@dataclass(frozen=True)
class UserTrafficStatistics:
    chats: int  # simulated chats added
    active_chats: int  # chats that will still send messages
    messages_sent: int


class UserTraffic:
    """The heap of simulated chats; ``run`` posts each chat's messages when they are due."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._heap: list[tuple[float, int, ChatTraffic]] = []
        self._tiebreak = itertools.count()
        self._changed = trio.Event()
        self._chats = 0
        self._sent = 0
        self._unanchored: list[ChatTraffic] = []

    def add(self, chat: ChatTraffic) -> None:
        """Schedule ``chat``'s first message one random interval from now (or from ``run``)."""
        if chat.remaining == 0:
            return
        self._chats += 1
        try:
            now = trio.current_time()
        except RuntimeError:
            # Added outside a Trio run: scheduled from the moment ``run`` starts.
            self._unanchored.append(chat)
            return
        self._schedule(chat, now)
        self._changed.set()

    def move(self, bot_key: str, old_chat_id: int, new_chat_id: int, chat_type: str) -> None:
        """The chat moved (a group upgraded to a supergroup): its users write in the new one."""
        for chat in itertools.chain((entry[2] for entry in self._heap), self._unanchored):
            if chat.bot_key == bot_key and chat.chat_id == old_chat_id:
                chat.chat_id = new_chat_id
                chat.chat_type = chat_type

    def _schedule(self, chat: ChatTraffic, start: float) -> None:
        due = start + self._rng.expovariate(chat.rate)
        heapq.heappush(self._heap, (due, next(self._tiebreak), chat))

    def statistics(self) -> UserTrafficStatistics:
        return UserTrafficStatistics(
            chats=self._chats,
            active_chats=len(self._heap) + len(self._unanchored),
            messages_sent=self._sent,
        )

    async def run(
        self,
        post: Callable[[ChatTraffic], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Post every due message with ``post`` until cancelled."""
        heap = self._heap
        now = trio.current_time()
        for chat in self._unanchored:
            self._schedule(chat, now)
        self._unanchored.clear()
        task_status.started()
        while True:
            deadline = heap[0][0] if heap else math.inf
            with trio.move_on_at(deadline):
                await self._changed.wait()
            if self._changed.is_set():
                self._changed = trio.Event()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                due, _, chat = heap[0]
                post(chat)
                self._sent += 1
                if chat.remaining is not None:
                    chat.remaining -= 1
                if chat.remaining == 0:
                    heapq.heappop(heap)
                else:
                    # Schedule from the due time, not from now: the rate holds when we run late.
                    heapq.heapreplace(
                        heap, (due + self._rng.expovariate(chat.rate), next(self._tiebreak), chat)
                    )
