"""/admin/events over real sockets with trio-websocket (real clock, bounded waits).

The daemon runs in process on the simulated Bot API; its admin server listens on
127.0.0.1:0.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from actors import (
    BreakerConfig,
    LifecycleEvent,
    RetryConfig,
    RetryPolicyConfig,
    StatusChanged,
    TelegramConfig,
)
from actors.simulator import FaultProfile, SimulatedBotApi
from supervisor.remote import Target, format_event, open_event_stream, watch
from tests.admin.helpers import ADMIN_TOKEN, served
from tests.harness import EPOCH, Fleet, running_fleet

# Real time: every wait is bounded, nothing asserts how long anything took.
LIMIT = 30


async def next_json(ws: WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    data: dict[str, Any] = json.loads(message)
    return data


async def subscribed(ws: WebSocketConnection) -> dict[str, Any]:
    hello = await next_json(ws)
    assert hello["type"] == "subscribed"
    return hello


def sink(fleet: Fleet) -> Any:
    events = fleet.handle.events
    assert events is not None
    return events


async def test_a_bot_driven_open_and_back_shows_its_transitions_in_order(
    tmp_path: Path,
) -> None:
    api = SimulatedBotApi(rng=random.Random(1))
    configure = served(
        # Short long polls, so the faults below reach the next getUpdates soon.
        telegram=TelegramConfig(api_base="http://sim.invalid", poll_timeout=1),
        breaker=BreakerConfig(failure_threshold=2, open_seconds=0.3, half_open_successes=1),
        retry=RetryConfig(transient_network=RetryPolicyConfig(max_retries=0)),
    )
    with trio.fail_after(LIMIT):
        async with running_fleet(tmp_path / "e.db", [1, 2], api=api, configure=configure) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            async with (
                open_event_stream(url, ADMIN_TOKEN) as everything,
                open_event_stream(url, ADMIN_TOKEN, 2) as only_bot_2,
            ):
                assert (await subscribed(everything))["user_id"] is None
                assert (await subscribed(only_bot_2))["user_id"] == 2

                api.set_faults(FaultProfile(error_rate_5xx=1.0), token=fleet.tokens[1])
                breaker: list[tuple[str, str]] = []
                statuses: list[str] = []
                while len(breaker) < 1:
                    event = await next_json(everything)
                    assert event["user_id"] == 1
                    if event["type"] == "breaker":
                        breaker.append((event["previous"], event["state"]))
                    elif event["type"] == "status":
                        statuses.append(event["status"])
                api.set_faults(None, token=fleet.tokens[1])
                while len(breaker) < 3:
                    event = await next_json(everything)
                    if event["type"] == "breaker":
                        breaker.append((event["previous"], event["state"]))
                    elif event["type"] == "status":
                        statuses.append(event["status"])
                assert breaker == [
                    ("closed", "open"),
                    ("open", "half_open"),
                    ("half_open", "closed"),
                ]
                assert "unhealthy" in statuses

                # The filtered stream saw none of bot 1's events, and does see bot 2's.
                sink(fleet).emit(LifecycleEvent(2, EPOCH, "restarted", "test"))
                event = await next_json(only_bot_2)
                assert (event["type"], event["user_id"], event["event"]) == (
                    "lifecycle",
                    2,
                    "restarted",
                )


async def test_a_client_that_never_reads_is_dropped_and_never_slows_the_fleet(
    tmp_path: Path,
) -> None:
    api = SimulatedBotApi(rng=random.Random(2))
    big = "x" * 16_000  # large events fill the socket buffers quickly
    with trio.fail_after(LIMIT):
        async with running_fleet(tmp_path / "e.db", [1], api=api, configure=served()) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            metrics = fleet.handle.metrics
            # trio-websocket stops reading the socket once its queue (1 message) is full.
            async with (
                open_event_stream(url, ADMIN_TOKEN, message_queue_size=1) as stalled,
                open_event_stream(url, ADMIN_TOKEN) as reader,
            ):
                await subscribed(stalled)
                await subscribed(reader)
                received = 0
                sent = 0
                while metrics.statistics().subscribers_dropped == 0:
                    for _ in range(20):
                        sink(fleet).emit(StatusChanged(1, EPOCH, "healthy", "degraded", big))
                        sent += 1
                    # The reader keeps up; the stalled client falls ever further behind.
                    while received < sent:
                        event = await next_json(reader)
                        assert event["reason"] == big
                        received += 1
                    assert sent < 20_000, "the stalled client was never dropped"
                # Nothing was lost for anyone else, and the bots still answer at once.
                assert sink(fleet).statistics().dropped == 0
                api.send_user_message(fleet.tokens[1], 42, "still answering?")
                for _ in range(LIMIT * 100):
                    if api.report().answered == 1:
                        break
                    await trio.sleep(0.01)
                assert api.report().answered == 1
                sink(fleet).emit(LifecycleEvent(1, EPOCH, "restarted", "after the drop"))
                assert (await next_json(reader))["event"] == "restarted"
                assert metrics.statistics().subscribers == 1
                # The stalled client's connection was closed (1008) behind its backlog.
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await stalled.get_message()
                reason = closed.value.reason
                assert reason is not None and reason.code == 1008
                assert "too slow" in (reason.reason or "")


async def test_shutdown_closes_open_streams_with_going_away(tmp_path: Path) -> None:
    api = SimulatedBotApi(rng=random.Random(3))
    with trio.fail_after(LIMIT):
        async with running_fleet(tmp_path / "e.db", [1], api=api, configure=served()) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            async with open_event_stream(url, ADMIN_TOKEN) as ws:
                await subscribed(ws)
                fleet.daemon.request_shutdown()
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                reason = closed.value.reason
                assert reason is not None and reason.code == 1001
                assert reason.reason == "botvisor is shutting down"


async def test_a_handshake_without_the_token_or_with_a_bad_filter_is_refused(
    tmp_path: Path,
) -> None:
    api = SimulatedBotApi(rng=random.Random(4))
    with trio.fail_after(LIMIT):
        async with running_fleet(tmp_path / "e.db", [1], api=api, configure=served()) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            for token, user_id, status in [
                (None, None, 401),
                ("not-the-admin-token-at-all", None, 401),
                (ADMIN_TOKEN, 0, 422),
            ]:
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_event_stream(url, token, user_id):
                        pass
                assert rejected.value.status_code == status
                assert rejected.value.body is not None
                assert "error" in json.loads(rejected.value.body)


async def test_botvisor_watch_prints_events_and_explains_a_refusal(tmp_path: Path) -> None:
    api = SimulatedBotApi(rng=random.Random(5))
    with trio.fail_after(LIMIT):
        async with running_fleet(tmp_path / "e.db", [1], api=api, configure=served()) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            out = io.StringIO()
            async with trio.open_nursery() as nursery:

                async def follow() -> None:
                    code = await watch(Target(url, ADMIN_TOKEN), 1, count=2, out=out)
                    assert code == 0

                nursery.start_soon(follow)
                # Emit until the watcher, once subscribed, has printed both lines.
                for _ in range(LIMIT * 20):
                    if out.getvalue().count("\n") >= 2:
                        break
                    sink(fleet).emit(StatusChanged(2, EPOCH, "healthy", "degraded"))
                    sink(fleet).emit(StatusChanged(1, EPOCH, "healthy", "degraded", "slow"))
                    await trio.sleep(0.05)
            lines = out.getvalue().splitlines()
            assert len(lines) == 2
            assert lines[0] == "2027-01-15 08:00:00  bot 1  status healthy -> degraded (slow)"
            refused = await watch(Target(url, "wrong-token-0123456789"), None, count=1)
            assert refused == 1


def test_watch_lines_say_what_happened() -> None:
    assert format_event(
        {"type": "breaker", "user_id": 3, "at": 0, "previous": "closed", "state": "open"}
    ) == ("1970-01-01 00:00:00  bot 3  breaker closed -> open")
    assert format_event(
        {"type": "lifecycle", "user_id": 3, "at": 60, "event": "restarted", "detail": "crash"}
    ) == ("1970-01-01 00:01:00  bot 3  restarted: crash")


async def test_a_browser_signs_in_to_the_stream_with_its_token_as_a_subprotocol(
    tmp_path: Path,
) -> None:
    import base64

    def offered(token: str) -> list[str]:
        encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
        return ["botvisor.events", "base64url.bearer.botvisor." + encoded]

    api = SimulatedBotApi(rng=random.Random(1))
    with trio.fail_after(LIMIT):
        async with running_fleet(tmp_path / "e.db", [1], api=api, configure=served()) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            async with open_event_stream(url, None, subprotocols=offered(ADMIN_TOKEN)) as ws:
                # The chosen subprotocol is never the entry that carries the token.
                assert ws.subprotocol == "botvisor.events"
                assert (await subscribed(ws))["user_id"] is None
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_event_stream(url, None, subprotocols=offered("wrong-token")):
                    pass
            assert rejected.value.status_code == 401
