"""RequestPipeline with a scripted ``send`` on MockClock."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from actors.botapi.errors import CircuitOpenError, ErrorCategory, TelegramError, TransportError
from actors.breaker import BreakerState, CircuitBreaker
from actors.config import (
    BackoffKind,
    BreakerConfig,
    HealthConfig,
    JitterKind,
    LimitsConfig,
    RetryConfig,
    RetryPolicyConfig,
)
from actors.health import BotStatus, HealthTracker
from actors.limits import ChatLimiters, FloodGate, GlobalRateLimiter, TokenBucket
from actors.pipeline import RequestPipeline
from actors.retry import RetryCounters

TOKEN = "123456789:AAEhBP0av28bM4Nq2mY9sGkPmQ4DkX0aBcD"

# Exact delays: transient errors back off 0.5 s, 1 s, 2 s…; unknown ones 2 s, 4 s…
EXACT_RETRY = RetryConfig(
    transient_network=RetryPolicyConfig(max_retries=2, jitter=JitterKind.NONE, base_delay=0.5),
    unknown=RetryPolicyConfig(max_retries=2, jitter=JitterKind.NONE, base_delay=2.0),
)


def telegram(code: int, *, retry_after: float | None = None, method: str = "sendMessage") -> Any:
    return TelegramError(
        method=method, error_code=code, description=f"error {code}", retry_after=retry_after
    )


def timeout(*, sent: bool) -> TransportError:
    return TransportError("read timed out", method="sendMessage", request_sent=sent)


class Script:
    """A fake ``send``: each call takes ``latency`` seconds, then returns or raises its step."""

    def __init__(self, *steps: object, latency: float = 0.0) -> None:
        self.steps = list(steps)
        self.latency = latency
        self.calls: list[float] = []

    async def __call__(self) -> object:
        self.calls.append(trio.current_time())
        await trio.sleep(self.latency)
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


@dataclass
class Rig:
    pipeline: RequestPipeline
    breaker: CircuitBreaker
    counters: RetryCounters
    health: HealthTracker
    flood_gate: FloodGate
    global_limiter: GlobalRateLimiter
    suspended: list[str] = field(default_factory=list)


def rig(
    *,
    retry: RetryConfig = EXACT_RETRY,
    breaker_config: BreakerConfig | None = None,
    global_limiter: GlobalRateLimiter | None = None,
    user_id: int = 1001,
    bot_limiter: TokenBucket | None = None,
    flood_gate: FloodGate | None = None,
    chat_limiters: ChatLimiters | None = None,
    breaker: CircuitBreaker | None = None,
    confirm_token: Callable[[], Awaitable[bool | None]] | None = None,
) -> Rig:
    breaker = breaker or CircuitBreaker(breaker_config or BreakerConfig())
    counters = RetryCounters()
    health = HealthTracker(HealthConfig(), wall_clock=lambda: 1_700_000_000.0)
    flood_gate = flood_gate or FloodGate()
    global_limiter = global_limiter or GlobalRateLimiter(rate=25, burst=25)
    suspended: list[str] = []

    def on_suspend(reason: str) -> None:
        # What the actor, the one writer of a suspension, does when the pipeline reports one.
        suspended.append(reason)
        health.suspend(reason)

    pipeline = RequestPipeline(
        user_id=user_id,
        breaker=breaker,
        retry=retry,
        counters=counters,
        bot_limiter=bot_limiter or TokenBucket(rate=30, burst=30),
        flood_gate=flood_gate,
        chat_limiters=chat_limiters or ChatLimiters(LimitsConfig()),
        global_limiter=global_limiter,
        health=health,
        rng=random.Random(7),
        on_suspend=on_suspend,
        confirm_token=confirm_token,
    )
    return Rig(pipeline, breaker, counters, health, flood_gate, global_limiter, suspended)


async def test_success_records_latency_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    r = rig()
    send = Script({"message_id": 1}, latency=0.25)
    assert await r.pipeline.call("sendMessage", send, chat_id=5) == {"message_id": 1}
    assert trio.current_time() == 0.25
    health = r.health.statistics()
    assert (health.successful_requests, health.ema_latency_ms) == (1, 250)
    retry = r.counters.statistics()
    assert (retry.calls, retry.attempts, retry.retries) == (1, 1, 0)
    assert r.pipeline.statistics().status is BotStatus.HEALTHY


async def test_429_waits_exactly_retry_after_and_closes_the_bot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig()
    send = Script(telegram(429, retry_after=7), "sent")
    other = Script("other sent")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(r.pipeline.call, "sendMessage", send)
        await trio.sleep(1)
        # Another call of the same bot, even a poll, waits for the flood gate too.
        assert await r.pipeline.call("getUpdates", other, rate_limited=False) == "other sent"
        assert trio.current_time() == 7
    assert send.calls == [0, 7]
    assert other.calls == [7]
    assert r.flood_gate.open_at == 7
    assert r.breaker.statistics().consecutive_failures == 0  # a 429 is not a bot failure
    assert r.health.statistics().throttled == 1
    assert r.counters.statistics().retries_by_category["rate_limit"] == 1
    assert r.counters.statistics().recovered == 1


async def test_429_retries_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    r = rig()
    send = Script(*[telegram(429, retry_after=7) for _ in range(4)])
    with pytest.raises(TelegramError) as caught:
        await r.pipeline.call("sendMessage", send)
    assert caught.value.error_code == 429
    assert send.calls == [0, 7, 14, 21]  # rate_limit.max_retries = 3
    stats = r.counters.statistics()
    assert (stats.retries, stats.exhausted, stats.recovery_rate) == (3, 1, 0.0)
    assert r.breaker.state is BreakerState.CLOSED


async def test_transient_errors_back_off_then_recover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig()
    send = Script(telegram(502), timeout(sent=False), "ok")
    assert await r.pipeline.call("sendMessage", send, idempotent=False) == "ok"
    assert send.calls == [0, 0.5, 1.5]
    stats = r.counters.statistics()
    assert stats.retries_by_category["transient_network"] == 2
    assert (stats.recovered, stats.exhausted) == (1, 0)
    assert r.health.statistics().failed_requests == 2
    assert r.breaker.statistics().consecutive_failures == 0  # the success reset the run


async def test_unknown_errors_have_their_own_budget(autojump_clock: trio.testing.MockClock) -> None:
    r = rig()
    send = Script(telegram(418), telegram(418), telegram(418))
    with pytest.raises(TelegramError):
        await r.pipeline.call("getMe", send)
    assert send.calls == [0, 2, 6]
    assert r.counters.statistics().retries_by_category["unknown"] == 2


async def test_unknown_errors_are_breaker_failures(autojump_clock: trio.testing.MockClock) -> None:
    # An unclassified answer (HTTP 418) is a failure of the bot's calls, like a 5xx: three in
    # a row open a breaker whose threshold is 3, and the next call is refused at once.
    r = rig(breaker_config=BreakerConfig(failure_threshold=3, open_seconds=60))
    send = Script(telegram(418), telegram(418), telegram(418), "never")
    with pytest.raises(TelegramError) as caught:
        await r.pipeline.call("getMe", send)
    assert caught.value.category is ErrorCategory.UNKNOWN
    assert r.breaker.state is BreakerState.OPEN
    assert r.breaker.statistics().consecutive_failures == 3
    assert r.health.statistics().failed_requests == 3
    with pytest.raises(CircuitOpenError):
        await r.pipeline.call("getMe", send)
    assert len(send.calls) == 3
    assert r.pipeline.statistics().status is BotStatus.UNHEALTHY


async def test_429_waits_retry_after_even_when_the_backoff_is_longer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The rate_limit policy's own backoff (here 20 s) is for a 429 without retry_after; when
    # Telegram says 2 s, the retry goes out after exactly 2 s, not 20.
    slow_backoff = RetryPolicyConfig(
        max_retries=3, jitter=JitterKind.NONE, backoff=BackoffKind.FIXED, base_delay=20.0
    )
    r = rig(retry=EXACT_RETRY.model_copy(update={"rate_limit": slow_backoff}))
    send = Script(telegram(429, retry_after=2), telegram(429, retry_after=3), "sent")
    assert await r.pipeline.call("sendMessage", send) == "sent"
    assert send.calls == [0, 2, 5]
    # Without retry_after, the policy's backoff is all there is.
    again = Script(telegram(429), "sent")
    assert await r.pipeline.call("sendMessage", again) == "sent"
    assert again.calls == [5, 25]


async def test_uncertain_send_of_a_message_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig()
    send = Script(timeout(sent=True), "duplicate!")
    with pytest.raises(TransportError):
        await r.pipeline.call("sendMessage", send, idempotent=False)
    assert send.calls == [0]
    assert r.counters.statistics().uncertain == 1
    assert r.counters.statistics().exhausted == 0

    # An idempotent call with the same error is retried.
    again = Script(timeout(sent=True), "ok")
    assert await r.pipeline.call("getChat", again) == "ok"


async def test_uncertain_sends_retried_when_configured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig(retry=RetryConfig(retry_uncertain_sends=True))
    send = Script(timeout(sent=True), "ok")
    assert await r.pipeline.call("sendMessage", send, idempotent=False) == "ok"
    assert len(send.calls) == 2


async def test_permanent_error_suspends_without_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig()
    error = TelegramError(method="getMe", error_code=401, description=f"Unauthorized {TOKEN}")
    send = Script(error, "never")
    with pytest.raises(TelegramError):
        await r.pipeline.call("getMe", send)
    assert send.calls == [0]
    assert len(r.suspended) == 1
    assert "401" in r.suspended[0]
    assert TOKEN not in r.suspended[0]
    assert r.pipeline.statistics().status is BotStatus.SUSPENDED
    assert r.breaker.statistics().failure_count == 1


async def test_chat_error_is_not_a_breaker_failure(autojump_clock: trio.testing.MockClock) -> None:
    r = rig(breaker_config=BreakerConfig(failure_threshold=1))
    send = Script(telegram(403), telegram(400))
    for _ in range(2):
        with pytest.raises(TelegramError):
            await r.pipeline.call("sendMessage", send, chat_id=5)
    assert r.breaker.state is BreakerState.CLOSED
    health = r.health.statistics()
    assert (health.chat_errors, health.failed_requests) == (2, 0)
    assert r.counters.statistics().retries == 0


async def test_open_breaker_refuses_at_once(autojump_clock: trio.testing.MockClock) -> None:
    r = rig(breaker_config=BreakerConfig(failure_threshold=2))
    send = Script(telegram(500), telegram(500), "never")
    with pytest.raises(CircuitOpenError) as caught:
        await r.pipeline.call("sendMessage", send)
    # Two failures opened the breaker; the second retry was refused at once, not attempted
    # and not waited for.
    assert send.calls == [0, 0.5]
    assert trio.current_time() == 0.5
    assert caught.value.retry_at == 60.5
    assert caught.value.method == "sendMessage"
    assert isinstance(caught.value.__cause__, TelegramError)
    assert r.counters.statistics().exhausted == 1

    refused = Script("never")
    with pytest.raises(CircuitOpenError):
        await r.pipeline.call("sendMessage", refused)
    assert refused.calls == []
    assert trio.current_time() == 0.5
    stats = r.pipeline.statistics()
    assert stats.refused == 2  # the first refusal did not even ask the breaker
    assert stats.breaker.rejected_count == 1
    assert stats.status is BotStatus.UNHEALTHY


async def test_cancelled_probe_frees_the_half_open_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig(breaker_config=BreakerConfig(failure_threshold=1, open_seconds=10))
    with pytest.raises(CircuitOpenError):
        await r.pipeline.call("getMe", Script(telegram(500)))
    await trio.sleep_until(10.5)
    assert r.breaker.state is BreakerState.HALF_OPEN
    hanging = Script("late", latency=1000)
    with trio.move_on_after(1):
        await r.pipeline.call("getMe", hanging)  # the probe
    assert hanging.calls == [10.5]
    assert r.breaker.state is BreakerState.HALF_OPEN
    assert r.breaker.try_acquire()  # the slot is free again


async def test_limits_are_taken_narrow_first_global_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    order: list[str] = []

    def spy(name: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(inner):

            async def waiting(*args: Any) -> Any:
                order.append(name)
                return await inner(*args)

            return waiting

        def at_once(*args: Any) -> Any:
            order.append(name)
            return inner(*args)

        return at_once

    r = rig()
    chat_limiters = ChatLimiters(LimitsConfig())
    bot_limiter = TokenBucket(rate=30, burst=30)
    # Each limit is consulted either without waiting (room now) or by waiting for it.
    for obj, name, methods in (
        (chat_limiters, "chat", ("try_acquire", "acquire")),
        (bot_limiter, "bot", ("try_acquire", "acquire")),
        (r.flood_gate, "flood", ("is_open", "wait_open")),
        (r.global_limiter, "global", ("try_acquire", "acquire")),
    ):
        for method in methods:
            setattr(obj, method, spy(name, getattr(obj, method)))
    r = rig(
        chat_limiters=chat_limiters,
        bot_limiter=bot_limiter,
        flood_gate=r.flood_gate,
        global_limiter=r.global_limiter,
    )

    async def send() -> str:
        order.append("send")
        return "ok"

    def first_uses() -> list[str]:
        return list(dict.fromkeys(order))

    await r.pipeline.call("sendMessage", send, chat_id=5)
    assert first_uses() == ["chat", "bot", "flood", "global", "send"]
    order.clear()
    await r.pipeline.call("getUpdates", send, rate_limited=False)
    assert first_uses() == ["flood", "send"]


async def test_a_bot_waiting_for_its_own_limit_holds_no_global_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = GlobalRateLimiter(rate=1, burst=1)
    slow_bot = rig(user_id=1, global_limiter=shared, bot_limiter=TokenBucket(rate=0.1, burst=1))
    other_bot = rig(user_id=2, global_limiter=shared)
    await slow_bot.pipeline.call("sendMessage", Script("a"))  # takes the global token at 0
    done: dict[str, float] = {}

    async def call(name: str, r: Rig) -> None:
        await r.pipeline.call("sendMessage", Script(name))
        done[name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "slow", slow_bot)  # its own limit: next token at t=10
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "other", other_bot)
    assert done == {"other": 1, "slow": 10}


async def test_statistics_row_and_restore(autojump_clock: trio.testing.MockClock) -> None:
    r = rig()
    await r.pipeline.call("sendMessage", Script(telegram(502), "ok"))
    row = r.pipeline.health_row(1_700_000_100.0)
    assert (row.user_id, row.status, row.total_requests, row.retry_attempts) == (
        1001, "healthy", 2, 1,
    )  # fmt: skip
    assert row.circuit_failure_count == 1
    fresh = rig()
    fresh.pipeline.restore(row)
    assert fresh.pipeline.health_row(1_700_000_200.0).total_requests == 2
    assert fresh.counters.statistics().retries == 1
    assert fresh.breaker.statistics().failure_count == 1
    assert ErrorCategory.RATE_LIMIT.value in r.pipeline.statistics().retry.retries_by_category


NO_TRANSIENT_RETRY = EXACT_RETRY.model_copy(
    update={"transient_network": RetryPolicyConfig(max_retries=0, jitter=JitterKind.NONE)}
)


async def test_a_refusal_names_the_method_and_what_failed_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig()
    failing = Script(telegram(502), "never")

    async def operator_opens_the_breaker() -> None:
        await trio.sleep(0.25)  # while the call waits to retry
        r.breaker.force_open()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator_opens_the_breaker)
        with pytest.raises(CircuitOpenError) as caught:
            await r.pipeline.call("getChat", failing)
    # The retry was refused when it came due: a given-up call, caused by the 502.
    assert trio.current_time() == 0.5
    assert failing.calls == [0]
    assert caught.value.method == "getChat"
    assert "getChat not attempted" in str(caught.value)
    assert isinstance(caught.value.__cause__, TelegramError)
    assert caught.value.__cause__.error_code == 502
    assert r.counters.statistics().exhausted == 1
    # A fresh call refused at once was never tried: nothing was given up on, nothing caused it.
    with pytest.raises(CircuitOpenError) as fresh:
        await r.pipeline.call("sendMessage", Script("never"))
    assert fresh.value.method == "sendMessage"
    assert fresh.value.__cause__ is None
    assert r.counters.statistics().exhausted == 1


async def test_a_breaker_change_while_waiting_for_limits_is_decided_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The bot's own limit makes the second call wait a second; meanwhile the breaker is
    # forced open: the call must not go out, and its global token goes back.
    r = rig(bot_limiter=TokenBucket(rate=1, burst=1))
    assert await r.pipeline.call("sendMessage", Script("first")) == "first"
    waiting = Script("never")

    async def operator(action: Callable[[], None]) -> None:
        await trio.sleep(0.5)
        action()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator, r.breaker.force_open)
        with pytest.raises(CircuitOpenError) as caught:
            await r.pipeline.call("sendMessage", waiting)
    assert trio.current_time() == 1.0
    assert waiting.calls == []
    assert caught.value.method == "sendMessage"
    assert caught.value.__cause__ is None
    assert r.counters.statistics().exhausted == 0
    global_before = r.global_limiter.statistics()
    # A reset while waiting is a change too: the breaker admits, so the call goes out.
    r.breaker.reset()
    assert await r.pipeline.call("sendMessage", Script("second")) == "second"
    late = Script("third")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator, r.breaker.reset)
        assert await r.pipeline.call("sendMessage", late) == "third"
    assert late.calls == [3.0]
    assert r.global_limiter.statistics() != global_before


async def test_a_failing_answer_counts_its_response_time_a_timeout_does_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig(retry=NO_TRANSIENT_RETRY)
    await trio.sleep(10)  # calls start at t=10, not 0
    with pytest.raises(TelegramError):
        await r.pipeline.call("getChat", Script(telegram(500), latency=0.25))
    assert r.health.statistics().ema_latency_ms == 250
    assert r.health.statistics().last_error == "sendMessage failed: 500 error 500"
    with pytest.raises(TransportError):
        await r.pipeline.call("getChat", Script(timeout(sent=False), latency=5))
    assert r.health.statistics().ema_latency_ms == 250  # a timeout's length is a setting
    # A long poll's duration is not a response time, whether it succeeds or fails.
    quiet = rig(retry=NO_TRANSIENT_RETRY)
    await quiet.pipeline.call("getUpdates", Script([], latency=30), measure_latency=False)
    with pytest.raises(TelegramError):
        await quiet.pipeline.call(
            "getUpdates", Script(telegram(500), latency=3), measure_latency=False
        )
    assert quiet.health.statistics().ema_latency_ms is None
    answered = rig()
    await trio.sleep(5)
    await answered.pipeline.call("getMe", Script("me", latency=0.5))
    assert answered.health.statistics().ema_latency_ms == 500


async def test_a_retry_is_not_waited_for_if_the_breaker_will_refuse_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Forced open (by an operator) during the failing attempt: refused at once, no backoff.
    r = rig()

    async def failing_while_forced_open() -> object:
        r.breaker.force_open()
        raise telegram(502)

    with pytest.raises(CircuitOpenError):
        await r.pipeline.call("getChat", failing_while_forced_open)
    assert trio.current_time() == 0


async def test_a_retry_due_exactly_when_the_breaker_half_opens_is_made(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One failure opens the breaker for 0.5 s; the transient backoff is 0.5 s: the retry is
    # the half-open probe, at exactly t=0.5, and it succeeds.
    r = rig(breaker_config=BreakerConfig(failure_threshold=1, open_seconds=0.5))
    send = Script(telegram(502), "ok")
    assert await r.pipeline.call("getChat", send) == "ok"
    assert send.calls == [0, 0.5]
    assert r.counters.statistics().recovered == 1


async def test_calls_in_flight_are_counted_while_they_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig(user_id=4242)
    assert r.pipeline.statistics().in_flight == 0
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(r.pipeline.call, "getMe", Script("me", latency=1))
        await trio.sleep(0.5)
        assert r.pipeline.statistics().in_flight == 2
    stats = r.pipeline.statistics()
    assert stats.in_flight == 0
    assert stats.user_id == 4242
    assert stats.health == r.health.statistics()
    assert stats.flood_open_at is None
    with pytest.raises(TelegramError):
        await r.pipeline.call("getMe", Script(telegram(429, retry_after=5), *[telegram(429)] * 3))
    assert r.pipeline.statistics().flood_open_at is not None
    row = r.pipeline.health_row(1_700_000_123.0)
    assert (row.user_id, row.recorded_at) == (4242, 1_700_000_123.0)


async def test_a_private_chat_gets_one_message_a_second_other_chats_are_not_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig()
    first, again, other = Script("a"), Script("b"), Script("c")
    async with trio.open_nursery() as nursery:
        for script, chat in ((first, 5), (again, 5), (other, 6)):
            nursery.start_soon(partial(r.pipeline.call, "sendMessage", script, chat_id=chat))
    assert sorted(first.calls + again.calls) == [0, 1]  # chat 5: one now, one a second later
    assert other.calls == [0]


async def test_waiting_tenants_share_the_global_limit_round_robin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = GlobalRateLimiter(rate=1, burst=1)
    busy, light = rig(user_id=1, global_limiter=shared), rig(user_id=2, global_limiter=shared)
    served: list[str] = []

    def named(name: str) -> Script:
        script = Script(name)
        original = script.__call__

        async def call() -> object:
            served.append(name)
            return await original()

        return call  # type: ignore[return-value]

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(busy.pipeline.call, "getChat", named(f"busy{n}"))
            await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(light.pipeline.call, "getChat", named("light"))
    # The light tenant asked last but is served at its first turn, not after the busy one's
    # whole backlog.
    assert served == ["busy0", "busy1", "light", "busy2"]


async def test_an_outcome_from_before_a_breaker_reset_does_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A slow call was admitted, then the operator forced the breaker open and reset it: the
    # call's failure belongs to the old episode and must not open the new one (threshold 1).
    r = rig(retry=NO_TRANSIENT_RETRY, breaker_config=BreakerConfig(failure_threshold=1))

    async def reset_soon() -> None:
        await trio.sleep(1)
        r.breaker.force_open()
        r.breaker.reset()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reset_soon)
        with pytest.raises(TelegramError):
            await r.pipeline.call("getChat", Script(telegram(500), latency=2))
    assert r.breaker.state is BreakerState.CLOSED
    assert r.breaker.statistics().consecutive_failures == 0
    # The same failure without a reset in between opens it.
    with pytest.raises(TelegramError):
        await r.pipeline.call("getChat", Script(telegram(500), latency=2))
    assert r.breaker.statistics().state is BreakerState.OPEN


class GetMe:
    """A fake ``confirm_token``: getMe's verdict on the token (None: Telegram unreachable)."""

    def __init__(self, verdict: bool | None) -> None:
        self.verdict = verdict
        self.asked = 0

    async def __call__(self) -> bool | None:
        self.asked += 1
        return self.verdict


def not_found() -> TelegramError:
    return TelegramError(method="getMe", error_code=404, description="Not Found")


async def test_a_404_suspends_the_bot_only_if_getme_refuses_the_token_too(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # getMe refuses the token: the 404 meant it; suspended, the 404 raised as it came.
    refused = GetMe(False)
    r = rig(confirm_token=refused)
    with pytest.raises(TelegramError) as caught:
        await r.pipeline.call("getMe", Script(not_found(), "never"))
    assert refused.asked == 1
    assert r.suspended == ["getMe failed permanently: getMe failed: 404 Not Found"]
    assert caught.value.category is ErrorCategory.PERMANENT
    # getMe accepts the token (or cannot be asked): a 404 of a working bot is not a bad
    # token. Not suspended; raised as UNKNOWN (the caller backs off), and the log says why.
    for verdict in (True, None):
        accepted = GetMe(verdict)
        r = rig(confirm_token=accepted)
        caplog.clear()
        send = Script(not_found(), "never")
        with pytest.raises(TelegramError) as caught:
            await r.pipeline.call("getMe", send)
        assert accepted.asked == 1
        assert send.calls == [trio.current_time()]  # not retried either
        assert r.suspended == []
        assert r.pipeline.statistics().status is not BotStatus.SUSPENDED
        assert caught.value.category is ErrorCategory.UNKNOWN
        assert caught.value.error_code == 404
        assert [record.getMessage() for record in caplog.records] == [
            "bot 1001: getMe answered 404 but getMe does not refuse the token; not "
            "suspending, backing off: getMe failed: 404 Not Found"
        ]
    # Without a getMe to ask, a 404 of getMe counts as a refused token.
    alone = rig()
    with pytest.raises(TelegramError):
        await alone.pipeline.call("getMe", Script(not_found()))
    assert alone.suspended == ["getMe failed permanently: getMe failed: 404 Not Found"]


async def test_a_401_suspends_without_asking_getme(autojump_clock: trio.testing.MockClock) -> None:
    # A 401 is Telegram refusing the token itself: no second opinion, even one that would
    # (wrongly, say from a cache) accept it.
    getme = GetMe(True)
    r = rig(confirm_token=getme)
    unauthorized = TelegramError(method="getMe", error_code=401, description="Unauthorized")
    with pytest.raises(TelegramError):
        await r.pipeline.call("getMe", Script(unauthorized))
    assert getme.asked == 0
    assert r.suspended == ["getMe failed permanently: getMe failed: 401 Unauthorized"]


async def test_failed_polls_count_in_the_polls_run_not_the_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig(retry=NO_TRANSIENT_RETRY)
    with pytest.raises(TelegramError):
        await r.pipeline.call(
            "getUpdates",
            Script(telegram(502, method="getUpdates")),
            rate_limited=False,
            measure_latency=False,
            poll=True,
        )
    health, breaker = r.health.statistics(), r.breaker.statistics()
    assert (health.poll_failures, health.poll_consecutive_failures) == (1, 1)
    assert health.consecutive_failures == 0
    assert health.last_error == "getUpdates failed: 502 error 502"
    assert (breaker.poll_consecutive_failures, breaker.consecutive_failures) == (1, 0)


async def half_open_with_probe_out(r: Rig) -> None:
    """Calls opened the breaker (threshold 1, open 1 s); now HALF_OPEN, its probe taken."""
    r.breaker.record_failure()
    assert r.breaker.statistics().state is BreakerState.OPEN
    await trio.sleep(1)
    assert r.breaker.try_acquire()  # the probe, out and not back yet
    assert r.breaker.statistics().state is BreakerState.HALF_OPEN


def probe_still_out(r: Rig) -> bool:
    """HALF_OPEN and a second probe refused: nobody freed or decided the real probe."""
    return r.breaker.state is BreakerState.HALF_OPEN and not r.breaker.try_acquire()


PROBE = BreakerConfig(failure_threshold=1, open_seconds=1)


async def test_polls_beside_the_half_open_probe_neither_decide_nor_free_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sends opened the breaker; polls keep the bot's updates flowing beside the probe, but
    # what happens to a poll says nothing about the sends.
    r = rig(retry=NO_TRANSIENT_RETRY, breaker_config=PROBE)
    await half_open_with_probe_out(r)
    poll = partial(r.pipeline.call, "getUpdates", rate_limited=False, poll=True)
    assert await poll(Script([])) == []  # admitted beside the probe
    assert probe_still_out(r)  # a successful poll does not close the breaker
    with pytest.raises(TelegramError):
        await poll(Script(telegram(400, method="getUpdates")))  # ignored by the breaker
    assert probe_still_out(r)
    with trio.move_on_after(1):
        await poll(Script([], latency=30))  # cancelled mid-poll (the bot stopping)
    assert probe_still_out(r)
    r.flood_gate.close_for(5)
    with trio.move_on_after(1):
        await poll(Script([]))  # cancelled while the flood gate holds it
    assert probe_still_out(r)


async def test_a_poll_admitted_before_a_breaker_change_is_readmitted_beside_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The poll waits behind a closed flood gate; meanwhile the sends open the breaker and it
    # half-opens with its probe out. Re-decided, the poll still goes out (beside the probe).
    r = rig(retry=NO_TRANSIENT_RETRY, breaker_config=PROBE)
    r.flood_gate.close_for(3)
    poll = Script(["update"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(half_open_with_probe_out, r))
        result = await r.pipeline.call("getUpdates", poll, rate_limited=False, poll=True)
    assert result == ["update"]
    assert poll.calls == [3]
    assert probe_still_out(r)


OUTLIVING_OUTCOMES = {
    "success": "ok",
    "chat error": telegram(400),
    "429": telegram(429),
}


@pytest.mark.parametrize("outcome", OUTLIVING_OUTCOMES, ids=list(OUTLIVING_OUTCOMES))
async def test_an_outcome_of_an_older_episode_leaves_the_probe_alone(
    autojump_clock: trio.testing.MockClock, outcome: str
) -> None:
    # A slow call admitted while CLOSED ends after the breaker opened and half-opened with a
    # probe out: its outcome (whatever it is) belongs to the old episode.
    retry = NO_TRANSIENT_RETRY.model_copy(
        update={"rate_limit": RetryPolicyConfig(max_retries=0, jitter=JitterKind.NONE)}
    )
    r = rig(retry=retry, breaker_config=PROBE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(half_open_with_probe_out, r))
        with contextlib.suppress(TelegramError):
            await r.pipeline.call("sendMessage", Script(OUTLIVING_OUTCOMES[outcome], latency=2))
    assert probe_still_out(r)


async def test_a_call_of_an_older_episode_cancelled_leaves_the_probe_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig(breaker_config=PROBE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(half_open_with_probe_out, r))
        with trio.move_on_after(2):
            await r.pipeline.call("sendMessage", Script("never", latency=30))  # mid-send
    assert probe_still_out(r)
    gated = rig(breaker_config=PROBE)
    gated.flood_gate.close_for(30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(half_open_with_probe_out, gated))
        with trio.move_on_after(2):
            await gated.pipeline.call("sendMessage", Script("never"))  # waiting for limits
    assert probe_still_out(gated)


async def test_a_retry_refused_after_its_wait_for_limits_is_a_given_up_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The 502's retry is due at 0.5 s but the bot's own limit holds it to 1 s; at 0.75 s the
    # operator forces the breaker open: the retry is refused, given up on, caused by the 502.
    r = rig(bot_limiter=TokenBucket(rate=1, burst=1))
    send = Script(telegram(502), "never")

    async def operator() -> None:
        await trio.sleep(0.75)
        r.breaker.force_open()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator)
        with pytest.raises(CircuitOpenError) as caught:
            await r.pipeline.call("getChat", send)
    assert send.calls == [0]
    assert trio.current_time() == 1
    assert isinstance(caught.value.__cause__, TelegramError)
    assert caught.value.__cause__.error_code == 502
    assert r.counters.statistics().exhausted == 1


async def test_decorrelated_jitter_grows_from_the_delay_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Decorrelated jitter draws each delay from [base, 3 × the previous delay]: the pipeline
    # must hand each retry the delay it waited before, or every wait stays within 3 × base.
    decorrelated = RetryPolicyConfig(
        max_retries=12, jitter=JitterKind.DECORRELATED, base_delay=1.0, max_delay=3600
    )
    r = rig(
        retry=EXACT_RETRY.model_copy(update={"transient_network": decorrelated}),
        breaker_config=BreakerConfig(failure_threshold=20),
    )
    send = Script(*[telegram(502)] * 12, "ok")
    assert await r.pipeline.call("getChat", send) == "ok"
    waits = [later - earlier for earlier, later in zip(send.calls, send.calls[1:], strict=False)]
    assert len(waits) == 12
    assert all(wait >= 1 for wait in waits)
    assert all(later <= 3 * earlier + 1e-9 for earlier, later in itertools.pairwise(waits))
    assert max(waits) > 3


async def test_two_messages_in_a_row_to_a_private_chat_are_a_second_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One after the other (no race between tasks): the first takes chat 5's slot.
    r = rig()
    first, second = Script("a"), Script("b")
    await r.pipeline.call("sendMessage", first, chat_id=5)
    await r.pipeline.call("sendMessage", second, chat_id=5)
    assert (first.calls, second.calls) == ([0], [1])


async def test_a_call_readmitted_after_a_breaker_change_then_outliving_another_leaves_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The call waits behind the flood gate; the operator forces the breaker open and resets
    # it (re-decided at 1 s: admitted). While it is out, the sends open the breaker and it
    # half-opens with its probe out: the call's success belongs to the episode it was
    # readmitted in, not to the probe.
    r = rig(breaker_config=PROBE.model_copy(update={"half_open_successes": 1}))
    r.flood_gate.close_for(1)

    async def meanwhile() -> None:
        await trio.sleep(0.5)
        r.breaker.force_open()
        r.breaker.reset()
        await trio.sleep(1)
        await half_open_with_probe_out(r)

    slow = Script("ok", latency=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(meanwhile)
        assert await r.pipeline.call("sendMessage", slow) == "ok"
    assert slow.calls == [1]
    assert probe_still_out(r)
