"""What the simulated Bot API knows of each bot: identity, queue, waiting poll, deliveries."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import trio

from actors.bucket import TokenBucketCore
from actors.config import DEFAULT_ALLOWED_UPDATES as _CONFIG_DEFAULT_ALLOWED_UPDATES
from actors.config import UPDATE_TYPES
from actors.secrets import BotToken
from actors.simulator.faults import FaultKind, FaultProfile
from actors.simulator.report import DeliveryLog

if TYPE_CHECKING:
    from actors.simulator.webhooks import Webhook

__all__ = [
    "DEFAULT_ALLOWED_UPDATES",
    "UPDATE_TYPES",
    "BotMessage",
    "BusinessConnection",
    "CallRecord",
    "ChatInfo",
    "RawUpdate",
    "SentMessage",
    "SimBot",
    "SimUpdate",
    "token_key",
]

# Those a bot gets when it never chose: Telegram's default, declared once in actors.config.
DEFAULT_ALLOWED_UPDATES = frozenset(_CONFIG_DEFAULT_ALLOWED_UPDATES)


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
    thread_id: int | None = None  # a forum topic's message_thread_id


class RawUpdate(NamedTuple):
    """Any other update waiting in a bot's queue: its type and its payload, as sent."""

    update_id: int
    kind: str  # "callback_query", "business_message", ...
    payload: dict[str, Any]


@dataclass(frozen=True)
class SentMessage:
    """A message a bot delivered (recorded only with ``record=True``), and where it landed."""

    time: float
    chat_id: int
    message_id: int
    text: str
    message_thread_id: int | None = None  # the forum topic (None: the General topic)
    business_connection_id: str | None = None  # sent on behalf of a business account
    direct_messages_topic_id: int | None = None  # the topic of a channel's direct messages
    reply_to_message_id: int | None = None  # from reply_parameters


class BotMessage:
    """A message the bot sent, kept so editMessageText and button presses can refer to it."""

    __slots__ = ("buttons", "text")

    def __init__(self, text: str, buttons: tuple[str, ...]) -> None:
        self.text = text
        self.buttons = buttons  # callback_data of its inline keyboard


class BusinessConnection:
    """A business account that connected the bot: its owner and the customers who wrote."""

    __slots__ = ("chats", "user_id")

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.chats: set[int] = set()  # customers' chats the bot may answer through it


class ChatInfo:
    """What the simulator knows of a chat beyond its report log (created on first need)."""

    __slots__ = (
        "dm_topics",
        "is_direct_messages",
        "is_forum",
        "migrated_to",
        "topics",
        "via_business",
    )

    def __init__(self) -> None:
        self.is_forum = False
        self.topics: dict[int, str] = {}  # forum topics: message_thread_id -> name
        self.is_direct_messages = False
        self.dm_topics: set[int] = set()  # a channel's direct-messages topics
        self.migrated_to: int | None = None  # a basic group upgraded to this supergroup
        # Known only through this business connection: the customer never wrote to the bot.
        self.via_business: str | None = None


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
        "allowed_updates",
        "blocked",
        "bot_id",
        "bot_messages",
        "buckets",
        "business",
        "callbacks",
        "chat_info",
        "faults",
        "first_name",
        "log",
        "next_message_id",
        "next_update_id",
        "pending",
        "polling",
        "refusals",
        "revoked",
        "sent",
        "token",
        "updates_confirmed",
        "username",
        "waiter",
        "webhook",
    )

    def __init__(self, token: str, bot_id: int, username: str, first_update_id: int) -> None:
        self.token = token
        self.bot_id = bot_id
        self.username = username
        self.first_name = f"Bot {bot_id}"
        self.revoked = False
        self.faults: FaultProfile | None = None  # None: the global profile
        # Scripted refusals (SimulatedBotApi.refuse): lower-cased method -> the answers
        # (error_code, description) its next calls get, in order.
        self.refusals: dict[str, deque[tuple[int, str]]] | None = None
        self.next_update_id = first_update_id
        self.next_message_id = 1
        self.pending: deque[SimUpdate | RawUpdate] = deque()
        # Telegram keeps the last allowed_updates a getUpdates named, per bot.
        self.allowed_updates: frozenset[str] = DEFAULT_ALLOWED_UPDATES
        self.chat_info: dict[int, ChatInfo] = {}
        self.business: dict[str, BusinessConnection] = {}
        # Callback queries not answered yet: id -> (chat_id or None, Trio time it was made).
        self.callbacks: dict[str, tuple[int | None, float]] = {}
        # The bot's recent messages by (chat_id, message_id), oldest first, bounded.
        self.bot_messages: dict[tuple[int, int], BotMessage] = {}
        self.waiter: trio.Event | None = None  # set when an update arrives for a waiting poll
        self.polling = False
        self.updates_confirmed = 0
        self.log = DeliveryLog()
        self.blocked: set[int] | None = None
        # Flood-limit buckets per chat, and the bot's own under the key None.
        self.buckets: dict[int | None, TokenBucketCore] | None = None
        self.sent: deque[SentMessage] | None = None
        self.webhook: Webhook | None = None  # set by setWebhook: updates are pushed

    def __repr__(self) -> str:
        return f"<SimBot id={self.bot_id} username={self.username!r}>"

    @property
    def pending_updates(self) -> int:
        return len(self.pending)

    @property
    def replies(self) -> list[SentMessage]:
        """Delivered messages, oldest first (empty unless the API records)."""
        return list(self.sent) if self.sent is not None else []

    def info(self, chat_id: int) -> ChatInfo:
        """The chat's :class:`ChatInfo`, created empty on first use."""
        info = self.chat_info.get(chat_id)
        if info is None:
            info = self.chat_info[chat_id] = ChatInfo()
        return info

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
