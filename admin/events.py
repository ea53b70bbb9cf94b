"""``/admin/events``: the live event stream over a WebSocket.

Each message is one JSON object: first ``{"type": "subscribed", "user_id": ...}`` once the
subscription is in place, then every health, breaker and lifecycle transition (``"type"`` is
``"status"``, ``"breaker"`` or ``"lifecycle"``), optionally only those of ``?user_id=N``.

The daemon is never held up by a client: the metrics actor offers events to a bounded
subscription without waiting and drops it when it is full, and a single message that cannot be
sent within ``send_timeout`` drops the client too. Either way the connection is closed with
code 1008 and a reason. ``close_all`` (called by ``AdminServer.stop``) closes every stream with
1001 when shutdown starts, since Hypercorn would otherwise wait out its grace period for them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

import trio
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from actors import MetricsActor, NotOwned, Subscription
from admin.auth import EVENTS_SUBPROTOCOL, offered_subprotocols
from admin.errors import ApiError, refuse
from admin.requests import EventsQuery, parse

__all__ = ["EventStreamStatistics", "EventStreams"]

log = logging.getLogger("botvisor.admin")

GOING_AWAY, POLICY_VIOLATION = 1001, 1008
SHUTDOWN_REASON = "botvisor is shutting down"


@dataclass(frozen=True)
class EventStreamStatistics:
    open: int
    accepted: int
    dropped_slow: int  # clients that fell behind and were disconnected
    closed_at_shutdown: int


class _Connection:
    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.client_gone = False


class EventStreams:
    """The ASGI endpoint of ``/admin/events`` and the registry of its open connections."""

    def __init__(
        self,
        metrics: MetricsActor,
        *,
        send_timeout: float = 10.0,
        close_timeout: float = 1.0,
        check_owned: Callable[[int], None] | None = None,
    ) -> None:
        self._metrics = metrics
        # NotOwned for a bot of another shard (FleetControl.check_owned): its stream is a 421.
        self._check_owned = check_owned
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._open: set[_Connection] = set()
        self._closing = False
        self._accepted = 0
        self._dropped = 0
        self._closed_at_shutdown = 0

    def statistics(self) -> EventStreamStatistics:
        return EventStreamStatistics(
            open=len(self._open),
            accepted=self._accepted,
            dropped_slow=self._dropped,
            closed_at_shutdown=self._closed_at_shutdown,
        )

    async def close_all(self, grace: float = 2.0) -> None:
        """Refuse new streams, close the open ones (1001) and wait for them, at most
        ``grace`` seconds."""
        self._closing = True
        connections = list(self._open)
        for connection in connections:
            connection.scope.cancel()
        with trio.move_on_after(grace):
            for connection in connections:
                await connection.done.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user_id, problem = _user_filter(scope)
        if problem is not None:
            await refuse(scope, send, 422, problem)
            return
        if user_id is not None and self._check_owned is not None:
            try:
                self._check_owned(user_id)
            except NotOwned as exc:
                await refuse(scope, send, 421, str(exc), extra={"owner_shard": exc.owner_shard})
                return
        if self._closing:
            await refuse(scope, send, 503, SHUTDOWN_REASON)
            return
        websocket = WebSocket(scope, receive, send)
        # A browser offered its token as a subprotocol: it must be answered with one it
        # offered, and never with the token's own entry.
        chosen = (
            EVENTS_SUBPROTOCOL
            if EVENTS_SUBPROTOCOL.encode() in offered_subprotocols(scope)
            else None
        )
        await websocket.accept(subprotocol=chosen)
        subscription = self._metrics.subscribe(user_id)
        connection = _Connection()
        self._open.add(connection)
        self._accepted += 1
        try:
            close = await self._serve(websocket, subscription, user_id, connection)
            if close is not None and not connection.client_gone:
                with trio.move_on_after(self._close_timeout):
                    await websocket.close(*close)
        except WebSocketDisconnect:
            pass
        finally:
            self._metrics.unsubscribe(subscription)
            self._open.discard(connection)
            connection.done.set()

    async def _serve(
        self,
        websocket: WebSocket,
        subscription: Subscription,
        user_id: int | None,
        connection: _Connection,
    ) -> tuple[int, str] | None:
        """Forward events until the client leaves (None) or must be closed (code, reason)."""
        close: tuple[int, str] | None = (GOING_AWAY, SHUTDOWN_REASON)
        with connection.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_client, websocket, connection, nursery.cancel_scope)
                close = await self._forward(websocket, subscription, user_id)
                nursery.cancel_scope.cancel()
        if connection.scope.cancelled_caught:
            self._closed_at_shutdown += 1
        if close is not None and close[0] == POLICY_VIOLATION:
            self._dropped += 1
            log.info("live events: dropped a client that fell behind (%s)", close[1])
        return None if connection.client_gone else close

    async def _watch_client(
        self, websocket: WebSocket, connection: _Connection, scope: trio.CancelScope
    ) -> None:
        # What the client sends is ignored; reading is how its departure is noticed.
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                connection.client_gone = True
                scope.cancel()
                return

    async def _forward(
        self, websocket: WebSocket, subscription: Subscription, user_id: int | None
    ) -> tuple[int, str]:
        if not await self._send(websocket, {"type": "subscribed", "user_id": user_id}):
            return POLICY_VIOLATION, "the first message could not be delivered in time"
        async for event in subscription.receive:
            if not await self._send(websocket, event.to_json()):
                return (
                    POLICY_VIOLATION,
                    f"too slow: one event took longer than {self._send_timeout:g} s to send",
                )
        if subscription.dropped:
            return POLICY_VIOLATION, "too slow: events arrived faster than they were read"
        return GOING_AWAY, SHUTDOWN_REASON

    async def _send(self, websocket: WebSocket, data: dict[str, object]) -> bool:
        with trio.move_on_after(self._send_timeout):
            await websocket.send_text(json.dumps(data, separators=(",", ":")))
            return True
        return False


def _user_filter(scope: Scope) -> tuple[int | None, str | None]:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    # The last of repeated parameters, as Starlette's query_params (the HTTP routes) take it.
    known = {name: query[name][-1] for name in EventsQuery.model_fields if name in query}
    try:
        return parse(EventsQuery, known).user_id, None
    except ApiError as exc:
        return None, exc.message
