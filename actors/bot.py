"""BotActor: one tenant bot — poller, durable inbox, chat lanes, handler, delivery.

The actor object lives as long as the bot is registered and owns the bot's resilience state
(breaker, limiters, health, retry counters), so a restart after a crash keeps the numbers an
operator watches. ``run`` is one incarnation: the supervisor calls it again after a crash.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import trio

from actors.botapi import (
    BotApiClient,
    BotApiError,
    CircuitOpenError,
    ErrorCategory,
    TransportError,
)
from actors.breaker import BreakerStatistics, BreakerTransition, CircuitBreaker
from actors.config import (
    BotConfig,
    BreakerConfig,
    HealthConfig,
    LimitsConfig,
    RetryConfig,
    TelegramConfig,
)
from actors.events import BreakerChanged, EventSink, HealthReport, LifecycleEvent, StatusChanged
from actors.handlers import Handler, load_handler
from actors.health import BotStatus, HealthStatistics, HealthTracker, health_row
from actors.lanes import ChatLanes, LaneStatistics, chat_key, update_chat_id
from actors.limits import ChatLimiters, FloodGate, GlobalRateLimiter, TokenBucket
from actors.pipeline import RequestPipeline
from actors.retry import RetryCounters, RetryStatistics
from actors.secrets import redact
from storage import BotCounters, HealthRow, InboxEntry, Store

__all__ = ["ActorState", "BotActor", "BotStatistics", "DeliveryFailed", "FleetServices"]

log = logging.getLogger("botvisor.bot")

# After a failed poll whose quick retries are spent, wait this long before polling again;
# the breaker takes over if failures go on.
POLL_ERROR_PAUSE = 1.0
# A parked reply is tried again after 1, 2, 4 … seconds, at most this many apart.
PARK_MAX_DELAY = 30.0


class ActorState(enum.Enum):
    IDLE = "idle"  # registered, no incarnation running
    STARTING = "starting"  # loading the offset and the undone inbox
    RUNNING = "running"  # polling and handling updates
    STOPPING = "stopping"  # no new polls; in-flight handlers finishing
    SUSPENDED = "suspended"  # stopped by a permanent error or an operator; waits for resume


@dataclass(frozen=True)
class FleetServices:
    """What every bot actor of one daemon shares, built once and handed down."""

    telegram: TelegramConfig
    limits: LimitsConfig
    breaker: BreakerConfig
    retry: RetryConfig
    health: HealthConfig
    report_interval: float
    global_limiter: GlobalRateLimiter
    store: Store
    events: EventSink
    wall_clock: Callable[[], float]
    http_client: Callable[[], httpx.AsyncClient]
    rng: random.Random


@dataclass(frozen=True)
class BotStatistics:
    user_id: int
    state: ActorState
    status: BotStatus
    health: HealthStatistics
    breaker: BreakerStatistics
    retry: RetryStatistics
    lanes: LaneStatistics | None
    handled_updates: int
    replies_sent: int
    dead_letters: int
    ambiguous_sends: int
    handler_errors: int
    offset: int | None


class DeliveryFailed(Exception):
    """A reply could not be delivered before its deadline, or was refused for good."""


@dataclass(frozen=True)
class _Inbound:
    """An update on its way through a chat lane."""

    update_id: int
    update: Mapping[str, Any]
    received_at: float  # wall clock, when it entered the inbox
    deadline: float  # trio time after which its replies are dead-lettered


class _Suspended(Exception):
    """Internal: the bot was suspended while handling an update (it stays undone)."""


class BotActor:
    """One tenant bot. ``run`` is an incarnation; ``request_stop`` ends it gracefully."""

    def __init__(self, bot: BotConfig, services: FleetServices) -> None:
        self.config = bot
        self.user_id = bot.user_id
        self._services = services
        self._handler: Handler = load_handler(bot)
        self.breaker = CircuitBreaker(services.breaker, on_transition=self._on_breaker)
        self.health = HealthTracker(services.health, wall_clock=services.wall_clock)
        self.retry_counters = RetryCounters()
        self.flood_gate = FloodGate()
        self.pipeline = RequestPipeline(
            user_id=bot.user_id,
            breaker=self.breaker,
            retry=services.retry,
            counters=self.retry_counters,
            bot_limiter=TokenBucket(bot.rps or services.limits.bot_rps, services.limits.bot_burst),
            flood_gate=self.flood_gate,
            chat_limiters=ChatLimiters(services.limits),
            global_limiter=services.global_limiter,
            health=self.health,
            rng=services.rng,
            on_suspend=self._suspend,
        )
        self.state = ActorState.IDLE
        self._status = BotStatus.HEALTHY
        self._client: BotApiClient | None = None
        self._lanes: ChatLanes[_Inbound] | None = None
        self._stop = trio.Event()
        self._poll_scope: trio.CancelScope | None = None
        self._offset: int | None = None
        self._handled = 0
        self._replies = 0
        self._dead_letters = 0
        self._ambiguous = 0
        self._handler_errors = 0
        self._runs = 0  # incarnations started
        self._suspension_announced = False
        self._preloaded: tuple[int | None, list[dict[str, Any]]] | None = None

    # --- state shared with the operator ---------------------------------------------------

    def restore(self, row: HealthRow) -> None:
        """Seed the health counters from the bot's latest stored snapshot."""
        self.pipeline.restore(row)
        self._status = self.status()

    def restore_counters(self, counters: BotCounters) -> None:
        """Seed the delivery counters (handled updates, replies...) from the stored ones."""
        self._handled = counters.handled_updates
        self._replies = counters.replies_sent
        self._dead_letters = counters.dead_letters
        self._ambiguous = counters.ambiguous_sends
        self._handler_errors = counters.handler_errors

    def counters(self, recorded_at: float) -> BotCounters:
        """The delivery counters now, as a snapshot stores them (``recorded_at``: wall clock)."""
        return BotCounters(
            user_id=self.user_id,
            recorded_at=recorded_at,
            handled_updates=self._handled,
            replies_sent=self._replies,
            dead_letters=self._dead_letters,
            ambiguous_sends=self._ambiguous,
            handler_errors=self._handler_errors,
        )

    def preload(self, offset: int | None, pending: list[dict[str, Any]]) -> None:
        """Hand the next start its offset and undone inbox, read in bulk for the whole fleet
        (10,000 bots reading their own would be 20,000 round trips to SQLite)."""
        self._preloaded = (offset, pending)

    def status(self) -> BotStatus:
        return self.health.status(self.breaker.state)

    def suspend(self, reason: str) -> None:
        """Suspend the bot (an operator's or the supervisor's decision)."""
        self._suspend(reason)

    def resume(self) -> None:
        """Clear a suspension; the caller re-validates the token and starts a new run."""
        self.health.resume()
        self._suspension_announced = False
        self.breaker.reset()
        self.state = ActorState.IDLE
        self._emit(LifecycleEvent(self.user_id, self._services.wall_clock(), "resumed"))
        self._check_status("resumed")

    def statistics(self) -> BotStatistics:
        return BotStatistics(
            user_id=self.user_id,
            state=self.state,
            status=self.status(),
            health=self.health.statistics(),
            breaker=self.breaker.statistics(),
            retry=self.retry_counters.statistics(),
            lanes=None if self._lanes is None else self._lanes.statistics(),
            handled_updates=self._handled,
            replies_sent=self._replies,
            dead_letters=self._dead_letters,
            ambiguous_sends=self._ambiguous,
            handler_errors=self._handler_errors,
            offset=self._offset,
        )

    def health_report(self) -> HealthReport:
        now = self._services.wall_clock()
        stats = self.statistics()
        row = health_row(self.user_id, now, stats.status, stats.health, stats.breaker, stats.retry)
        return HealthReport(
            self.user_id,
            now,
            row=row,
            handled_updates=self._handled,
            replies_sent=self._replies,
            dead_letters=self._dead_letters,
            ambiguous_sends=self._ambiguous,
            throttled=stats.health.throttled,
            chat_errors=stats.health.chat_errors,
        )

    # --- an incarnation ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll, persist and handle updates until asked to stop or suspended."""
        if self.health.suspended_reason is not None:
            raise RuntimeError(f"bot {self.user_id} is suspended; resume it before starting it")
        self._stop = trio.Event()
        self.state = ActorState.STARTING
        store = self._services.store
        if self._runs:
            # The previous incarnation's done marks may still be queued (they are not waited
            # for): once they land, what it finished is not mistaken for undone work.
            await store.flush()
        self._runs += 1
        if self._preloaded is not None:
            (self._offset, pending), self._preloaded = self._preloaded, None
        else:
            self._offset = await store.load_offset(self.user_id)
            pending = await store.inbox_pending(self.user_id)
        try:
            async with self._services.http_client() as http:
                self._client = BotApiClient(
                    http, token=self.config.token, telegram=self._services.telegram
                )
                async with trio.open_nursery() as nursery:
                    lanes = ChatLanes[_Inbound](
                        nursery,
                        self._handle,
                        max_concurrent=self._services.limits.max_concurrent_chats,
                        idle_seconds=self._services.limits.lane_idle_seconds,
                    )
                    self._lanes = lanes
                    nursery.start_soon(self._report_loop)
                    self.state = ActorState.RUNNING
                    task_status.started()
                    for row in pending:
                        await self._dispatch(lanes, row["update"], row["received_at"])
                    await self._poll_loop(lanes)
                    self.state = ActorState.STOPPING
                    await lanes.close()
                    nursery.cancel_scope.cancel()
        finally:
            self._client = None
            if self.health.suspended_reason is not None:
                self.state = ActorState.SUSPENDED
                with trio.CancelScope(shield=True):
                    await store.set_suspended(self.user_id, self.health.suspended_reason)
            else:
                self.state = ActorState.IDLE
            self._emit(self.health_report())

    def request_stop(self) -> None:
        """Stop polling now; in-flight handlers finish (the supervisor sets the deadline)."""
        self._stop.set()
        if self._poll_scope is not None:
            self._poll_scope.cancel()

    # --- polling -------------------------------------------------------------------------

    async def _poll_loop(self, lanes: ChatLanes[_Inbound]) -> None:
        assert self._client is not None
        client = self._client
        timeout = self._services.telegram.poll_timeout
        while not self._stop.is_set():
            with trio.CancelScope() as self._poll_scope:
                if self._stop.is_set():
                    break
                try:
                    updates: list[dict[str, Any]] = await self.pipeline.call(
                        "getUpdates",
                        partial(client.get_updates, offset=self._offset, timeout=timeout),
                        rate_limited=False,
                        measure_latency=False,
                    )
                except CircuitOpenError:
                    self._check_status()
                    await self.breaker.wait_admitting()
                    continue
                except BotApiError as exc:
                    self._check_status()
                    if exc.category is ErrorCategory.PERMANENT:
                        break
                    log.info("bot %s: polling failed: %s", self.user_id, exc)
                    await trio.sleep(POLL_ERROR_PAUSE)
                    continue
                self._check_status()
                if updates:
                    await self._accept(lanes, updates)
            self._poll_scope = None

    async def _accept(self, lanes: ChatLanes[_Inbound], updates: list[dict[str, Any]]) -> None:
        """Commit fetched updates to the inbox, then hand the new ones to their lanes.

        The next getUpdates (with the advanced offset) confirms them to Telegram, so an update
        is in SQLite before Telegram forgets it.
        """
        now = self._services.wall_clock()
        next_offset = max(int(u["update_id"]) for u in updates) + 1
        entries = [InboxEntry(update, update_chat_id(update)) for update in updates]
        new_ids = set(await self._services.store.inbox_add(self.user_id, entries, next_offset, now))
        self._offset = next_offset
        for update in updates:
            if int(update["update_id"]) in new_ids:
                await self._dispatch(lanes, update, now)

    async def _dispatch(
        self, lanes: ChatLanes[_Inbound], update: Mapping[str, Any], received_at: float
    ) -> None:
        age = self._services.wall_clock() - received_at
        deadline = trio.current_time() + self._services.retry.delivery_deadline - age
        item = _Inbound(int(update["update_id"]), update, received_at, deadline)
        await lanes.dispatch(chat_key(update), item)

    # --- handling ------------------------------------------------------------------------

    async def _handle(self, item: _Inbound) -> None:
        ctx = _Context(self, item)
        try:
            await self._handler(item.update, ctx)
        except _Suspended:
            return  # stays undone: handled again after the bot is resumed
        except DeliveryFailed:
            pass  # dead-lettered where it failed
        except BotApiError as exc:
            if exc.category is ErrorCategory.PERMANENT:
                return
            self._handler_errors += 1
            log.info("bot %s: update %s: %s", self.user_id, item.update_id, exc)
        except Exception as exc:
            # A handler's bug must not crash-loop the bot on the same update: record it.
            self._handler_errors += 1
            reason = f"handler raised {type(exc).__name__}: {redact(str(exc))}"
            log.warning("bot %s: update %s: %s", self.user_id, item.update_id, reason)
            await self._dead_letter(item, reason)
        self._handled += 1
        store, now = self._services.store, self._services.wall_clock()
        try:
            store.inbox_done_nowait(self.user_id, [item.update_id], now)
        except trio.WouldBlock:
            await store.inbox_done(self.user_id, [item.update_id], now)

    async def _deliver(self, item: _Inbound, method: str, params: dict[str, Any]) -> Any:
        """Send a reply; park it through outages until its deadline (DESIGN.md "Delivery")."""
        client = self._require_client()
        retry_uncertain = self._services.retry.retry_uncertain_sends
        park_delay = 1.0
        while True:
            try:
                result = await self.pipeline.call(
                    method,
                    partial(client.call, method, params),
                    chat_id=params.get("chat_id"),
                    idempotent=False,
                )
            except TransportError as exc:
                if exc.request_sent and not retry_uncertain:
                    # It may have reached Telegram: count it as sent rather than risk a
                    # duplicate message.
                    self._ambiguous += 1
                    self._replies += 1
                    return None
                error: BotApiError = exc
            except BotApiError as exc:
                error = exc
            else:
                self._replies += 1
                return result
            finally:
                self._check_status()
            if error.category is ErrorCategory.PERMANENT:
                raise _Suspended(str(error))
            if not error.category.is_retryable:
                raise error
            if trio.current_time() >= item.deadline:
                reason = f"delivery deadline passed; last error: {error}"
                await self._dead_letter(item, reason)
                raise DeliveryFailed(reason)
            # Parked: keep the chat's order by waiting right here, in its lane.
            with trio.move_on_at(item.deadline):
                await trio.sleep(min(park_delay, max(0.0, item.deadline - trio.current_time())))
                await self.breaker.wait_admitting()
                await self.flood_gate.wait_open()
            park_delay = min(park_delay * 2, PARK_MAX_DELAY)

    async def _dead_letter(self, item: _Inbound, reason: str) -> None:
        self._dead_letters += 1
        log.warning("bot %s: update %s dead-lettered: %s", self.user_id, item.update_id, reason)
        await self._services.store.dead_letter(
            self.user_id,
            item.update_id,
            update_chat_id(item.update),
            redact(reason),
            self._services.wall_clock(),
        )

    def _require_client(self) -> BotApiClient:
        if self._client is None:
            raise RuntimeError(f"bot {self.user_id} is not running; it cannot call Telegram")
        return self._client

    # --- health and events ---------------------------------------------------------------

    async def _report_loop(self) -> None:
        reported: tuple[object, ...] | None = None
        while True:
            await trio.sleep(self._services.report_interval)
            self._check_status()
            # An idle bot's only news is another empty long poll: it is not worth a report
            # (thousands of idle bots would otherwise keep the metrics actor busy).
            activity = self._activity()
            if activity != reported:
                reported = activity
                self._emit(self.health_report())

    def _activity(self) -> tuple[object, ...]:
        """What an operator watches, cheaply: a report is sent when it changed."""
        health = self.health
        return (
            self._status,
            self.breaker.state,
            self._handled,
            self._replies,
            self._dead_letters,
            health.failures,
            health.throttled,
        )

    def _suspend(self, reason: str) -> None:
        reason = redact(reason)
        # The pipeline marks the tracker itself on a PERMANENT error before calling here, so
        # whether this suspension was announced yet is tracked apart from the tracker.
        if not self._suspension_announced:
            self._suspension_announced = True
            log.error("bot %s suspended: %s", self.user_id, reason)
            if self.health.suspended_reason is None:
                self.health.suspend(reason)
            self._emit(
                LifecycleEvent(self.user_id, self._services.wall_clock(), "suspended", reason)
            )
            self._check_status(reason)
        self.request_stop()

    def _on_breaker(self, transition: BreakerTransition) -> None:
        self._emit(
            BreakerChanged(
                self.user_id,
                self._services.wall_clock(),
                transition.previous.value,
                transition.state.value,
                transition.reason,
            )
        )
        self._check_status(f"breaker {transition.state.value}")

    def _check_status(self, reason: str = "") -> None:
        status = self.status()
        if status is not self._status:
            previous, self._status = self._status, status
            self._emit(
                StatusChanged(
                    self.user_id, self._services.wall_clock(), previous.value, status.value, reason
                )
            )
            self._emit(self.health_report())

    def _emit(self, event: Any) -> None:
        self._services.events.emit(event)


class _Context:
    """The ``ctx`` a handler gets for one update."""

    def __init__(self, actor: BotActor, item: _Inbound) -> None:
        self._actor = actor
        self._item = item
        self._chat_id = update_chat_id(item.update)

    @property
    def user_id(self) -> int:
        return self._actor.user_id

    @property
    def chat_id(self) -> int | None:
        return self._chat_id

    async def reply(self, text: str, **params: Any) -> Any:
        if self._chat_id is None:
            raise RuntimeError("this update has no chat to reply to")
        return await self._actor._deliver(
            self._item, "sendMessage", {"chat_id": self._chat_id, "text": text, **params}
        )

    async def call(self, method: str, **params: Any) -> Any:
        client = self._actor._require_client()
        reading = method.startswith("get")
        return await self._actor.pipeline.call(
            method,
            partial(client.call, method, params),
            chat_id=params.get("chat_id"),
            idempotent=reading,
            rate_limited=not reading,
        )
