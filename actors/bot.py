"""BotActor: one tenant bot — its lifecycle, its statistics, and one incarnation's task tree.

The actor object lives as long as the bot is registered; its request pipeline owns the bot's
resilience state (breaker, limiters, health, retry counters), so a restart after a crash
keeps the numbers an operator watches. ``run`` is one incarnation: the supervisor calls it
again after a crash. The pieces of an incarnation live beside this module: the poller
(``getUpdates``, offset, inbox), the delivery (handler, replies, parking, dead letters) and
the handler's context.

The actor alone changes its :class:`~actors.lifecycle.ActorState` (one method, one table of
legal transitions) and alone suspends and resumes the bot; it announces each suspension and
resumption as a :class:`~actors.events.LifecycleEvent`, which the fleet persists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import trio

from actors.botapi import BotApiClient, BotApiError, ErrorCategory
from actors.breaker import BreakerState, BreakerStatistics, BreakerTransition, CircuitBreaker
from actors.config import BotConfig, BotMode
from actors.context import UpdateContext
from actors.delivery import Delivery, DeliveryFailed, Inbound
from actors.events import BotEvent, BreakerChanged, LifecycleEvent, StatusChanged
from actors.handlers import load_handler
from actors.health import BotStatus, HealthStatistics, HealthTracker
from actors.lanes import ChatLanes, LaneStatistics
from actors.lifecycle import ActorState, LifecycleError, check_transition
from actors.limits import ChatLimiters, FloodGate, TokenBucket
from actors.pipeline import RequestPipeline
from actors.poller import POLL_ERROR_PAUSE, Poller
from actors.retry import RetryCounters, RetryStatistics
from actors.services import FleetServices
from storage import BotCounters, HealthRow, StoreClosedError

__all__ = [
    "ActorState",
    "BotActor",
    "BotStatistics",
    "DeliveryFailed",
    "FleetServices",
    "HealthSample",
    "MetricsSample",
]

log = logging.getLogger("botvisor.bot")


@dataclass(frozen=True)
class BotStatistics:
    user_id: int
    state: ActorState
    status: BotStatus  # the worse of the two below (or SUSPENDED)
    polling_status: BotStatus  # getUpdates alone
    call_status: BotStatus  # every other call, with the breaker
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


class HealthSample(NamedTuple):
    """What the fleet's summary needs of one bot, read cheaply (10,000 bots are summed in
    one go; a full :class:`BotStatistics` costs several times as much). A named tuple: an
    immutable record that costs a fraction of a frozen dataclass to build."""

    status: BotStatus
    total_requests: int
    successful_requests: int
    failed_requests: int
    ema_latency_ms: float | None
    handled_updates: int
    replies_sent: int
    dead_letters: int
    breaker_state: BreakerState  # the state the status was judged with


class MetricsSample(NamedTuple):
    """What ``/metrics`` adds up of one bot when per-bot series are off: its status and
    breaker state (for the counts by them) and the cumulative counters summed over the
    fleet. Read as cheaply as a :class:`HealthSample`."""

    status: BotStatus
    breaker_state: BreakerState
    total_requests: int
    failed_requests: int
    throttled: int
    chat_errors: int
    retries: int
    handled_updates: int
    replies_sent: int
    dead_letters: int
    ambiguous_sends: int
    handler_errors: int
    lane_updates: int
    lanes_overflowing: int


_new_tuple = tuple.__new__
# A webhook delivery handed over in memory: (update, its chat_key, received_at).
_Pushed = tuple[Mapping[str, Any], Hashable, float]
# Shared by every dormant bot with nothing undone (100,000 of them cost no list each).
NOTHING_UNDONE: tuple[()] = ()


class BotActor:
    """One tenant bot. ``run`` is an incarnation; ``request_stop`` ends it gracefully.

    ``on_lifecycle`` hears every suspension and resumption the actor announces (the fleet
    persists them); the same events also go to the metrics actor.
    """

    def __init__(
        self,
        bot: BotConfig,
        services: FleetServices,
        *,
        on_lifecycle: Callable[[LifecycleEvent], None] | None = None,
    ) -> None:
        self.config = bot
        self.user_id = bot.user_id
        self._services = services
        self._on_lifecycle = on_lifecycle
        limits = services.limits
        self.pipeline = RequestPipeline(
            user_id=bot.user_id,
            breaker=CircuitBreaker(services.breaker, on_transition=self._on_breaker),
            retry=services.retry,
            counters=RetryCounters(),
            bot_limiter=TokenBucket(bot.rps or limits.bot_rps, limits.bot_burst),
            flood_gate=FloodGate(),
            chat_limiters=ChatLimiters(limits),
            global_limiter=services.global_limiter,
            health=HealthTracker(services.health, wall_clock=services.wall_clock),
            rng=services.rng,
            on_suspend=self._suspend_after_error,
            confirm_token=self._token_accepted,
            policies=services.retry_policies,
            instruments=services.instruments,
        )
        self._state = ActorState.IDLE
        self._status = BotStatus.HEALTHY
        self._client: BotApiClient | None = None
        self._lanes: ChatLanes[Inbound] | None = None
        self._poller = Poller(
            user_id=bot.user_id,
            pipeline=self.pipeline,
            services=services,
            after_call=self._check_status,
            allowed_updates=bot.allowed_updates,
            on_webhook_conflict=self._delete_webhook,
        )
        self._delivery = Delivery(
            user_id=bot.user_id,
            handler=load_handler(bot),
            pipeline=self.pipeline,
            services=services,
            client=self._require_client,
            after_call=self._check_status,
            context=UpdateContext,
        )
        self._runs = 0  # incarnations started
        # Webhook deliveries (and redriven updates: key None) that arrived while an
        # incarnation was starting: dispatched after the undone inbox it read (the lanes skip
        # what that read already held).
        self._early: list[tuple[Mapping[str, Any], Hashable | None, float]] | None = None
        # When the running webhook incarnation last got a delivery (its idle clock).
        self._last_push = 0.0
        # A polling bot with a webhook registration left over: delete it before the first poll.
        self.leftover_webhook = False
        self._idle_wait: trio.CancelScope | None = None
        self._preloaded: tuple[int | None, list[dict[str, Any]]] | None = None
        # A dormant webhook bot's undone inbox, known without reading it: None (unknown: the
        # next start reads the inbox), else exactly the deliveries committed since the bot
        # went dormant with nothing undone, in arrival order (NOTHING_UNDONE: none yet). The
        # next start hands them to its lanes from memory; the inbox stays their durable copy.
        self._handover: list[_Pushed] | tuple[()] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def state(self) -> ActorState:
        """Where the actor is in its lifecycle; only the actor changes it."""
        return self._state

    @property
    def suspended_reason(self) -> str | None:
        """Why the bot is suspended (redacted), or None. The bot's health tracker keeps it
        (the status is derived from it); the actor is its only writer."""
        return self.pipeline.health.suspended_reason

    def _transition(self, target: ActorState) -> None:
        """The one place the state changes; an illegal transition raises LifecycleError."""
        check_transition(self.user_id, self._state, target)
        self._state = target

    def suspend(self, reason: str) -> None:
        """Suspend the bot: an operator's or the supervisor's decision. A running incarnation
        is asked to stop (in-flight updates stay undone until the bot is resumed).

        Raises :class:`LifecycleError` if the bot is already suspended.
        """
        current = self.suspended_reason
        if current is not None:
            raise LifecycleError(
                f"bot {self.user_id} is already suspended ({current}); resume it first"
            )
        self._apply_suspension(reason)

    def restore_suspension(self, reason: str) -> None:
        """At load: the registry says the bot is suspended. Nothing is announced (it is
        already stored); the bot is not to be started until resumed."""
        self.pipeline.health.suspend(reason)
        self._transition(ActorState.SUSPENDED)
        self._status = self.status()

    def check_resumable(self) -> None:
        """Raise :class:`LifecycleError` unless the bot is suspended (so it may be resumed
        once its incarnation, if any, has stopped)."""
        if self.suspended_reason is None:
            raise LifecycleError(
                f"bot {self.user_id} is not suspended; only a suspended bot resumes"
            )

    def resume(self) -> None:
        """Clear a suspension; the caller re-validates the token first and starts a new run.

        Raises :class:`LifecycleError` if the bot is not suspended or still stopping.
        """
        self.check_resumable()
        # Deliveries to a suspended bot were stored, not handed over: the start reads them.
        self._handover = None
        self._preloaded = None if self.webhook_mode else self._preloaded
        # A stop asked while it was suspended (a second refusal of its token reported by a
        # fleet call) was for the suspension, not for the run the resumption starts.
        self._poller.arm()
        self._transition(ActorState.IDLE)
        self.pipeline.health.resume()
        self.pipeline.breaker.reset()
        self._announce("resumed")
        self._check_status("resumed")

    def _apply_suspension(self, reason: str) -> None:
        self._handover = None
        health = self.pipeline.health
        health.suspend(reason)
        stored = health.suspended_reason or ""  # redacted and cut as the tracker keeps it
        log.error("bot %s suspended: %s", self.user_id, stored)
        if self._state is ActorState.IDLE:
            self._transition(ActorState.SUSPENDED)
        else:
            # The incarnation's end moves the actor to SUSPENDED.
            self.request_stop()
        self._announce("suspended", stored)
        self._check_status(stored)

    def _suspend_after_error(self, reason: str) -> None:
        """The pipeline's report of a PERMANENT error (bad token): suspend, once."""
        if self.suspended_reason is None:
            self._apply_suspension(reason)
        else:
            self.request_stop()  # a second call failed the same way meanwhile

    async def _token_accepted(self) -> bool | None:
        """getMe, straight to Telegram: does it accept the token (None: cannot tell now)?"""
        client = self._client
        if client is None:
            return None
        try:
            await client.get_me()
        except BotApiError as exc:
            return False if exc.category is ErrorCategory.PERMANENT else None
        return True

    def _announce(self, event: str, detail: str = "") -> None:
        announced = LifecycleEvent(self.user_id, self._services.wall_clock(), event, detail)
        self._emit(announced)
        if self._on_lifecycle is not None:
            self._on_lifecycle(announced)

    # --- state shared with the operator ---------------------------------------------------

    def restore(self, row: HealthRow) -> None:
        """Seed the health counters from the bot's latest stored snapshot."""
        self.pipeline.restore(row)
        self._status = self.status()

    def restore_counters(self, counters: BotCounters) -> None:
        """Seed the delivery counters (handled updates, replies...) from the stored ones."""
        self._delivery.restore(counters)

    def health_row(self, recorded_at: float) -> HealthRow:
        """This bot's ``bot_health_metrics`` row now (``recorded_at``: wall clock)."""
        return self.pipeline.health_row(recorded_at)

    def preload(
        self,
        offset: int | None,
        pending: list[dict[str, Any]],
        chat_migrations: Mapping[int, int] | None = None,
    ) -> None:
        """Hand the next start its offset and undone inbox, read in bulk for the whole fleet
        (10,000 bots reading their own would be 20,000 round trips to SQLite), and the bot's
        stored chat migrations."""
        self._preloaded = (offset, pending)
        if chat_migrations is not None:
            self._delivery.migrations.restore(chat_migrations)

    def preload_dormant(self, chat_migrations: Mapping[int, int]) -> None:
        """At load, for a webhook bot left dormant (not started) with nothing undone in its
        inbox: its stored chat migrations, and that deliveries from now on are handed to its
        next start in memory (so a wake reads nothing from SQLite)."""
        self._delivery.migrations.restore(chat_migrations)
        self._handover = NOTHING_UNDONE

    def status(self) -> BotStatus:
        return self.pipeline.status()

    def statistics(self) -> BotStatistics:
        pipeline = self.pipeline
        delivery = self._delivery
        health = pipeline.health
        breaker = pipeline.breaker
        return BotStatistics(
            user_id=self.user_id,
            state=self._state,
            status=health.status(breaker.state),
            polling_status=health.polling_status(),
            call_status=health.call_status(breaker.state),
            health=health.statistics(),
            breaker=breaker.statistics(),
            retry=pipeline.counters.statistics(),
            lanes=None if self._lanes is None else self._lanes.statistics(),
            handled_updates=delivery.handled,
            replies_sent=delivery.replies,
            dead_letters=delivery.dead_letters,
            ambiguous_sends=delivery.ambiguous,
            handler_errors=delivery.handler_errors,
            offset=self._poller.offset,
        )

    def health_sample(self) -> HealthSample:
        """The bot's status and summary counters now, without a full statistics record."""
        health = self.pipeline.health
        delivery = self._delivery
        state = self.pipeline.breaker.state
        # tuple.__new__ skips the named tuple's Python-level __new__: this runs for every bot
        # of the fleet on each summary, and that call cost half of it.
        return _new_tuple(
            HealthSample,
            (
                health.status(state),
                health.total_requests,
                health.successes,
                health.failures,
                health.ema_latency_ms,
                delivery.handled,
                delivery.replies,
                delivery.dead_letters,
                state,
            ),
        )

    def metrics_sample(self) -> MetricsSample:
        """The bot's status, breaker state and cumulative counters now (see
        :class:`MetricsSample`), without a full statistics record."""
        pipeline = self.pipeline
        health = pipeline.health
        state = pipeline.breaker.state
        delivery = self._delivery
        lanes = self._lanes
        queued, overflowing = (0, 0) if lanes is None else lanes.occupancy()
        return _new_tuple(
            MetricsSample,
            (
                health.status(state),
                state,
                health.total_requests,
                health.failures,
                health.throttled,
                health.chat_errors,
                pipeline.counters.retries,
                delivery.handled,
                delivery.replies,
                delivery.dead_letters,
                delivery.ambiguous,
                delivery.handler_errors,
                queued,
                overflowing,
            ),
        )

    @property
    def webhook_mode(self) -> bool:
        """Whether Telegram pushes this bot's updates (no poller; dormant when idle)."""
        return self.config.mode is BotMode.WEBHOOK

    def push(self, update: Mapping[str, Any], key: Hashable, received_at: float) -> bool:
        """A webhook delivery, already committed to the inbox (``key``: its ``chat_key``).

        Returns whether the running (or starting) incarnation took it. False when there is
        none, or it is going dormant or stopping: the update waits in the inbox for the next
        start, which the caller may make now (:meth:`BotSupervisor.wake`). Never waits."""
        state = self._state
        if self._early is not None:
            self._early.append((update, key, received_at))
        elif state is ActorState.RUNNING and self._lanes is not None:
            self._poller.dispatch_nowait(self._lanes, update, received_at, key)
        else:
            handover = self._handover
            if handover is not None:
                # Dormant (or going dormant) with the undone inbox known: the next start
                # takes this one from memory, after those before it.
                if isinstance(handover, list):
                    handover.append((update, key, received_at))
                else:
                    self._handover = [(update, key, received_at)]
            return False
        self._last_push = trio.current_time()
        return True

    def redrive(self, updates: Sequence[Mapping[str, Any]], received_at: float) -> bool:
        """Updates an operator redrove, already undone again in the inbox (received at
        ``received_at``), in ``update_id`` order: each goes to its chat's lane in its place
        in the chat's order (:meth:`ChatLanes.redrive_nowait`).

        Returns whether the running (or starting) incarnation took them. False when there is
        none, or it is stopping: they wait in the inbox for the next start (a dormant webhook
        bot's caller wakes it). Never waits."""
        if self._early is not None:
            self._early.extend((update, None, received_at) for update in updates)
            return True
        if self._state is ActorState.RUNNING and self._lanes is not None:
            for update in updates:
                self._poller.redrive_nowait(self._lanes, update, received_at)
            return True
        # The next start reads the inbox itself: neither what was read at load nor a dormant
        # bot's hand-over in memory holds these.
        self._preloaded = None
        self._handover = None
        return False

    @property
    def last_push_at(self) -> float:
        """When (Trio time) the bot last took a webhook delivery; 0 if never."""
        return self._last_push

    def record_webhook_info(self, problem: str | None) -> None:
        """The fleet's getWebhookInfo check of this bot (``problem``: Telegram's delivery
        error, or None); the status follows (:data:`actors.health.WEBHOOK_UNHEALTHY_CHECKS`)."""
        self.pipeline.health.record_webhook_info(problem)
        self._check_status(problem or "webhook delivery recovered")

    def record_webhook_registration(self, problem: str | None) -> None:
        """The fleet's setWebhook of this bot failed (``problem``, redacted) or succeeded
        (None); the bot is DEGRADED while it is not registered."""
        self.pipeline.health.record_webhook_registration(problem)
        self._check_status(problem or "webhook registered")

    # --- an incarnation ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll (or, in webhook mode, take deliveries), persist and handle updates until asked
        to stop or suspended; a webhook incarnation also ends, normally, after
        ``webhook.idle_seconds`` with nothing to do (the bot is dormant then)."""
        self._transition(ActorState.STARTING)
        self._early = []
        try:
            await self._run(task_status)
        except BaseException:
            self._handover = None  # a crash: the next start reads the inbox
            raise
        finally:
            # What no done mark carried (polls, calls outside a handler), also when the
            # grace ran out or the run crashed: the calls were made all the same.
            self._flush_usage()
            # Ready for the next incarnation: a stop asked of this one does not carry over,
            # while one asked before an incarnation begins holds for it.
            self._poller.arm()
            self._early = None
            self._client = None
            if self._state is not ActorState.STOPPING:
                self._transition(ActorState.STOPPING)  # a crash, or a start that failed
            suspended = self.suspended_reason is not None
            self._transition(ActorState.SUSPENDED if suspended else ActorState.IDLE)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        store = self._services.store
        poller = self._poller
        handover, self._handover = self._handover, None
        if handover is not None and not self.webhook_mode:
            handover = None  # switched to polling meanwhile: the inbox and offset are read
        pending: list[dict[str, Any]] = []
        if handover is not None:
            # Woken from dormancy with the undone inbox known (see push): no read, no
            # offset (a webhook bot has none to keep), no wait for the last done marks.
            self._preloaded = None
        elif self._preloaded is not None:
            (offset, pending), self._preloaded = self._preloaded, None
            poller.prepare(offset)
        else:
            if self._runs:
                # The previous incarnation's done marks may still be queued (they are not
                # waited for): once they land, what it finished is not mistaken for undone.
                await store.flush()
            poller.prepare(await store.load_offset(self.user_id))
            pending = await store.inbox_pending(self.user_id)
        migrations = self._delivery.migrations
        if not migrations.loaded:
            migrations.restore(await store.load_bot_chat_migrations(self.user_id))
        self._runs += 1
        async with self._services.http_client() as http:
            self._client = BotApiClient(
                http, token=self.config.token, telegram=self._services.telegram
            )
            async with trio.open_nursery() as nursery:
                lanes = ChatLanes[Inbound](
                    nursery,
                    self._delivery.handle,
                    max_concurrent=self._services.limits.max_concurrent_chats,
                    idle_seconds=self._services.limits.lane_idle_seconds,
                    refill=poller.refill,
                    position=_update_position,
                )
                self._lanes = lanes
                self._transition(ActorState.RUNNING)
                task_status.started()
                if pending:
                    await poller.dispatch_pending(lanes, pending)
                for update, key, received_at in handover or ():
                    # Committed with its lane named (the receiver's InboxEntry).
                    poller.dispatch_nowait(lanes, update, received_at, key)
                early, self._early = self._early or [], None
                for update, key, received_at in early:
                    if key is None:
                        poller.redrive_nowait(lanes, update, received_at, forget=False)
                    else:
                        poller.dispatch_nowait(lanes, update, received_at, key)
                if self.webhook_mode:
                    await self._serve_webhook(lanes)
                else:
                    if self.leftover_webhook:
                        await self._delete_webhook()
                    await poller.run(self._client, lanes)
                if self._state is not ActorState.STOPPING:
                    self._transition(ActorState.STOPPING)
                await lanes.close()
                nursery.cancel_scope.cancel()

    async def _serve_webhook(self, lanes: ChatLanes[Inbound]) -> None:
        """Handle pushed updates until stopped, or until ``webhook.idle_seconds`` passed with
        no delivery and no lane at work: then go dormant (end this incarnation normally)."""
        idle = self._services.webhook.idle_seconds
        poller = self._poller
        self._last_push = trio.current_time()
        while True:
            with trio.move_on_at(self._last_push + idle):
                await poller.wait_stop()
                return
            if trio.current_time() < self._last_push + idle:
                continue  # a delivery came meanwhile
            if lanes.idle:
                # No await between the check and the state change: a delivery from here on
                # finds the bot STOPPING, stays in the inbox and wakes the bot again.
                self._transition(ActorState.STOPPING)
                # Nothing undone now: what is pushed from here on is handed to the next
                # start in memory (the inbox keeps it durably all the same).
                self._handover = NOTHING_UNDONE
                log.debug("bot %s: idle for %g s, going dormant", self.user_id, idle)
                return
            # A lane still works (or is not reaped yet): look again once none is left.
            with trio.CancelScope() as self._idle_wait:
                if poller.stop_requested:
                    return
                await lanes.wait_idle()
            self._idle_wait = None

    async def _delete_webhook(self) -> None:
        """deleteWebhook keeping pending updates (so getUpdates fetches them), and forget the
        stored registration. A failure is logged; the poll's 409 brings it back here."""
        client = self._require_client()
        try:
            await self.pipeline.call(
                "deleteWebhook", partial(client.delete_webhook, drop_pending_updates=False)
            )
        except BotApiError as exc:
            log.warning("bot %s: could not delete its webhook: %s", self.user_id, exc)
            await trio.sleep(POLL_ERROR_PAUSE)
            return
        self.leftover_webhook = False
        await self._services.store.delete_webhook_registration(self.user_id)
        log.info("bot %s: webhook deleted (pending updates kept); polling", self.user_id)

    def request_stop(self) -> None:
        """Stop polling now; in-flight handlers finish (the supervisor sets the deadline)."""
        self._poller.stop()
        if self._idle_wait is not None:
            self._idle_wait.cancel()

    def _require_client(self) -> BotApiClient:
        if self._client is None:
            raise RuntimeError(f"bot {self.user_id} is not running; it cannot call Telegram")
        return self._client

    # --- status and events ---------------------------------------------------------------

    def tick(self) -> dict[str, int]:
        """The fleet's periodic look at the bot (every ``report_interval``, one task for the
        whole fleet rather than one a bot): announce a status that time alone changed
        (failures ageing out of the window, a breaker due to half-open; calls' outcomes are
        looked at as they happen), and hand over, taken, the usage counts no done mark
        carried (polls, webhook deliveries) for the fleet to write in one job."""
        self._check_status()
        return self.pipeline.usage.take()

    def _flush_usage(self) -> None:
        """Write the usage counts no done mark has carried (polls, webhook deliveries)."""
        usage = self.pipeline.usage
        counts = usage.take()
        if not counts:
            return
        try:
            self._services.store.usage_add_nowait(self.user_id, counts, self._services.wall_clock())
        except trio.WouldBlock:
            usage.give_back(counts)  # the next flush or done mark takes them
        except StoreClosedError:
            # Called from run()'s finally: a run ending after the store stopped (a crash at
            # shutdown) must end with its own exception, not this one.
            usage.give_back(counts)

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

    def _emit(self, event: BotEvent) -> None:
        self._services.events.emit(event)


def _update_position(item: Inbound) -> int:
    return item.update_id
