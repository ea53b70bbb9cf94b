"""The request pipeline: every Bot API call of one bot goes through it.

Per attempt, in this order (narrow limits first, the global token last, so a global token is
never held idle while the bot waits for its own limits)::

    breaker.try_acquire          refused -> CircuitOpenError at once
    chat limiter (if chat_id)    \\
    bot limiter                  / only for rate_limited calls
    flood gate                   every call, getUpdates included
    GlobalRateLimiter            only for rate_limited calls, last
    send()                       the raw HTTP call; raises BotApiError subclasses
    record the outcome           breaker, health, retry counters

then, on an error, retry by its category (:class:`~actors.config.RetryConfig`):

- RATE_LIMIT: close the bot's flood gate for ``retry_after`` and retry after exactly that.
- TRANSIENT_NETWORK, UNKNOWN: retry after the policy's backoff; a non-idempotent call whose
  request may have reached the server is not retried unless ``retry_uncertain_sends``
  (:func:`actors.retry.forbids_repeat`, the rule delivery uses too).
- PERMANENT: no retry. A 401 is a bad token at once; a 404 (only getMe and getUpdates have
  PERMANENT 404s) is a suspicion that ``confirm_token`` checks with getMe first. A refused
  token: ``on_suspend(reason)`` tells the bot's owner (the actor suspends itself) and the error
  is raised. A token getMe accepts (or that cannot be checked now): the 404 is logged at
  WARNING and raised as UNKNOWN, so the caller backs off instead of suspending the bot.
- CHAT: no retry; raised.

Each category has its own retry budget. Exhausted retries raise the last error.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import trio

from actors.botapi.errors import (
    BotApiError,
    CircuitOpenError,
    ErrorCategory,
    TelegramError,
)
from actors.breaker import BreakerState, BreakerStatistics, CircuitBreaker
from actors.config import RetryConfig
from actors.health import BotStatus, HealthStatistics, HealthTracker, health_row
from actors.instruments import FleetInstruments
from actors.limits import ChatLimiters, FloodGate, GlobalRateLimiter, TokenBucket
from actors.retry import (
    RetryCounters,
    RetryPolicy,
    RetryStatistics,
    forbids_repeat,
    retry_policies,
)
from actors.usage import UsageMeter, call_outcome
from storage import HealthRow

__all__ = ["PipelineStatistics", "RequestPipeline"]

T = TypeVar("T")

log = logging.getLogger("botvisor.bot")


@dataclass(frozen=True)
class PipelineStatistics:
    user_id: int
    status: BotStatus
    breaker: BreakerStatistics
    retry: RetryStatistics
    health: HealthStatistics
    refused: int  # calls refused by the breaker before any HTTP request
    in_flight: int  # calls inside call() now
    flood_open_at: float | None  # Trio time the flood gate opens; None if never closed


class RequestPipeline:
    """Breaker, limits, retries and health bookkeeping around one bot's Bot API calls.

    It is the one holder of that resilience state: the actor and the admin API reach the
    breaker, the health tracker, the retry counters and the flood gate through it.
    """

    def __init__(
        self,
        *,
        user_id: int,
        breaker: CircuitBreaker,
        retry: RetryConfig,
        counters: RetryCounters,
        bot_limiter: TokenBucket,
        flood_gate: FloodGate,
        chat_limiters: ChatLimiters,
        global_limiter: GlobalRateLimiter,
        health: HealthTracker,
        rng: random.Random,
        on_suspend: Callable[[str], None],
        confirm_token: Callable[[], Awaitable[bool | None]] | None = None,
        policies: Mapping[ErrorCategory, RetryPolicy] | None = None,
        instruments: FleetInstruments | None = None,
    ) -> None:
        self._user_id = user_id
        self._breaker = breaker
        self._retry = retry
        self._counters = counters
        self._bot_limiter = bot_limiter
        self._flood_gate = flood_gate
        self._chat_limiters = chat_limiters
        self._global_limiter = global_limiter
        self._health = health
        self._rng = rng
        self._on_suspend = on_suspend
        # getMe, outside the pipeline: True if the token is accepted, False if refused, None
        # if Telegram could not be asked. Without it a suspected bad token counts as refused.
        self._confirm_token = confirm_token
        # Immutable, so one set serves the whole fleet (``FleetServices.retry_policies``).
        self._policies = retry_policies(retry) if policies is None else policies
        self._retry_uncertain = retry.retry_uncertain_sends
        self._refused = 0
        self._in_flight = 0
        self._usage = UsageMeter(instruments)

    @property
    def user_id(self) -> int:
        return self._user_id

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def health(self) -> HealthTracker:
        return self._health

    @property
    def counters(self) -> RetryCounters:
        return self._counters

    @property
    def flood_gate(self) -> FloodGate:
        return self._flood_gate

    @property
    def usage(self) -> UsageMeter:
        """The bot's usage counts not yet written (calls, sends, reply latency...)."""
        return self._usage

    async def call(
        self,
        method: str,
        send: Callable[[], Awaitable[T]],
        *,
        chat_id: int | str | None = None,
        idempotent: bool = True,
        rate_limited: bool = True,
        measure_latency: bool = True,
        poll: bool = False,
        final: Callable[[BotApiError], bool] | None = None,
    ) -> T:
        """Make the call ``send`` performs, with breaker, limits, retries and health records.

        ``idempotent=False`` marks calls that must not be repeated if they may have been
        delivered (sendMessage and the like). ``rate_limited=False`` (getUpdates) skips the
        chat, bot and process-wide limiters; the flood gate applies to every call.
        ``measure_latency=False`` keeps long polls out of the latency average. ``poll=True``
        (the bot's getUpdates) keeps the outcome in the polls' health and breaker run, apart
        from the calls' (see :mod:`actors.health` and :mod:`actors.breaker`). An error
        ``final`` accepts is raised at once, never retried (a shard's getUpdates 409 "terminated
        by other getUpdates request": a retry would end the other poller's poll).
        """
        self._counters.record_call()
        self._in_flight += 1
        try:
            return await self._call(
                method,
                send,
                chat_id=chat_id,
                idempotent=idempotent,
                rate_limited=rate_limited,
                measure_latency=measure_latency,
                poll=poll,
                final=final,
            )
        finally:
            self._in_flight -= 1

    async def _call(
        self,
        method: str,
        send: Callable[[], Awaitable[T]],
        *,
        chat_id: int | str | None,
        idempotent: bool,
        rate_limited: bool,
        measure_latency: bool,
        poll: bool,
        final: Callable[[BotApiError], bool] | None = None,
    ) -> T:
        retries = 0
        retries_by_category: dict[ErrorCategory, int] = {}
        previous_delay: dict[ErrorCategory, float] = {}
        last_error: BotApiError | None = None
        while True:
            if not self._breaker.try_acquire(poll=poll):
                self._refuse(method, last_error, exhausted=retries > 0)
            generation = self._breaker.generation
            try:
                await self._wait_for_limits(chat_id, rate_limited)
            except BaseException:
                self._breaker.record_ignored(generation=generation, poll=poll)
                raise
            if self._breaker.generation != generation:
                # The breaker changed state while this call waited for its limits (a group
                # chat's may take a minute): admission is decided again, so an OPEN breaker
                # really keeps the bot off Telegram.
                if not self._breaker.try_acquire(poll=poll):
                    if rate_limited:
                        self._global_limiter.release()
                    self._refuse(method, last_error, exhausted=retries > 0)
                generation = self._breaker.generation
            started = trio.current_time()
            try:
                self._counters.record_attempt()
                result = await send()
            except BotApiError as error:
                latency = trio.current_time() - started
                failure = error
                self._record_error(
                    error, chat_id, latency if measure_latency else None, generation, poll=poll
                )
                self._usage.count_call(
                    method,
                    call_outcome(error.category.value),
                    latency if measure_latency else None,
                )
                last_error = error
            except BaseException:
                # Cancelled, or not a Bot API outcome at all: says nothing about the bot, but
                # a HALF_OPEN probe slot must not stay taken.
                self._breaker.record_ignored(generation=generation, poll=poll)
                raise
            else:
                self._breaker.record_success(generation=generation, poll=poll)
                latency = trio.current_time() - started
                self._usage.count_call(method, "ok", latency if measure_latency else None)
                if poll:
                    self._health.record_poll_success()
                else:
                    self._health.record_success(latency if measure_latency else None)
                if retries:
                    self._counters.record_recovered()
                return result

            category = failure.category
            if final is not None and final(failure):
                raise failure
            if category is ErrorCategory.PERMANENT:
                if await self._token_refused(failure):
                    # The owner of the bot's lifecycle (the actor) suspends it; the pipeline
                    # only says why.
                    self._on_suspend(f"{method} failed permanently: {failure.message}")
                    raise failure
                assert isinstance(failure, TelegramError)  # only Telegram's answers are 404s
                log.warning(
                    "bot %s: %s answered 404 but getMe does not refuse the token; not "
                    "suspending, backing off: %s",
                    self._user_id,
                    method,
                    failure.message,
                )
                raise failure.recategorized(ErrorCategory.UNKNOWN) from failure
            if category is ErrorCategory.CHAT:
                raise failure
            retry_after = failure.retry_after if isinstance(failure, TelegramError) else None
            if category is ErrorCategory.RATE_LIMIT and retry_after is not None:
                self._flood_gate.close_for(retry_after)
            if forbids_repeat(
                failure, idempotent=idempotent, retry_uncertain_sends=self._retry_uncertain
            ):
                self._counters.record_uncertain()
                raise failure
            policy = self._policies.get(category, self._policies[ErrorCategory.UNKNOWN])
            used = retries_by_category.get(category, 0)
            if used >= policy.max_retries:
                self._counters.record_exhausted()
                raise failure
            used += 1
            retries_by_category[category] = used
            if category is ErrorCategory.RATE_LIMIT and retry_after is not None:
                delay = retry_after
            else:
                delay = policy.delay(used, previous_delay.get(category), self._rng)
                previous_delay[category] = delay
            if not self._admits_at(trio.current_time() + delay):
                # The failure opened the breaker: waiting out the backoff only to be refused
                # would hold the caller for nothing.
                self._refuse(method, failure, exhausted=True)
            retries += 1
            self._counters.record_retry(category)
            self._usage.count_call(method, "retried")
            await trio.sleep(delay)

    async def _token_refused(self, failure: BotApiError) -> bool:
        """Whether a PERMANENT ``failure`` really means the token is bad: a 401 does; a 404
        does only if getMe refuses the token too."""
        if not isinstance(failure, TelegramError) or failure.error_code != 404:
            return True
        if self._confirm_token is None:
            return True
        return await self._confirm_token() is False

    async def _wait_for_limits(self, chat_id: int | str | None, rate_limited: bool) -> None:
        """Narrow limits first (chat, bot, flood gate), the global token last.

        A 429 of another call of this bot may close the gate while this one waits for a
        process-wide token; the call must not go out then, so the token is released to the
        next waiter and the wait starts again.
        """
        # Limits with room are taken without waiting: each await is a trip through the
        # scheduler, most of an uncontended call's cost. The call itself (the HTTP request)
        # yields to the scheduler; here only a pending cancellation is honoured.
        await trio.lowlevel.checkpoint_if_cancelled()
        now = trio.current_time()  # valid until the first await below
        if rate_limited:
            if chat_id is not None and not self._chat_limiters.try_acquire(chat_id, now):
                await self._chat_limiters.acquire(chat_id)
                now = trio.current_time()
            if not self._bot_limiter.try_acquire(now):
                await self._bot_limiter.acquire()
                now = trio.current_time()
        while True:
            if not self._flood_gate.is_open(now):
                await self._flood_gate.wait_open()
                now = trio.current_time()
            if not rate_limited:
                return
            if not self._global_limiter.try_acquire(self._user_id, now):
                await self._global_limiter.acquire(self._user_id)
                now = trio.current_time()
            if self._flood_gate.is_open(now):
                return
            self._global_limiter.release()

    def _refuse(self, method: str, last_error: BotApiError | None, *, exhausted: bool) -> NoReturn:
        """Raise CircuitOpenError; ``exhausted``: a retryable failure is given up on."""
        self._refused += 1
        if exhausted:
            self._counters.record_exhausted()
        raise CircuitOpenError(
            method=method, retry_at=self._breaker.statistics().half_open_at
        ) from last_error

    def _admits_at(self, when: float) -> bool:
        """Whether the breaker may admit a call at ``when``, as far as is known now."""
        stats = self._breaker.statistics()
        if stats.state is BreakerState.FORCED_OPEN:
            return False
        if stats.state is BreakerState.OPEN:
            return stats.half_open_at is not None and stats.half_open_at <= when
        return True

    def _record_error(
        self,
        error: BotApiError,
        chat_id: int | str | None,
        latency: float | None,
        generation: int,
        *,
        poll: bool,
    ) -> None:
        category = error.category
        if category.is_breaker_failure:
            self._breaker.record_failure(generation=generation, poll=poll)
        else:
            self._breaker.record_ignored(generation=generation, poll=poll)
        if category is ErrorCategory.RATE_LIMIT:
            self._health.record_throttled()
        elif category is ErrorCategory.CHAT:
            self._health.record_chat_error(chat_id)
        else:
            # Only an answer from the server has a response time worth averaging; a timeout's
            # duration is the timeout setting.
            answered = isinstance(error, TelegramError)
            if poll:
                self._health.record_poll_failure(str(error))
            else:
                self._health.record_failure(str(error), latency if answered else None)

    def status(self) -> BotStatus:
        return self._health.status(self._breaker.state)

    def health_row(self, recorded_at: float) -> HealthRow:
        """This bot's ``bot_health_metrics`` row now (``recorded_at``: wall clock)."""
        return health_row(
            self._user_id,
            recorded_at,
            self.status(),
            self._health.statistics(),
            self._breaker.statistics(),
            self._counters.statistics(),
        )

    def restore(self, row: HealthRow) -> None:
        """Seed every cumulative counter from the bot's latest stored snapshot."""
        self._health.restore(row)
        self._breaker.restore(failure_count=row.circuit_failure_count)
        self._counters.restore(retries=row.retry_attempts)

    def statistics(self) -> PipelineStatistics:
        flood = self._flood_gate.statistics()
        return PipelineStatistics(
            user_id=self._user_id,
            status=self.status(),
            breaker=self._breaker.statistics(),
            retry=self._counters.statistics(),
            health=self._health.statistics(),
            refused=self._refused,
            in_flight=self._in_flight,
            flood_open_at=flood.open_at,
        )
