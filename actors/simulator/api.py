"""A simulated Telegram Bot API on Trio time: the embedded default of demo, tests and benchmarks.

:meth:`SimulatedBotApi.handle` is the whole server: ``(token, method, params)`` in,
``(HTTP status, JSON body)`` out, with Telegram's semantics and error shapes, long polls on Trio
time (so a ``MockClock`` drives them), injected faults, outages and optional flood limits.
Faults with no HTTP answer are raised as :class:`~actors.simulator.faults.SimulatedFault`;
``SimulatedTransport`` (in process) and ``create_sim_app`` (real HTTP) turn them into what a
client would see. Simulated users (``add_users`` + ``run``) write to the bots, and
:meth:`SimulatedBotApi.report` tells whether every message was answered once and in order
(the matching rule is in :mod:`actors.simulator.report`).

Methods: getMe, getUpdates, sendMessage, sendChatAction, editMessageText,
answerCallbackQuery, setWebhook, deleteWebhook, getWebhookInfo; any other -> 404 Not Found, as
Telegram answers. Method names are case-insensitive, as Telegram's. Telegram's rules that
handlers meet:

- sendMessage only reaches chats that wrote to the bot first (else 400 chat not found);
  ``message_thread_id`` must name a topic of the forum (400 message thread not found);
  ``business_connection_id`` must be a known connection whose customer wrote, and a customer
  known only through a connection is reached only through it; a channel's direct-messages
  chat needs ``direct_messages_topic_id``; ``reply_parameters`` must name a message of the
  chat unless ``allow_sending_without_reply``; ``reply_markup`` inline buttons can be pressed
  later (:meth:`SimulatedBotApi.send_callback_query`). Each delivered message is recorded
  with where it landed (:class:`~actors.simulator.bots.SentMessage`), and the report counts
  answers that landed outside their message's topic or connection.
- A basic group upgraded to a supergroup (:meth:`SimulatedBotApi.migrate_group`) answers
  400 "group chat was upgraded to a supergroup chat" with ``parameters.migrate_to_chat_id``.
- editMessageText with the message's current text and markup: 400 "message is not
  modified"; answerCallbackQuery of an unknown or already answered query: 400 "query is too
  old"; a user who blocked the bot (:meth:`SimulatedBotApi.block`): 403.
- getUpdates' ``allowed_updates`` is kept per bot until a call names another; without one
  ever, Telegram's default (every type but chat_member, message_reaction and
  message_reaction_count; an empty list means the default too). As in Telegram, the setting
  decides when an update is created: a type not allowed then is never queued. setWebhook's
  ``allowed_updates`` is the same kept setting.
- While a webhook is set, getUpdates answers 409 and :meth:`SimulatedBotApi.push_webhooks`
  POSTs each update to it, per-chat queues, retries and expiry as Telegram's (the rules are in
  :mod:`actors.simulator.webhooks`); an update answered 2xx is confirmed like one a getUpdates
  offset confirms.

Control methods (what users, groups and Telegram do; those that queue an update return its
id, the others what they created: a topic's thread id, a connection's or a query's id):
``send_user_message`` (optionally in a forum topic), ``send_update`` (any realistic update,
e.g. from ``tests/payloads.py``), ``create_forum_topic``, ``add_business_connection``,
``send_business_message``, ``send_callback_query``, ``edit_user_message``,
``send_channel_post``, ``send_reaction``, ``send_member_update``, ``migrate_group``,
``set_allowed_updates``, ``block``, ``revoke``, ``refuse`` (the next N calls of one method
fail with a chosen Bot API error, e.g. setWebhook answered 500 three times); simulated users
(``add_users``) produce messages, forum-topic messages, edits and button presses.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

import httpx
import trio

from actors.secrets import BotToken, redact
from actors.simulator import updates as shapes
from actors.simulator.bots import (
    DEFAULT_ALLOWED_UPDATES,
    UPDATE_TYPES,
    BusinessConnection,
    CallRecord,
    RawUpdate,
    SimBot,
    SimUpdate,
    token_key,
)
from actors.simulator.faults import (
    FaultKind,
    FaultProfile,
    FloodLimits,
    OutageMode,
    SimulatedFault,
)
from actors.simulator.protocol import (
    CONFLICT,
    BadRequest,
    Response,
    error,
    int_param,
    ok,
    render_update,
)
from actors.simulator.report import (
    NO_PLACE,
    BotReport,
    ChatLog,
    Place,
    SimReport,
    edited_text,
    tagged_text,
)
from actors.simulator.sending import (
    answer_callback_query,
    edit_message_text,
    landing_place,
    new_message_id,
    send_message,
    target_chat,
)
from actors.simulator.users import ChatTraffic, UserTraffic
from actors.simulator.webhooks import (
    WebhookHub,
    WebhookStatistics,
    conflict,
    parse_allowed_updates,
)

__all__ = ["SIM_EPOCH", "SimStatistics", "SimulatedBotApi"]

# Wall-clock of the simulated world when none is injected: this epoch plus Trio time.
SIM_EPOCH = 1_700_000_000.0
_TOKEN = re.compile(r"([0-9]{1,20}):[A-Za-z0-9_-]{20,}")
_TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
_CHAT_TYPES = frozenset({"private", "group", "supergroup"})
# Message-like payloads: a chat, maybe a text that wants an answer.
_MESSAGE_KINDS = frozenset({"message", "business_message", "channel_post"})


@dataclass(frozen=True)
class SimStatistics:
    """Counters of the simulated Bot API since it was built."""

    bots: int
    revoked_bots: int
    calls: int
    ok: int  # answered ok: true
    errors: int  # answered ok: false (injected or not)
    unauthorized: int  # 401 for an unknown or revoked token
    conflicts: int  # 409 for a concurrent getUpdates
    flood_limited: int  # 429 from the flood limits
    injected_5xx: int
    injected_409: int
    injected_429: int
    connect_errors: int
    bad_gateways: int
    timeouts: int
    drops: int
    delivered_before_fault: int  # calls that took effect, then timed out or dropped
    waiting_polls: int  # getUpdates long polls waiting now
    pending_updates: int  # updates not confirmed by their bot yet
    updates_confirmed: int
    user_messages: int
    replies: int  # messages delivered by sendMessage
    simulated_chats: int
    active_chats: int  # simulated chats that will still send (0: every user is done)
    calls_by_method: Mapping[str, int]
    filtered_updates: int = 0  # not queued: the bot's allowed_updates left their type out
    webhooks: WebhookStatistics | None = None  # pushed deliveries (see push_webhooks)


class SimulatedBotApi:
    """A Telegram Bot API stand-in for many bots, driven by Trio time.

    ``rng`` drives every random choice (faults, latency, users, update ids), so a seed makes a
    run repeatable. ``wall_clock`` gives message dates (default: a fixed epoch plus Trio time).
    ``record=True`` keeps the last ``call_log_size`` calls in :attr:`calls` and each bot's
    delivered messages; leave it off for long runs (counters and :meth:`report` always work).
    ``flood_limits`` enables Telegram-like 429s on sendMessage (off by default).
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        wall_clock: Callable[[], float] | None = None,
        record: bool = False,
        call_log_size: int = 10_000,
        flood_limits: FloodLimits | None = None,
    ) -> None:
        if call_log_size < 1:
            raise ValueError(f"call_log_size must be >= 1, got {call_log_size!r}")
        self._rng = rng
        self._wall_clock = wall_clock
        self._record = record
        self._call_log_size = call_log_size
        self.calls: deque[CallRecord] = deque(maxlen=call_log_size)
        self._flood = flood_limits
        self._bots: dict[str, SimBot] = {}
        # Which clients (named by the HTTP server's /c/{client}/ prefix) called getUpdates
        # of each bot, how often (bot id -> name -> calls), and the 409s each client got for
        # a concurrent poll: shards that share the fleet must never poll one bot both.
        self._pollers: dict[int, dict[str, int]] = {}
        self._poll_conflicts: dict[str, int] = {}
        self._faults = FaultProfile()
        self._outage_until = -math.inf
        self._outage_mode = OutageMode.MIXED
        self._users = UserTraffic(rng)
        self._next_user_id = 100_000_001
        self._next_group = 1
        self._next_query = 0
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "calls",
                "ok",
                "errors",
                "unauthorized",
                "conflicts",
                "flood_limited",
                "injected_5xx",
                "injected_409",
                "injected_429",
                "delivered_before_fault",
                "waiting_polls",
                "pending_updates",
                "updates_confirmed",
                "user_messages",
                "replies",
                "filtered_updates",
            ),
            0,
        )
        self._fault_counts: dict[FaultKind, int] = dict.fromkeys(FaultKind, 0)
        self._by_method: dict[str, int] = {}
        self._hooks = WebhookHub(
            rng=rng,
            date=self._date,
            acknowledge=self._acknowledge,
            forget=self._forget,
            drop_pending=lambda bot: self._confirm(bot, bot.next_update_id),
            paused_until=lambda: self._outage_until,
        )

    # -- bots ---------------------------------------------------------------------------------

    @staticmethod
    def make_token(bot_id: int, rng: random.Random) -> str:
        """A token of Telegram's shape: ``<bot_id>:AA`` and 33 random base64url characters."""
        if bot_id < 1:
            raise ValueError(f"bot_id must be >= 1, got {bot_id!r}")
        return f"{bot_id}:AA" + "".join(rng.choice(_TOKEN_ALPHABET) for _ in range(33))

    def add_bot(
        self,
        token: str | BotToken,
        *,
        bot_id: int | None = None,
        username: str | None = None,
    ) -> SimBot:
        """Register a bot. Its id defaults to the token's numeric prefix, as Telegram's is."""
        key = token_key(token)
        match = _TOKEN.fullmatch(key)
        if match is None:
            raise ValueError(
                "a simulated bot's token must look like '<bot_id>:<35 letters, digits, - or _>'"
            )
        if key in self._bots:
            raise ValueError(f"a simulated bot with token {redact(key)} was already added")
        bot_id = int(match.group(1)) if bot_id is None else bot_id
        bot = SimBot(
            key,
            bot_id,
            username if username is not None else f"sim{bot_id}_bot",
            first_update_id=self._rng.randrange(100_000, 900_000),
        )
        if self._record:
            bot.sent = deque(maxlen=self._call_log_size)
        self._bots[key] = bot
        return bot

    def bot(self, token: str | BotToken) -> SimBot:
        """The bot with ``token``; LookupError if it was never added."""
        key = token_key(token)
        bot = self._bots.get(key)
        if bot is None:
            raise LookupError(f"no simulated bot has the token {redact(key)}")
        return bot

    @property
    def bots(self) -> tuple[SimBot, ...]:
        return tuple(self._bots.values())

    def revoke(self, token: str | BotToken) -> None:
        """From now on every call with this token is answered 401 Unauthorized."""
        bot = self.bot(token)
        bot.revoked = True
        if bot.waiter is not None:
            bot.waiter.set()

    def refuse(
        self,
        token: str | BotToken,
        method: str,
        times: int,
        *,
        error_code: int = 500,
        description: str = "Internal Server Error",
    ) -> None:
        """The bot's next ``times`` calls of ``method`` are answered with this Bot API error
        (after any earlier refusals of it); the calls after them are answered as usual."""
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times!r}")
        if not 400 <= error_code <= 599:
            raise ValueError(f"error_code must be an HTTP error status (400-599), got {error_code}")
        bot = self.bot(token)
        if bot.refusals is None:
            bot.refusals = {}
        queue = bot.refusals.setdefault(method.lower(), deque())
        queue.extend([(error_code, description)] * times)

    def block(self, token: str | BotToken, chat_id: int) -> None:
        """The user of ``chat_id`` blocked the bot: sendMessage there -> 403 Forbidden."""
        bot = self.bot(token)
        if bot.blocked is None:
            bot.blocked = set()
        bot.blocked.add(chat_id)

    def unblock(self, token: str | BotToken, chat_id: int) -> None:
        """The user of ``chat_id`` unblocked the bot: its messages land there again."""
        blocked = self.bot(token).blocked
        if blocked is not None:
            blocked.discard(chat_id)

    # -- faults -------------------------------------------------------------------------------

    def set_faults(
        self, profile: FaultProfile | None, *, token: str | BotToken | None = None
    ) -> None:
        """Set the global fault profile (``token=None``) or one bot's, which replaces it.

        ``None`` clears: no global faults, or the bot follows the global profile again.
        """
        if token is None:
            self._faults = profile if profile is not None else FaultProfile()
        else:
            self.bot(token).faults = profile

    def outage(self, until: float, *, mode: OutageMode = OutageMode.MIXED) -> None:
        """Every call of every bot fails until Trio time ``until``, with no Bot API answer."""
        self._outage_until = until
        self._outage_mode = mode

    # -- users --------------------------------------------------------------------------------

    def send_user_message(
        self,
        token: str | BotToken,
        chat_id: int,
        text: str,
        *,
        chat_type: str = "private",
        user_id: int | None = None,
        message_thread_id: int | None = None,
    ) -> int:
        """A user writes ``text`` to the bot in ``chat_id``: enqueues an update, returns its id.

        ``message_thread_id`` writes in a forum topic (see :meth:`create_forum_topic`). The
        message is tracked by its whole text (see :mod:`actors.simulator.report`).
        """
        if chat_type not in _CHAT_TYPES:
            raise ValueError(f"chat_type must be one of {sorted(_CHAT_TYPES)}, got {chat_type!r}")
        bot = self.bot(token)
        if user_id is None:
            user_id = chat_id if chat_type == "private" else 100_000_000 + abs(chat_id) % 10**8
        if message_thread_id is not None:
            info = bot.chat_info.get(chat_id)
            if info is None or message_thread_id not in info.topics:
                raise ValueError(
                    f"chat {chat_id} has no forum topic {message_thread_id}: "
                    "create it with create_forum_topic first"
                )
            chat_type = "supergroup"
        log = bot.log.chat(chat_id, chat_type, user_id)
        return self._post(bot, chat_id, log, text, manual=True, thread_id=message_thread_id)

    def send_update(self, token: str | BotToken, update: Mapping[str, Any]) -> int:
        """Queue any realistic update (e.g. one of ``tests/payloads.py``) for the bot.

        ``update`` holds one update type (and optionally an ``update_id``, replaced by the
        bot's next id, which is returned). The simulator learns from it as Telegram would: its
        chat can be answered, a forum topic message's topic exists, a business connection or
        message makes the connection and its customer known, a callback query waits for
        answerCallbackQuery, a ``migrate_to_chat_id`` service message upgrades the group. A
        text message (message, business_message) is tracked by its whole text in the report.
        """
        kinds = [k for k in update if k != "update_id"]
        if len(kinds) != 1 or not isinstance(update[kinds[0]], Mapping):
            raise ValueError(
                "an update holds exactly one update type besides update_id, e.g. "
                f"{{'message': {{...}}}}; got the keys {sorted(update)}"
            )
        kind = kinds[0]
        payload: dict[str, Any] = json.loads(json.dumps(update[kind]))
        bot = self.bot(token)
        update_id = self._enqueue(bot, kind, payload)
        self._learn(bot, kind, payload)
        return update_id

    def create_forum_topic(
        self,
        token: str | BotToken,
        chat_id: int,
        name: str = "Topic",
        *,
        user_id: int | None = None,
    ) -> int:
        """Make ``chat_id`` a forum supergroup with a new topic; returns its message_thread_id.

        Queues the ``forum_topic_created`` service message, as Telegram does.
        """
        bot = self.bot(token)
        if user_id is None:
            user_id = 100_000_000 + abs(chat_id) % 10**8
        log = bot.log.chat(chat_id, "supergroup", user_id)
        if log.chat_type != "supergroup":
            raise ValueError(f"only a supergroup can be a forum; chat {chat_id} is {log.chat_type}")
        info = bot.info(chat_id)
        info.is_forum = True
        thread_id = new_message_id(bot)
        info.topics[thread_id] = name
        self._enqueue(
            bot,
            "message",
            {
                "message_id": thread_id,
                "from": shapes.user(user_id),
                "chat": shapes.chat(chat_id, "supergroup", user_id, is_forum=True),
                "date": self._date(),
                "message_thread_id": thread_id,
                "is_topic_message": True,
                "forum_topic_created": {"name": name, "icon_color": 7322096},
            },
        )
        return thread_id

    def add_business_connection(
        self, token: str | BotToken, user_id: int, *, connection_id: str | None = None
    ) -> str:
        """A business account (``user_id``) connects the bot: queues ``business_connection``
        and returns the connection's id."""
        bot = self.bot(token)
        if connection_id is None:
            connection_id = f"bc-{bot.bot_id}-{len(bot.business) + 1}"
        self.send_update(
            bot.token,
            {
                "business_connection": {
                    "id": connection_id,
                    "user": shapes.user(user_id),
                    "user_chat_id": user_id,
                    "date": self._date(),
                    "rights": {"can_reply": True, "can_read_messages": True},
                    "is_enabled": True,
                }
            },
        )
        return connection_id

    def send_business_message(
        self, token: str | BotToken, connection_id: str, chat_id: int, text: str
    ) -> int:
        """A customer (private ``chat_id``) writes ``text`` to the business account: queues
        ``business_message``; the answer belongs in that connection."""
        bot = self.bot(token)
        if connection_id not in bot.business:
            raise ValueError(
                f"no business connection {connection_id!r}: add it with add_business_connection"
            )
        return self.send_update(
            bot.token,
            {
                "business_message": {
                    "message_id": new_message_id(bot),
                    "from": shapes.user(chat_id),
                    "chat": shapes.chat(chat_id, "private", chat_id),
                    "date": self._date(),
                    "business_connection_id": connection_id,
                    "text": text,
                }
            },
        )

    def send_callback_query(
        self,
        token: str | BotToken,
        chat_id: int,
        *,
        message_id: int | None = None,
        data: str | None = None,
        user_id: int | None = None,
    ) -> str:
        """A user presses a button under the bot's message in ``chat_id``; returns the query id.

        Without ``message_id``: the bot's latest message there with an inline keyboard, else
        its latest message (as if it had buttons). ``data`` defaults to the first button's
        ``callback_data``. The query waits for answerCallbackQuery (the report counts it).
        """
        bot = self.bot(token)
        log = bot.log.chats.get(chat_id)
        mine = [(key[1], sent) for key, sent in bot.bot_messages.items() if key[0] == chat_id]
        if message_id is not None:
            mine = [(mid, sent) for mid, sent in mine if mid == message_id]
        if log is None or not mine:
            raise LookupError(
                f"the bot has no message in chat {chat_id} to press a button under"
                + (f" with message_id {message_id}" if message_id is not None else "")
            )
        with_buttons = [(mid, sent) for mid, sent in mine if sent.buttons]
        mid, sent = (with_buttons or mine)[-1]
        if user_id is None:
            user_id = log.user_id
        if data is None:
            data = sent.buttons[0] if sent.buttons else "button"
        self._next_query += 1
        query_id = f"{bot.bot_id}{self._next_query:010d}"
        message = {
            "message_id": mid,
            "from": shapes.bot_user(bot.bot_id, bot.first_name, bot.username),
            "chat": shapes.chat(chat_id, log.chat_type, log.user_id),
            "date": self._date(),
            "text": sent.text,
            "reply_markup": {
                "inline_keyboard": [
                    [{"text": d, "callback_data": d} for d in (sent.buttons or (data,))]
                ]
            },
        }
        payload = shapes.callback_query(
            query_id, user_id, message, data, str(-(abs(chat_id) * 7919 + bot.bot_id))
        )
        self.send_update(bot.token, {"callback_query": payload})
        return query_id

    def edit_user_message(
        self, token: str | BotToken, chat_id: int, message_id: int, text: str
    ) -> int:
        """The user edits their message ``message_id`` in ``chat_id``: queues edited_message."""
        bot = self.bot(token)
        log = bot.log.chats.get(chat_id)
        if log is None or message_id not in log.message_ids:
            raise LookupError(f"chat {chat_id} has no user message {message_id} to edit")
        return self._enqueue(
            bot,
            "edited_message",
            {
                "message_id": message_id,
                "from": shapes.user(log.user_id),
                "chat": shapes.chat(chat_id, log.chat_type, log.user_id),
                "date": self._date() - 1,
                "edit_date": self._date(),
                "text": text,
            },
        )

    def send_channel_post(self, token: str | BotToken, chat_id: int, text: str) -> int:
        """A post in the channel ``chat_id`` (where the bot is an admin): queues channel_post.

        Not tracked in the report: a bot need not answer its channel's posts.
        """
        bot = self.bot(token)
        log = bot.log.chat(chat_id, "channel", 0)
        shape = shapes.chat(chat_id, "channel", 0)
        message_id = new_message_id(bot)
        del log  # registered, so the bot may post there
        return self._enqueue(
            bot,
            "channel_post",
            {
                "message_id": message_id,
                "sender_chat": shape,
                "chat": shape,
                "date": self._date(),
                "text": text,
            },
        )

    def send_reaction(
        self,
        token: str | BotToken,
        chat_id: int,
        message_id: int,
        emoji: str = "\N{THUMBS UP SIGN}",
        *,
        user_id: int | None = None,
        count: int = 1,
    ) -> int:
        """A reaction to a message: ``message_reaction`` by ``user_id``, or with no user the
        anonymous ``message_reaction_count`` (``count`` reactions). Neither type reaches a bot
        unless its allowed_updates names it."""
        bot = self.bot(token)
        log = bot.log.chats.get(chat_id)
        if log is None:
            raise LookupError(f"the bot knows no chat {chat_id}")
        shape = shapes.chat(chat_id, log.chat_type, log.user_id)
        if user_id is None:
            return self._enqueue(
                bot,
                "message_reaction_count",
                shapes.reaction_count(shape, message_id, emoji, count, self._date()),
            )
        return self._enqueue(
            bot,
            "message_reaction",
            shapes.reaction(shape, message_id, user_id, emoji, self._date()),
        )

    def send_member_update(
        self,
        token: str | BotToken,
        chat_id: int,
        *,
        user_id: int,
        old_status: str = "left",
        new_status: str = "member",
        about_bot: bool = False,
        chat_type: str = "supergroup",
    ) -> int:
        """A member's status changed in ``chat_id``, by ``user_id``: ``chat_member`` (the
        member is ``user_id``), or ``my_chat_member`` with ``about_bot`` (the bot was added,
        removed, promoted…). A group that added the bot can then be answered."""
        bot = self.bot(token)
        log = bot.log.chat(chat_id, chat_type, user_id)
        shape = shapes.chat(chat_id, log.chat_type, log.user_id)
        member = (
            shapes.bot_user(bot.bot_id, bot.first_name, bot.username)
            if about_bot
            else shapes.user(user_id)
        )
        return self._enqueue(
            bot,
            "my_chat_member" if about_bot else "chat_member",
            shapes.member_update(shape, user_id, member, old_status, new_status, self._date()),
        )

    def migrate_group(self, token: str | BotToken, old_chat_id: int, new_chat_id: int) -> int:
        """Upgrade the basic group ``old_chat_id`` to the supergroup ``new_chat_id``.

        Queues the old group's ``migrate_to_chat_id`` service message and the new one's
        ``migrate_from_chat_id``; from now on, calls to the old id answer 400 with
        ``parameters.migrate_to_chat_id`` and its simulated users write in the new chat.
        Returns the first service message's update id.
        """
        bot = self.bot(token)
        log = bot.log.chats.get(old_chat_id)
        if log is None or log.chat_type != "group":
            raise ValueError(f"chat {old_chat_id} is not a basic group of this bot")
        if new_chat_id in bot.log.chats:
            raise ValueError(f"chat {new_chat_id} exists already")
        update_id = self._enqueue(
            bot,
            "message",
            {
                "message_id": new_message_id(bot),
                "from": shapes.user(log.user_id),
                "chat": shapes.chat(old_chat_id, "group", log.user_id),
                "date": self._date(),
                "migrate_to_chat_id": new_chat_id,
            },
        )
        self._migrate(bot, old_chat_id, new_chat_id)
        self._enqueue(
            bot,
            "message",
            {
                "message_id": 1,
                "from": shapes.user(log.user_id),
                "chat": shapes.chat(new_chat_id, "supergroup", log.user_id),
                "date": self._date(),
                "migrate_from_chat_id": old_chat_id,
            },
        )
        return update_id

    def _migrate(self, bot: SimBot, old: int, new: int) -> None:
        old_log = bot.log.chats.get(old)
        user_id = old_log.user_id if old_log is not None else 0
        bot.log.chat(new, "supergroup", user_id)
        bot.info(old).migrated_to = new
        bot.log.migrate(old, new)
        self._users.move(bot.token, old, new, "supergroup")

    def set_allowed_updates(self, token: str | BotToken, types: Iterable[str] | None) -> None:
        """Set the bot's kept ``allowed_updates`` as a previous getUpdates would have (a stale
        setting of another deployment); ``None`` or empty restores Telegram's default."""
        bot = self.bot(token)
        chosen = frozenset(types or ())
        unknown = sorted(chosen - set(UPDATE_TYPES))
        if unknown:
            raise ValueError(f"unknown update types {unknown}; known: {list(UPDATE_TYPES)}")
        bot.allowed_updates = chosen or DEFAULT_ALLOWED_UPDATES

    def add_users(
        self,
        token: str | BotToken,
        *,
        chats: int,
        rate: float,
        group_share: float = 0.0,
        count: int | None = None,
        forum_share: float = 0.0,
        basic_group_share: float = 0.0,
        edit_share: float = 0.0,
        callback_share: float = 0.0,
    ) -> tuple[int, ...]:
        """Add ``chats`` simulated chats writing to the bot, driven by :meth:`run`; returns
        their chat ids.

        Each chat sends ``count`` messages (None: forever) at ``rate`` messages a second on
        average (a Poisson process); ``group_share`` of the chats are groups: of those,
        ``forum_share`` are forums (two topics; every message in one of them) and
        ``basic_group_share`` basic groups (which :meth:`migrate_group` can upgrade), the rest
        supergroups. Of the messages, ``edit_share`` are edits of the chat's last message and
        ``callback_share`` button presses under the bot's last message there (when it sent
        one; else a message).
        """
        bot = self.bot(token)
        if not (isinstance(chats, int) and chats >= 0):
            raise ValueError(f"chats must be a whole number >= 0, got {chats!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be > 0 messages a second, got {rate!r}")
        for name, share in (
            ("group_share", group_share),
            ("forum_share", forum_share),
            ("basic_group_share", basic_group_share),
            ("edit_share", edit_share),
            ("callback_share", callback_share),
        ):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be from 0 to 1, got {share!r}")
        if forum_share + basic_group_share > 1:
            raise ValueError("forum_share + basic_group_share must be at most 1")
        if edit_share + callback_share > 1:
            raise ValueError("edit_share + callback_share must be at most 1")
        if count is not None and not (isinstance(count, int) and count >= 0):
            raise ValueError(f"count must be a whole number >= 0 or None, got {count!r}")
        groups = round(chats * group_share)
        forums = round(groups * forum_share)
        basic = round(groups * basic_group_share)
        added: list[int] = []
        for i in range(chats):
            user_id = self._next_user_id
            self._next_user_id += 1
            topics: tuple[int, ...] = ()
            if i < groups:
                if forums <= i < forums + basic:
                    chat_id = -4_000_000_000 - self._next_group
                    chat_type = "group"
                else:
                    chat_id = -1_000_000_000_000 - self._next_group
                    chat_type = "supergroup"
                self._next_group += 1
            else:
                chat_id, chat_type = user_id, "private"
            bot.log.chat(chat_id, chat_type, user_id)
            added.append(chat_id)
            if i < forums:
                info = bot.info(chat_id)
                info.is_forum = True
                for name in ("Support", "Chat"):
                    thread_id = new_message_id(bot)
                    info.topics[thread_id] = name
                topics = tuple(info.topics)
            self._users.add(
                ChatTraffic(
                    bot.token,
                    chat_id,
                    chat_type,
                    user_id,
                    rate,
                    count,
                    topics=topics,
                    edit_share=edit_share,
                    callback_share=callback_share,
                )
            )
        return tuple(added)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the simulated users until cancelled; ``started()`` at once."""
        await self._users.run(self._post_generated, task_status=task_status)

    def _post_generated(self, traffic: ChatTraffic) -> None:
        bot = self._bots[traffic.bot_key]
        chat_id = traffic.chat_id
        log = bot.log.chats[chat_id]
        u = self._rng.random() if traffic.edit_share or traffic.callback_share else 1.0
        if u < traffic.callback_share:
            if any(key[0] == chat_id for key in bot.bot_messages):
                self.send_callback_query(bot.token, chat_id, user_id=traffic.user_id)
                return
        elif u < traffic.callback_share + traffic.edit_share and log.message_ids:
            seq = len(log.message_ids)
            self.edit_user_message(
                bot.token, chat_id, log.message_ids[-1], edited_text(seq, chat_id)
            )
            return
        thread_id = self._rng.choice(traffic.topics) if traffic.topics else None
        self._post(bot, chat_id, log, tagged_text(log.next_seq, chat_id), thread_id=thread_id)

    def _post(
        self,
        bot: SimBot,
        chat_id: int,
        log: ChatLog,
        text: str,
        manual: bool = False,
        thread_id: int | None = None,
    ) -> int:
        update_id = bot.next_update_id
        bot.next_update_id += 1
        message_id = new_message_id(bot)
        place: Place = (thread_id, None, None) if thread_id is not None else NO_PLACE
        bot.log.user_message(log, message_id, text if manual else None, place)
        self._counts["user_messages"] += 1
        if "message" not in bot.allowed_updates:
            self._counts["filtered_updates"] += 1
            return update_id
        bot.pending.append(
            SimUpdate(
                update_id,
                message_id,
                self._date(),
                chat_id,
                log.chat_type,
                log.user_id,
                text,
                thread_id,
            )
        )
        self._counts["pending_updates"] += 1
        if bot.waiter is not None:
            bot.waiter.set()
        if bot.webhook is not None:
            self._hooks.queue(bot, bot.pending[-1])
        return update_id

    def _enqueue(self, bot: SimBot, kind: str, payload: dict[str, Any]) -> int:
        """Queue one update of ``kind``; its id is used even when allowed_updates drops it."""
        update_id = bot.next_update_id
        bot.next_update_id += 1
        if kind not in bot.allowed_updates and kind in UPDATE_TYPES:
            self._counts["filtered_updates"] += 1
            return update_id
        bot.pending.append(RawUpdate(update_id, kind, payload))
        self._counts["pending_updates"] += 1
        if bot.waiter is not None:
            bot.waiter.set()
        if bot.webhook is not None:
            self._hooks.queue(bot, bot.pending[-1])
        return update_id

    def _learn(self, bot: SimBot, kind: str, payload: Mapping[str, Any]) -> None:
        """What an injected update tells the simulated world (see :meth:`send_update`)."""
        if kind == "business_connection":
            business_id = str(payload.get("id"))
            if payload.get("is_enabled", True):
                owner = payload.get("user_chat_id") or 0
                bot.business.setdefault(business_id, BusinessConnection(int(owner)))
            else:
                bot.business.pop(business_id, None)
            return
        if kind == "callback_query":
            message = payload.get("message")
            holder = message.get("chat") if isinstance(message, Mapping) else None
            in_chat = holder.get("id") if isinstance(holder, Mapping) else None
            query_id = str(payload.get("id"))
            if isinstance(holder, Mapping) and isinstance(in_chat, int):
                # The button is under the bot's message there: the chat exists.
                presser = payload.get("from")
                bot.log.chat(
                    in_chat,
                    str(holder.get("type", "private")),
                    int(presser.get("id", 0)) if isinstance(presser, Mapping) else 0,
                )
            bot.callbacks[query_id] = (in_chat, trio.current_time())
            bot.log.callback_query(query_id, in_chat)
            return
        chat = payload.get("chat")
        if not isinstance(chat, Mapping) or not isinstance(chat.get("id"), int):
            return
        chat_id: int = chat["id"]
        sender = payload.get("from") or payload.get("user")
        user_id = sender.get("id", 0) if isinstance(sender, Mapping) else 0
        known = chat_id in bot.log.chats
        log = bot.log.chat(chat_id, str(chat.get("type", "private")), int(user_id))
        if kind not in _MESSAGE_KINDS:
            return
        thread_id = payload.get("message_thread_id") if payload.get("is_topic_message") else None
        if chat.get("is_forum") or thread_id is not None:
            info = bot.info(chat_id)
            info.is_forum = True
            if isinstance(thread_id, int):
                info.topics.setdefault(thread_id, "Topic")
        connection_id: str | None = payload.get("business_connection_id")
        if isinstance(connection_id, str):
            connection = bot.business.setdefault(connection_id, BusinessConnection(0))
            connection.chats.add(chat_id)
            if not known:
                bot.info(chat_id).via_business = connection_id
        else:
            connection_id = None
        dm_topic = payload.get("direct_messages_topic")
        dm_topic_id = dm_topic.get("topic_id") if isinstance(dm_topic, Mapping) else None
        if chat.get("is_direct_messages"):
            info = bot.info(chat_id)
            info.is_direct_messages = True
            if isinstance(dm_topic_id, int):
                info.dm_topics.add(dm_topic_id)
        migrate_to = payload.get("migrate_to_chat_id")
        if isinstance(migrate_to, int):
            self._migrate(bot, chat_id, migrate_to)
        text = payload.get("text")
        message_id = payload.get("message_id")
        if kind != "channel_post" and isinstance(text, str) and isinstance(message_id, int):
            place: Place = (
                thread_id if isinstance(thread_id, int) else None,
                connection_id,
                dm_topic_id if isinstance(dm_topic_id, int) else None,
            )
            bot.log.user_message(log, message_id, text, place)
            self._counts["user_messages"] += 1
            bot.next_message_id = max(bot.next_message_id, message_id + 1)

    def _date(self) -> int:
        if self._wall_clock is not None:
            return int(self._wall_clock())
        try:
            return int(SIM_EPOCH + trio.current_time())
        except RuntimeError:  # set up outside a Trio run (a sync fixture): time zero
            return int(SIM_EPOCH)

    # -- results ------------------------------------------------------------------------------

    def report(self) -> SimReport:
        """Per bot: messages, replies, answered, duplicates, out of order, unanswered ids,
        misplaced answers and button presses."""
        return SimReport(
            tuple(
                BotReport(
                    bot_id=bot.bot_id,
                    user_messages=bot.log.user_messages,
                    replies=bot.log.replies,
                    answered=bot.log.answered,
                    duplicates=bot.log.duplicates,
                    duplicate_replies=bot.log.duplicate_replies,
                    out_of_order=bot.log.out_of_order,
                    untracked_replies=bot.log.untracked_replies,
                    unanswered=bot.log.unanswered(),
                    updates_confirmed=bot.updates_confirmed,
                    updates_pending=len(bot.pending),
                    misplaced=bot.log.misplaced,
                    edit_replies=bot.log.edit_replies,
                    callback_queries=bot.log.callback_queries,
                    callbacks_answered=bot.log.callbacks_answered,
                    unanswered_callbacks=tuple(bot.log.callbacks),
                )
                for bot in self._bots.values()
            )
        )

    def note_poller(self, token: str | BotToken, client: str) -> None:
        """``client`` is about to call getUpdates of the bot ``token`` (see :meth:`pollers`)."""
        bot = self._bots.get(token_key(token))
        if bot is not None:
            calls = self._pollers.setdefault(bot.bot_id, {})
            calls[client] = calls.get(client, 0) + 1

    def note_poll_conflict(self, client: str) -> None:
        """``client``'s getUpdates was answered 409 (another poll of the bot was waiting)."""
        self._poll_conflicts[client] = self._poll_conflicts.get(client, 0) + 1

    def pollers(self) -> dict[int, dict[str, int]]:
        """Every bot's getUpdates calls by caller (bot id -> name -> calls): one name per
        bot when each bot has one owner."""
        return {bot_id: dict(calls) for bot_id, calls in self._pollers.items()}

    def poll_conflicts(self) -> dict[str, int]:
        """409s for a concurrent getUpdates, by the client that got them."""
        return dict(self._poll_conflicts)

    def statistics(self) -> SimStatistics:
        c = self._counts
        f = self._fault_counts
        users = self._users.statistics()
        return SimStatistics(
            bots=len(self._bots),
            revoked_bots=sum(1 for b in self._bots.values() if b.revoked),
            calls=c["calls"],
            ok=c["ok"],
            errors=c["errors"],
            unauthorized=c["unauthorized"],
            conflicts=c["conflicts"],
            flood_limited=c["flood_limited"],
            injected_5xx=c["injected_5xx"],
            injected_409=c["injected_409"],
            injected_429=c["injected_429"],
            connect_errors=f[FaultKind.CONNECT_ERROR],
            bad_gateways=f[FaultKind.BAD_GATEWAY],
            timeouts=f[FaultKind.TIMEOUT],
            drops=f[FaultKind.DROP],
            delivered_before_fault=c["delivered_before_fault"],
            waiting_polls=c["waiting_polls"],
            pending_updates=c["pending_updates"],
            updates_confirmed=c["updates_confirmed"],
            user_messages=c["user_messages"],
            replies=c["replies"],
            simulated_chats=users.chats,
            active_chats=users.active_chats,
            calls_by_method=MappingProxyType(dict(self._by_method)),
            filtered_updates=c["filtered_updates"],
            webhooks=self._hooks.statistics(),
        )

    async def push_webhooks(
        self,
        client: httpx.AsyncClient,
        *,
        trust_uploaded_certificates: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """POST the updates of every bot with a webhook through ``client``, until cancelled.

        Start it once, ``await nursery.start(api.push_webhooks, client)``, before or after
        bots call setWebhook. ``client`` is the caller's: an ``httpx.AsyncClient`` over a real
        network to 127.0.0.1, or over an in-process transport on a MockClock in tests. With
        ``trust_uploaded_certificates``, a webhook set with an uploaded (self-signed)
        certificate is reached over TLS trusting that certificate alone, as Telegram does.
        """
        await self._hooks.push(
            client, trust_uploaded_certificates=trust_uploaded_certificates, task_status=task_status
        )

    # -- the server ---------------------------------------------------------------------------

    async def handle(
        self, token: str | BotToken, method: str, params: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Answer one Bot API call: ``(HTTP status, JSON body)``.

        Raises :class:`SimulatedFault` for a fault without an answer (connect error, gateway
        page, timeout, drop); a TIMEOUT is raised at once and the transport holds the caller.
        """
        key = token_key(token)
        counts = self._counts
        counts["calls"] += 1
        self._by_method[method] = self._by_method.get(method, 0) + 1
        status = 0
        fault: FaultKind | None = None
        delivered = False
        time = trio.current_time()
        try:
            status, body = await self._handle(key, method, params)
        except SimulatedFault as exc:
            fault = exc.kind
            delivered = exc.delivered
            self._fault_counts[fault] += 1
            if delivered:
                counts["delivered_before_fault"] += 1
            raise
        finally:
            if self._record:
                bot = self._bots.get(key)
                self.calls.append(
                    CallRecord(
                        time=time,
                        bot_id=bot.bot_id if bot is not None else None,
                        method=method,
                        params=MappingProxyType(dict(params)),
                        status=status,
                        fault=fault,
                        delivered=delivered or (status == 200 and method.lower() == "sendmessage"),
                    )
                )
        if status == 200:
            counts["ok"] += 1
        else:
            counts["errors"] += 1
        return status, body

    async def _handle(self, key: str, method: str, params: Mapping[str, Any]) -> Response:
        rng = self._rng
        bot = self._bots.get(key)
        profile = self._faults if bot is None or bot.faults is None else bot.faults
        if trio.current_time() < self._outage_until:
            mode = self._outage_mode
            if mode is OutageMode.MIXED:
                mode = OutageMode.CONNECT_ERROR if rng.random() < 0.5 else OutageMode.BAD_GATEWAY
            raise SimulatedFault(FaultKind(mode.value))
        name = method.lower()
        drawn = self._draw(profile, name) if profile.fault_rate > 0 else None
        if drawn == "connect":
            raise SimulatedFault(FaultKind.CONNECT_ERROR)
        latency = profile.latency
        if profile.latency_jitter > 0:
            latency += rng.uniform(0, profile.latency_jitter)
        if latency > 0:
            await trio.sleep(latency / 2)
        if bot is None or bot.revoked:
            self._counts["unauthorized"] += 1
            response = error(401, "Unauthorized")
        elif bot.refusals is not None and bot.refusals.get(name):
            code, description = bot.refusals[name].popleft()
            response = error(code, description)
        elif drawn == "5xx":
            self._counts["injected_5xx"] += 1
            response = error(500, "Internal Server Error")
        elif drawn == "409":
            self._counts["injected_409"] += 1
            response = error(409, CONFLICT)
        elif drawn == "429":
            self._counts["injected_429"] += 1
            retry = profile.retry_after
            response = error(429, f"Too Many Requests: retry after {retry}", retry)
        else:
            try:
                if drawn is None:
                    response = await self._dispatch(bot, name, params)
                else:
                    await self._fail_after_receiving(bot, name, params, profile, drawn)
            except BadRequest as exc:
                response = error(400, str(exc), migrate_to_chat_id=exc.migrate_to_chat_id)
        if latency > 0:
            await trio.sleep(latency - latency / 2)
        return response

    def _draw(self, profile: FaultProfile, name: str) -> str | None:
        u = self._rng.random()
        for kind, rate in (
            ("connect", profile.connect_error_rate),
            ("5xx", profile.error_rate_5xx),
            ("timeout", profile.timeout_rate),
            ("drop", profile.drop_rate),
            ("409", profile.conflict_409_rate),
            ("429", profile.rate_limit_rate),
        ):
            if u < rate:
                return None if kind == "409" and name != "getupdates" else kind
            u -= rate
        return None

    async def _fail_after_receiving(
        self, bot: SimBot, name: str, params: Mapping[str, Any], profile: FaultProfile, drawn: str
    ) -> NoReturn:
        """A timeout or drop after the request arrived: the call may have taken effect."""
        kind = FaultKind.TIMEOUT if drawn == "timeout" else FaultKind.DROP
        delivered = False
        if name == "getupdates":
            # The offset is applied; the updates this poll would return stay pending.
            offset = int_param(params, "offset")
            if offset is not None and bot.webhook is None:
                self._confirm(bot, offset)
        elif self._rng.random() < profile.deliver_before_fault_rate:
            status, _ = await self._dispatch(bot, name, params)
            delivered = status == 200
        raise SimulatedFault(kind, delivered=delivered)

    async def _dispatch(self, bot: SimBot, name: str, params: Mapping[str, Any]) -> Response:
        if name == "getupdates":
            return await self._get_updates(bot, params)
        if name == "sendmessage":
            return send_message(bot, params, self._date(), self._flood, self._counts)
        if name == "getme":
            return ok(bot.user())
        if name == "editmessagetext":
            return edit_message_text(bot, params, self._date())
        if name == "answercallbackquery":
            return answer_callback_query(bot, params)
        if name == "sendchataction":
            chat_id, _ = target_chat(bot, params)
            landing_place(bot, chat_id, params)
            return ok(True)
        if name == "setwebhook":
            return self._hooks.set_webhook(bot, params)
        if name == "deletewebhook":
            return self._hooks.delete_webhook(bot, params)
        if name == "getwebhookinfo":
            return self._hooks.info(bot)
        return error(404, "Not Found")

    def _acknowledge(self, bot: SimBot, update: SimUpdate | RawUpdate) -> None:
        """A pushed update answered 2xx: confirmed, as a getUpdates offset confirms."""
        bot.pending.remove(update)
        bot.updates_confirmed += 1
        self._counts["updates_confirmed"] += 1
        self._counts["pending_updates"] -= 1

    def _forget(self, bot: SimBot, update: SimUpdate | RawUpdate) -> None:
        """A pushed update expired unanswered: dropped, as Telegram drops it."""
        bot.pending.remove(update)
        self._counts["pending_updates"] -= 1

    def _confirm(self, bot: SimBot, offset: int) -> None:
        pending = bot.pending
        if offset < 0:
            # Telegram: a negative offset keeps only the last -offset updates.
            drop = max(0, len(pending) + offset)
        else:
            drop = 0
            for update in pending:
                if update.update_id >= offset:
                    break
                drop += 1
        for _ in range(drop):
            pending.popleft()
        bot.updates_confirmed += drop
        self._counts["updates_confirmed"] += drop
        self._counts["pending_updates"] -= drop

    async def _get_updates(self, bot: SimBot, params: Mapping[str, Any]) -> Response:
        if bot.webhook is not None:
            self._counts["conflicts"] += 1
            return conflict()
        offset = int_param(params, "offset")
        limit = min(100, max(1, int_param(params, "limit") or 100))
        timeout = max(0, int_param(params, "timeout") or 0)
        allowed = parse_allowed_updates(params)
        if bot.polling:
            self._counts["conflicts"] += 1
            return error(409, CONFLICT)
        if allowed is not None:
            # Kept until a call names another (see parse_allowed_updates).
            bot.allowed_updates = allowed
        if offset is not None:
            self._confirm(bot, offset)
        if timeout > 0 and not bot.pending:
            bot.polling = True
            bot.waiter = waiter = trio.Event()
            self._counts["waiting_polls"] += 1
            try:
                with trio.move_on_after(timeout):
                    await waiter.wait()
            finally:
                bot.polling = False
                bot.waiter = None
                self._counts["waiting_polls"] -= 1
            if bot.revoked:
                self._counts["unauthorized"] += 1
                return error(401, "Unauthorized")
        return ok([render_update(u) for u, _ in zip(bot.pending, range(limit), strict=False)])
