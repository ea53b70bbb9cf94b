"""The gateway's live events over real sockets (real clock, bounded waits, nothing timed): fake
shards' streams fanned in, each event tagged with its shard; a shard that refuses
connections named in the first message; a browser's subprotocol sign-in; the gateway's stop
closing an open stream with 1001 at once."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from trio_websocket import ConnectionClosed, ConnectionRejected

from actors import jump_hash
from admin import GatewayConfig, GatewayServer, create_gateway_app, serve_app
from admin.gateway import GatewayEvents
from supervisor.remote import open_event_stream

TOKEN = "gateway-events-admin-token-0123"
LIMIT = 30


class FakeStream:
    """One shard's ``/admin/events``: checks the gateway's token, says subscribed, then sends
    every connection what the test ``send``s; remembers the query each was opened with."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self._connections: list[trio.MemorySendChannel[dict[str, Any]]] = []

    @property
    def connections(self) -> int:
        """Its open streams (one per gateway client)."""
        return len(self._connections)

    async def send(self, event: dict[str, Any]) -> None:
        for connection in list(self._connections):
            await connection.send(event)

    async def endpoint(self, websocket: WebSocket) -> None:
        if websocket.headers.get("authorization") != f"Bearer {TOKEN}":
            await websocket.close(1008)
            return
        self.queries.append(websocket.url.query)
        await websocket.accept()
        await websocket.send_text(json.dumps({"type": "subscribed", "user_id": None}))
        send, events = trio.open_memory_channel[dict[str, Any]](10_000)
        self._connections.append(send)

        async def forward() -> None:
            async for event in events:
                await websocket.send_text(json.dumps(event))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward)
                # The gateway leaving is seen here (a send after it would be dropped).
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass
                nursery.cancel_scope.cancel()
        except WebSocketDisconnect:
            pass
        finally:
            self._connections.remove(send)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the probe is closed


@asynccontextmanager
async def fleet(streams: list[FakeStream | None]) -> AsyncIterator[str]:
    """The fake shards served on 127.0.0.1 (None: a shard whose port refuses connections),
    and a gateway over them; yields the gateway's URL."""
    async with fleet_and_events(streams) as (url, _):
        yield url


@asynccontextmanager
async def fleet_and_events(
    streams: list[FakeStream | None],
) -> AsyncIterator[tuple[str, GatewayEvents]]:
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        stop = trio.Event()
        urls = []
        for stream in streams:
            if stream is None:
                urls.append(f"http://127.0.0.1:{closed_port()}")
                continue
            app = Starlette(routes=[WebSocketRoute("/admin/events", stream.endpoint)])
            urls.append(
                await nursery.start(
                    lambda task_status, app=app: serve_app(
                        app, host="127.0.0.1", port=0, shutdown=stop, task_status=task_status
                    )
                )
            )
        config = GatewayConfig(shard_urls=tuple(urls), token=TOKEN, shard_timeout=5)
        app = create_gateway_app(config, http)
        server = GatewayServer(app, host="127.0.0.1", port=0)
        url = await nursery.start(server.run)
        try:
            yield url, app.state.gateway_events
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(LIMIT):
                await server.stop()
                stop.set()
            nursery.cancel_scope.cancel()


async def message(stream: Any) -> dict[str, Any]:
    with trio.fail_after(LIMIT):
        data: dict[str, Any] = json.loads(await stream.get_message())
    return data


async def test_the_shards_streams_arrive_as_one_each_event_tagged_with_its_shard() -> None:
    first, second = FakeStream(), FakeStream()
    async with fleet([first, None, second]) as url, open_event_stream(url, TOKEN) as ws:
        hello = await message(ws)
        assert hello == {
            "type": "subscribed",
            "user_id": None,
            "shards": {
                "total": 3,
                "ok": 2,
                "failed": [{"shard": 1, "error": "connection refused"}],
            },
        }
        await second.send({"type": "status", "user_id": 7, "status": "degraded"})
        assert await message(ws) == {
            "type": "status",
            "user_id": 7,
            "status": "degraded",
            "shard": 2,
        }
        await first.send({"type": "breaker", "user_id": 9, "state": "open"})
        assert (await message(ws))["shard"] == 0
        assert first.queries == [""] and second.queries == [""]


async def test_one_bots_stream_is_opened_on_its_owner_only_with_its_filter() -> None:
    streams = [FakeStream(), FakeStream()]
    user_id = next(u for u in range(1001, 1100) if jump_hash(u, 2) == 1)
    async with fleet(list(streams)) as url, open_event_stream(url, TOKEN, user_id) as ws:
        hello = await message(ws)
        assert hello["user_id"] == user_id
        assert hello["shards"] == {"total": 1, "ok": 1, "failed": []}
        assert streams[1].queries == [f"user_id={user_id}"]
        assert streams[0].queries == []


async def test_a_browser_signs_in_with_the_subprotocol_and_a_wrong_token_is_refused() -> None:
    def offered(token: str) -> list[str]:
        encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
        return ["botvisor.events", f"base64url.bearer.botvisor.{encoded}"]

    async with fleet([FakeStream()]) as url:
        async with open_event_stream(url, None, subprotocols=offered(TOKEN)) as ws:
            assert ws.subprotocol == "botvisor.events"
            assert (await message(ws))["type"] == "subscribed"
        with pytest.raises(ConnectionRejected) as refused:
            async with open_event_stream(url, None, subprotocols=offered("wrong-token-000000")):
                pass  # pragma: no cover - refused at the handshake
        assert refused.value.status_code == 401


async def test_a_client_that_never_reads_is_dropped_and_the_others_go_on() -> None:
    shard = FakeStream()
    big = "x" * 16_000  # large events fill the socket buffers quickly
    async with (
        fleet_and_events([shard]) as (url, events),
        # trio-websocket stops reading the socket once its queue (1 message) is full.
        open_event_stream(url, TOKEN, message_queue_size=1) as stalled,
        open_event_stream(url, TOKEN) as reader,
    ):
        assert (await message(stalled))["type"] == "subscribed"
        assert (await message(reader))["type"] == "subscribed"
        assert shard.connections == 2
        sent = 0
        with trio.fail_after(LIMIT):
            # Once its queue is full, the stalled client's streams from the shards are
            # closed: the gateway holds nothing more for it.
            while shard.connections == 2:
                for _ in range(20):
                    await shard.send({"type": "status", "user_id": 1, "reason": big})
                    sent += 1
                for _ in range(20):
                    assert (await message(reader))["reason"] == big
                assert sent < 20_000, "the stalled client was never dropped"
        # The reader goes on; the stalled client's connection is closed (1008) behind its
        # backlog.
        await shard.send({"type": "lifecycle", "user_id": 1, "event": "restarted"})
        assert (await message(reader))["event"] == "restarted"
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(LIMIT):
            while True:
                await stalled.get_message()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1008
        assert "too slow" in (closed.value.reason.reason or "")
        with trio.fail_after(LIMIT):
            while events.open != 1:  # noqa: ASYNC110 - the gateway's own bookkeeping
                await trio.sleep(0.01)


async def test_stopping_the_gateway_closes_an_open_stream_with_1001() -> None:
    stream = FakeStream()
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        stop = trio.Event()
        app = Starlette(routes=[WebSocketRoute("/admin/events", stream.endpoint)])
        shard = await nursery.start(
            lambda task_status: serve_app(
                app, host="127.0.0.1", port=0, shutdown=stop, task_status=task_status
            )
        )
        config = GatewayConfig(shard_urls=(shard,), token=TOKEN)
        server = GatewayServer(create_gateway_app(config, http), host="127.0.0.1", port=0)
        url = await nursery.start(server.run)
        async with open_event_stream(url, TOKEN) as ws:
            assert (await message(ws))["type"] == "subscribed"
            with trio.fail_after(LIMIT):
                await server.stop()
            with pytest.raises(ConnectionClosed) as closed:
                await message(ws)
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1001
        stop.set()
        nursery.cancel_scope.cancel()
