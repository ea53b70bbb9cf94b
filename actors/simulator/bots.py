"""What the simulated Bot API knows of each bot: identity, queue, waiting poll, deliveries."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import trio

from actors.bucket import TokenBucketCore
from actors.secrets import BotToken
from actors.simulator.faults import FaultKind, FaultProfile
from actors.simulator.report import DeliveryLog

__all__ = ["CallRecord", "SentMessage", "SimBot", "SimUpdate", "token_key"]


def token_key(token: str | BotToken) -> str:
    """The token as the simulator's dictionaries are keyed."""
    return token.reveal() if isinstance(token, BotToken) else token


class SimUpdate(NamedTuple):
    """A user's message waiting in a bot's queue, as the simulator keeps it."""

    update_id: int
    message_id: int
    date: int
    chat_id: int
    chat_type: str
    user_id: int
    text: str


@dataclass(frozen=True)
class SentMessage:
    """A message a bot delivered (recorded only with ``record=True``)."""

    time: float
    chat_id: int
    message_id: int
    text: str


@dataclass(frozen=True)
class CallRecord:
    """One call as the server saw it (recorded only with ``record=True``).

    ``status`` is the HTTP status answered, 0 when no answer was given: then ``fault`` says
    why, or both are unset when the caller went away (cancelled) first.
    """

    time: float  # Trio time the call arrived
    bot_id: int | None  # None for an unknown token
    method: str
    params: Mapping[str, Any]
    status: int
    fault: FaultKind | None
    delivered: bool  # the call took effect (meaningful for sendMessage under a fault)


class SimBot:
    """One bot as the server knows it: identity, pending updates, waiting poll, deliveries."""

    __slots__ = (
        "blocked",
        "bot_id",
        "buckets",
        "faults",
        "first_name",
        "log",
        "next_message_id",
        "next_update_id",
        "pending",
        "polling",
        "revoked",
        "sent",
        "token",
        "updates_confirmed",
        "username",
        "waiter",
    )

    def __init__(self, token: str, bot_id: int, username: str, first_update_id: int) -> None:
        self.token = token
        self.bot_id = bot_id
        self.username = username
        self.first_name = f"Bot {bot_id}"
        self.revoked = False
        self.faults: FaultProfile | None = None  # None: the global profile
        self.next_update_id = first_update_id
        self.next_message_id = 1
        self.pending: deque[SimUpdate] = deque()
        self.waiter: trio.Event | None = None  # set when an update arrives for a waiting poll
        self.polling = False
        self.updates_confirmed = 0
        self.log = DeliveryLog()
        self.blocked: set[int] | None = None
        # Flood-limit buckets per chat, and the bot's own under the key None.
        self.buckets: dict[int | None, TokenBucketCore] | None = None
        self.sent: deque[SentMessage] | None = None

    def __repr__(self) -> str:
        return f"<SimBot id={self.bot_id} username={self.username!r}>"

    @property
    def pending_updates(self) -> int:
        return len(self.pending)

    @property
    def replies(self) -> list[SentMessage]:
        """Delivered messages, oldest first (empty unless the API records)."""
        return list(self.sent) if self.sent is not None else []

    def user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
