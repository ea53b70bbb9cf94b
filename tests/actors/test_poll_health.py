"""Polling health and call health are tracked apart: successful polls never hide failing
sends, and failing polls still open the breaker (unit level, then the real daemon)."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from actors import BotStatus
from actors.botapi import CircuitOpenError, TelegramError
from actors.breaker import BreakerState, CircuitBreaker
from actors.config import BreakerConfig, HealthConfig
from actors.health import HealthTracker
from actors.simulator import SimulatedBotApi
from tests.actors.test_pipeline import Script, rig, telegram
from tests.actors.transports import FailingMethod, ShortPolls
from tests.harness import admin_client, running_fleet

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_a_successful_poll_does_not_end_the_calls_run_of_failures() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=5), clock=lambda: 0.0)
    for _ in range(4):
        assert breaker.try_acquire()
        breaker.record_failure()
        assert breaker.try_acquire(poll=True)
        breaker.record_success(poll=True)
    assert breaker.statistics().consecutive_failures == 4
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state is OPEN


async def test_a_breaker_the_sends_opened_is_not_closed_by_polls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=2, open_seconds=60))
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_failure()
    assert breaker.try_acquire(poll=True) is False  # OPEN keeps the bot off Telegram
    await trio.sleep(60)
    assert breaker.state is HALF_OPEN
    # Polls go on beside the probe, and their successes close nothing.
    assert breaker.try_acquire()  # the probe: a parked send
    for _ in range(5):
        assert breaker.try_acquire(poll=True)
        breaker.record_success(poll=True)
    assert breaker.state is HALF_OPEN
    assert breaker.statistics().probe_in_flight
    breaker.record_failure()  # the probe's send failed: open again
    assert breaker.state is OPEN


async def test_failing_polls_open_the_breaker_and_successful_polls_close_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=3, open_seconds=60))
    for _ in range(3):
        assert breaker.try_acquire(poll=True)
        breaker.record_failure(poll=True)  # a 502 on getUpdates
    assert breaker.state is OPEN
    assert breaker.statistics().opened_by_polls
    await trio.sleep(60)
    for _ in range(2):  # half_open_successes
        assert breaker.try_acquire(poll=True)
        breaker.record_success(poll=True)
    assert breaker.state is CLOSED


def test_polling_status_and_call_status_are_apart() -> None:
    health = HealthTracker(HealthConfig(), wall_clock=lambda: 1.0, clock=lambda: 0.0)
    for _ in range(5):
        health.record_failure("sendMessage failed: 500", None)
        health.record_poll_success()
    stats = health.statistics()
    assert stats.consecutive_failures == 5
    assert health.polling_status() is BotStatus.HEALTHY
    assert health.call_status(CLOSED) is BotStatus.UNHEALTHY
    assert health.status(CLOSED) is BotStatus.UNHEALTHY
    for _ in range(3):
        health.record_poll_failure("getUpdates failed: 502")
    health.record_success(0.05)
    assert health.call_status(CLOSED) is BotStatus.HEALTHY
    assert health.polling_status() is BotStatus.DEGRADED
    assert health.status(CLOSED) is BotStatus.DEGRADED
    assert (health.statistics().polls, health.statistics().poll_failures) == (8, 3)


async def test_a_bot_whose_every_send_fails_is_unhealthy_though_its_polls_succeed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(31))

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        # A poll returns every second, so successful polls come between the failed sends.
        return ShortPolls(FailingMethod(inner, {"sendMessage"}), hold=1)

    async with running_fleet(tmp_path / "h.db", [1], api=api, wrap_transport=wrap) as fleet:
        api.send_user_message(fleet.tokens[1], 7, "anyone?")
        await trio.sleep(45)
        stats = fleet.handle.fleet.get(1).statistics()
        assert stats.health.polls > 3  # (polls stop while the breaker is open)
        assert stats.polling_status is BotStatus.HEALTHY
        assert stats.call_status is BotStatus.UNHEALTHY
        assert stats.status is BotStatus.UNHEALTHY
        assert stats.breaker.state is OPEN
        assert stats.health.consecutive_failures >= 5
        async with admin_client(fleet) as http:
            one = (await http.get("/admin/system/bot-health/1")).json()
            summary = (await http.get("/admin/system/bot-health/summary")).json()
    assert (one["status"], one["polling_status"], one["call_status"]) == (
        "unhealthy",
        "healthy",
        "unhealthy",
    )
    assert one["polls"] == stats.health.polls
    assert summary["by_status"]["unhealthy"] == 1
    assert summary["polling_by_status"]["healthy"] == 1
    assert summary["calls_by_status"]["unhealthy"] == 1


async def test_polls_through_the_pipeline_keep_their_own_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    r = rig(breaker_config=BreakerConfig(failure_threshold=5))
    # A send fails (1 + 2 retries); a poll succeeds; the send's run is not reset by it.
    with pytest.raises(TelegramError):
        await r.pipeline.call("sendMessage", Script(*[telegram(500)] * 3), idempotent=True)
    await r.pipeline.call("getUpdates", Script([]), rate_limited=False, poll=True)
    assert r.breaker.statistics().consecutive_failures == 3
    assert r.health.statistics().consecutive_failures == 3
    # getUpdates answered 502 (1 + 2 retries), twice: the polls' run opens the breaker.
    for _ in range(2):
        with pytest.raises((TelegramError, CircuitOpenError)):
            await r.pipeline.call(
                "getUpdates",
                Script(*[telegram(502, method="getUpdates")] * 3),
                rate_limited=False,
                poll=True,
            )
    stats = r.breaker.statistics()
    assert stats.state is OPEN
    assert stats.opened_by_polls
    assert r.health.statistics().poll_consecutive_failures == 5
    assert r.health.polling_status() is BotStatus.UNHEALTHY
