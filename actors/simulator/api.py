"""A simulated Telegram Bot API on Trio time: the embedded default of demo, tests and benchmarks.

:meth:`SimulatedBotApi.handle` is the whole server: ``(token, method, params)`` in,
``(HTTP status, JSON body)`` out, with Telegram's semantics and error shapes, long polls on Trio
time (so a ``MockClock`` drives them), injected faults, outages and optional flood limits.
Faults with no HTTP answer are raised as :class:`~actors.simulator.faults.SimulatedFault`;
``SimulatedTransport`` (in process) and ``create_sim_app`` (real HTTP) turn them into what a
client would see. Simulated users (``add_users`` + ``run``) write to the bots, and
:meth:`SimulatedBotApi.report` tells whether every message was answered once and in order
(the matching rule is in :mod:`actors.simulator.report`).

Methods: getMe, getUpdates, sendMessage, sendChatAction, answerCallbackQuery, deleteWebhook,
getWebhookInfo; any other -> 404 Not Found, as Telegram answers. Method names are
case-insensitive, as Telegram's.
sendMessage only reaches chats whose user wrote to the bot first (else 400 chat not found).
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

import trio

from actors.secrets import BotToken, redact
from actors.simulator.bots import CallRecord, SentMessage, SimBot, SimUpdate, token_key
from actors.simulator.faults import (
    FaultKind,
    FaultProfile,
    FloodLimits,
    OutageMode,
    SimulatedFault,
)
from actors.simulator.flood import flood_wait
from actors.simulator.protocol import (
    CONFLICT,
    MAX_TEXT,
    BadRequest,
    Response,
    chat_json,
    error,
    int_param,
    ok,
    render_update,
)
from actors.simulator.report import BotReport, ChatLog, SimReport, tagged_text
from actors.simulator.users import ChatTraffic, UserTraffic

__all__ = ["SIM_EPOCH", "SimStatistics", "SimulatedBotApi"]

# Wall-clock of the simulated world when none is injected: this epoch plus Trio time.
SIM_EPOCH = 1_700_000_000.0
_TOKEN = re.compile(r"([0-9]{1,20}):[A-Za-z0-9_-]{20,}")
_TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
_CHAT_TYPES = frozenset({"private", "group", "supergroup"})


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
    calls_by_method: Mapping[str, int]


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
        self._faults = FaultProfile()
        self._outage_until = -math.inf
        self._outage_mode = OutageMode.MIXED
        self._users = UserTraffic(rng)
        self._next_user_id = 100_000_001
        self._next_group = 1
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
            ),
            0,
        )
        self._fault_counts: dict[FaultKind, int] = dict.fromkeys(FaultKind, 0)
        self._by_method: dict[str, int] = {}

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

    def block(self, token: str | BotToken, chat_id: int) -> None:
        """The user of ``chat_id`` blocked the bot: sendMessage there -> 403 Forbidden."""
        bot = self.bot(token)
        if bot.blocked is None:
            bot.blocked = set()
        bot.blocked.add(chat_id)

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
    ) -> int:
        """A user writes ``text`` to the bot in ``chat_id``: enqueues an update, returns its id.

        The message is tracked by its whole text (see :mod:`actors.simulator.report`).
        """
        if chat_type not in _CHAT_TYPES:
            raise ValueError(f"chat_type must be one of {sorted(_CHAT_TYPES)}, got {chat_type!r}")
        bot = self.bot(token)
        if user_id is None:
            user_id = chat_id if chat_type == "private" else 100_000_000 + abs(chat_id) % 10**8
        log = bot.log.chat(chat_id, chat_type, user_id)
        return self._post(bot, chat_id, log, text, manual=True)

    def add_users(
        self,
        token: str | BotToken,
        *,
        chats: int,
        rate: float,
        group_share: float = 0.0,
        count: int | None = None,
    ) -> None:
        """Add ``chats`` simulated chats writing to the bot, driven by :meth:`run`.

        Each chat sends ``count`` messages (None: forever) at ``rate`` messages a second on
        average (a Poisson process); ``group_share`` of the chats are groups.
        """
        bot = self.bot(token)
        if not (isinstance(chats, int) and chats >= 0):
            raise ValueError(f"chats must be a whole number >= 0, got {chats!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be > 0 messages a second, got {rate!r}")
        if not 0 <= group_share <= 1:
            raise ValueError(f"group_share must be from 0 to 1, got {group_share!r}")
        if count is not None and not (isinstance(count, int) and count >= 0):
            raise ValueError(f"count must be a whole number >= 0 or None, got {count!r}")
        groups = round(chats * group_share)
        for i in range(chats):
            user_id = self._next_user_id
            self._next_user_id += 1
            if i < groups:
                chat_id = -1_000_000_000_000 - self._next_group
                self._next_group += 1
                chat_type = "supergroup"
            else:
                chat_id, chat_type = user_id, "private"
            bot.log.chat(chat_id, chat_type, user_id)
            self._users.add(ChatTraffic(bot.token, chat_id, chat_type, user_id, rate, count))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the simulated users until cancelled; ``started()`` at once."""
        await self._users.run(self._post_generated, task_status=task_status)

    def _post_generated(self, traffic: ChatTraffic) -> None:
        bot = self._bots[traffic.bot_key]
        log = bot.log.chats[traffic.chat_id]
        self._post(bot, traffic.chat_id, log, tagged_text(log.next_seq, traffic.chat_id))

    def _post(
        self, bot: SimBot, chat_id: int, log: ChatLog, text: str, manual: bool = False
    ) -> int:
        update_id = bot.next_update_id
        bot.next_update_id += 1
        message_id = bot.next_message_id
        bot.next_message_id += 1
        bot.log.user_message(log, message_id, text if manual else None)
        bot.pending.append(
            SimUpdate(
                update_id, message_id, self._date(), chat_id, log.chat_type, log.user_id, text
            )
        )
        self._counts["pending_updates"] += 1
        self._counts["user_messages"] += 1
        if bot.waiter is not None:
            bot.waiter.set()
        return update_id

    def _date(self) -> int:
        if self._wall_clock is not None:
            return int(self._wall_clock())
        try:
            return int(SIM_EPOCH + trio.current_time())
        except RuntimeError:  # set up outside a Trio run (a sync fixture): time zero
            return int(SIM_EPOCH)

    # -- results ------------------------------------------------------------------------------

    def report(self) -> SimReport:
        """Per bot: messages, replies, answered, duplicates, out of order, unanswered ids."""
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
                )
                for bot in self._bots.values()
            )
        )

    def statistics(self) -> SimStatistics:
        c = self._counts
        f = self._fault_counts
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
            simulated_chats=self._users.statistics().chats,
            calls_by_method=MappingProxyType(dict(self._by_method)),
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
                response = error(400, str(exc))
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
            if offset is not None:
                self._confirm(bot, offset)
        elif self._rng.random() < profile.deliver_before_fault_rate:
            status, _ = await self._dispatch(bot, name, params)
            delivered = status == 200
        raise SimulatedFault(kind, delivered=delivered)

    async def _dispatch(self, bot: SimBot, name: str, params: Mapping[str, Any]) -> Response:
        if name == "getupdates":
            return await self._get_updates(bot, params)
        if name == "sendmessage":
            return self._send_message(bot, params)
        if name == "getme":
            return ok(bot.user())
        if name == "sendchataction":
            self._target_chat(bot, params)
            return ok(True)
        if name == "answercallbackquery":
            # The built-in handlers answer every button press (minimal: any query id).
            return ok(True)
        if name == "deletewebhook":
            if params.get("drop_pending_updates") in (True, "true", "True", "1"):
                self._confirm(bot, bot.next_update_id)
            return ok(True)
        if name == "getwebhookinfo":
            return ok(
                {
                    "url": "",
                    "has_custom_certificate": False,
                    "pending_update_count": len(bot.pending),
                }
            )
        return error(404, "Not Found")

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
        offset = int_param(params, "offset")
        limit = min(100, max(1, int_param(params, "limit") or 100))
        timeout = max(0, int_param(params, "timeout") or 0)
        allowed = params.get("allowed_updates")
        if isinstance(allowed, str):
            try:
                allowed = json.loads(allowed)
            except ValueError:
                raise BadRequest("Bad Request: can't parse allowed_updates JSON array") from None
        if allowed is not None and not isinstance(allowed, list):
            raise BadRequest("Bad Request: allowed_updates must be an Array")
        # Every simulated update is a "message"; an empty list means all kinds.
        visible = not allowed or "message" in allowed
        if bot.polling:
            self._counts["conflicts"] += 1
            return error(409, CONFLICT)
        if offset is not None:
            self._confirm(bot, offset)
        if timeout > 0 and not (visible and bot.pending):
            bot.polling = True
            bot.waiter = waiter = trio.Event()
            self._counts["waiting_polls"] += 1
            try:
                with trio.move_on_after(timeout):
                    await waiter.wait()
                    while not visible and not bot.revoked:
                        bot.waiter = waiter = trio.Event()
                        await waiter.wait()
            finally:
                bot.polling = False
                bot.waiter = None
                self._counts["waiting_polls"] -= 1
            if bot.revoked:
                self._counts["unauthorized"] += 1
                return error(401, "Unauthorized")
        if not visible:
            return ok([])
        return ok([render_update(u) for u, _ in zip(bot.pending, range(limit), strict=False)])

    def _target_chat(self, bot: SimBot, params: Mapping[str, Any]) -> tuple[int, ChatLog]:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise BadRequest("Bad Request: chat_id is empty")
        try:
            chat_id = int_param(params, "chat_id")
        except BadRequest:
            chat_id = None  # "@channelname": no simulated chat has a username
        log = bot.log.chats.get(chat_id) if chat_id is not None else None
        if chat_id is None or log is None:
            raise BadRequest("Bad Request: chat not found")
        return chat_id, log

    def _send_message(self, bot: SimBot, params: Mapping[str, Any]) -> Response:
        chat_id, log = self._target_chat(bot, params)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise BadRequest("Bad Request: message is too long")
        if bot.blocked is not None and chat_id in bot.blocked:
            return error(403, "Forbidden: bot was blocked by the user")
        if self._flood is not None:
            wait = flood_wait(bot, self._flood, chat_id, log.chat_type, trio.current_time())
            if wait > 0:
                self._counts["flood_limited"] += 1
                return error(429, f"Too Many Requests: retry after {wait}", wait)
        message_id = bot.next_message_id
        bot.next_message_id += 1
        bot.log.reply(chat_id, text)
        self._counts["replies"] += 1
        if bot.sent is not None:
            bot.sent.append(SentMessage(trio.current_time(), chat_id, message_id, text))
        return ok(
            {
                "message_id": message_id,
                "from": {
                    "id": bot.bot_id,
                    "is_bot": True,
                    "first_name": bot.first_name,
                    "username": bot.username,
                },
                "chat": chat_json(chat_id, log),
                "date": self._date(),
                "text": text,
            }
        )
