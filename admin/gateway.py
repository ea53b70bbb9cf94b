"""``botvisor gateway``: one admin API over every shard of a fleet, stateless.

Per-bot reads and writes go to the bot's owner (the jump hash of its user_id over the
shards, as each shard computes it; a 421 from a shard, during a resize, is followed once to
the ``owner_shard`` it names). Fleet reads go to every shard at once, each bounded by
``gateway.shard_timeout``, and are merged (``admin.merge``) into the answer one process
holding every bot would give, with ``"shards": {"total", "ok", "failed": [...]}`` beside it:
a fleet read with some shards failed is still 200 with what the others said; with every
shard failed it is 502. ``/admin/events`` fans the shards' live streams in, each event
tagged with its ``shard``. The dashboard (``admin/static``) is served as by a shard and
works through it. ``/metrics`` is not proxied: Prometheus scrapes the shards.

The gateway checks the admin token itself and sends its own (the same) token to the
shards; what it shows of a failed shard is a short reason, never a shard's exception text,
a URL or the token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    open_websocket_url,
)

from actors import find_exception, jump_hash
from admin.auth import EVENTS_SUBPROTOCOL, BearerAuth, offered_subprotocols
from admin.config import GatewayConfig
from admin.dashboard import DashboardAssets, SecurityHeaders, dashboard_routes
from admin.errors import ApiError, exception_handlers, refuse
from admin.fanout import ShardFailure, ShardReply, Shards, connection_refused, failure_of
from admin.merge import (
    Json,
    merge_bot_pages,
    merge_breaker_summaries,
    merge_health_summaries,
    merge_retry_statistics,
    merge_top,
    merge_unhealthy,
    merge_unhealthy_history,
    merge_usage,
    merge_usage_csv,
    summed,
)
from admin.ratelimit import ClientBuckets, IpRateLimit, client_address
from admin.requests import EventsQuery, UserIdPath, parse
from admin.server import HttpServer, ListenError

__all__ = ["GatewayEvents", "GatewayListenError", "GatewayServer", "create_gateway_app"]

log = logging.getLogger("botvisor.gateway")

GOING_AWAY, POLICY_VIOLATION = 1001, 1008
SHUTDOWN_REASON = "the gateway is shutting down"
# Headers of the client's request the shards see (the token is the gateway's own).
_PASSED_HEADERS = ("content-type", "accept")


@dataclass(frozen=True)
class _Gateway:
    shards: Shards
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...]


def _gateway(request: Request) -> _Gateway:
    gateway: _Gateway = request.app.state.gateway
    return gateway


async def _outgoing(request: Request) -> tuple[bytes, bytes | None, dict[str, str]]:
    """The query string, body and headers a shard is sent for ``request``. The client's
    address goes in ``X-Forwarded-For`` (a shard that trusts the gateway, with
    ``admin.trusted_proxies``, limits each client, not the gateway): the one address the
    gateway believes (``gateway.trusted_proxies``), never what the client claimed."""
    headers = {k: v for k, v in request.headers.items() if k.lower() in _PASSED_HEADERS}
    headers["x-forwarded-for"] = client_address(request.scope, _gateway(request).trusted_proxies)
    body = await request.body() if request.method in ("POST", "PUT", "PATCH", "DELETE") else None
    return request.scope.get("query_string", b""), body or None, headers


def _relay(reply: ShardReply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))


def _shards_block(total: int, ok: int, failures: Sequence[ShardFailure]) -> Json:
    return {"total": total, "ok": ok, "failed": [f.record() for f in failures]}


def _unreachable(failure: ShardFailure, user_id: int | None) -> ApiError:
    shard = failure.shard
    whose = (
        f"; user_id {user_id} belongs to it, so its requests fail until shard {shard} is back"
        if user_id is not None
        else ""
    )
    return ApiError(
        504 if failure.timed_out else 502,
        f"shard {shard} did not answer ({failure.reason}){whose}",
        code="shard_timeout" if failure.timed_out else "shard_unavailable",
        extra={"shard": shard},
    )


def _owner_named(reply: ShardReply, count: int) -> int | None:
    try:
        owner = reply.json().get("owner_shard")
    except (ValueError, AttributeError):
        return None
    return owner if isinstance(owner, int) and 0 <= owner < count else None


def _path(request: Request) -> str:
    """The path a shard is sent: as the client encoded it (a ``%2F`` stays one), and never
    with a dot segment, which a client library would resolve into another route."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path: str = raw.decode("latin-1")
    if any(part in (".", "..") for part in request.url.path.split("/")):
        raise ApiError(404, f"the gateway does not route {request.url.path}")
    return path


async def _to_owner(request: Request, user_id: int | None) -> Response:
    """The request, to the shard that owns ``user_id`` (shard 0 for a request that names
    no valid one: it says what is wrong); a 421 naming another owner (the fleet is being
    resized) is followed once."""
    shards = _gateway(request).shards
    query, body, headers = await _outgoing(request)
    path = _path(request)
    shard = 0 if user_id is None else shards.owner(user_id)
    answer = await shards.call(shard, request.method, path, query=query, body=body, headers=headers)
    if isinstance(answer, ShardReply) and answer.status == 421:
        other = _owner_named(answer, shards.count)
        if other is not None and other != shard:
            shard = other
            answer = await shards.call(
                shard, request.method, path, query=query, body=body, headers=headers
            )
    if isinstance(answer, ShardFailure):
        log.warning(
            "gateway: %s %s: shard %d failed: %s", request.method, path, shard, answer.reason
        )
        raise _unreachable(answer, user_id)
    if answer.status in (401, 403):
        raise _unreachable(failure_of(shard, answer), user_id)
    return _relay(answer)


Merger = Callable[[list[Json], Request], Json]


async def _fleet(request: Request, merge: Merger) -> Response:
    """The request to every shard, their answers merged, with the ``shards`` block."""
    shards = _gateway(request).shards
    query, body, headers = await _outgoing(request)
    answers = await shards.fan_out(
        request.method, _path(request), query=query, body=body, headers=headers
    )
    refused, bodies, failures = _partition(request, answers)
    if refused is not None:
        return refused
    parts: list[Json] = []
    for shard, body in bodies:
        try:
            part = json.loads(body)
        except ValueError:
            part = None
        if isinstance(part, dict):
            parts.append(part)
        else:
            failures.append(ShardFailure(shard, "not a JSON object"))
            log.warning("gateway: %s: shard %d answered no JSON object", request.url.path, shard)
    failures.sort(key=lambda failure: failure.shard)
    block = _shards_block(shards.count, len(parts), failures)
    if not parts:
        raise _none_answered(failures, block)
    try:
        merged = merge(parts, request)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ApiError(
            502,
            f"the shards' answers could not be merged ({type(exc).__name__}): are they all "
            "the same botvisor version?",
            code="bad_gateway",
            extra={"shards": block},
        ) from None
    merged["shards"] = block
    return JSONResponse(merged)


def _partition(
    request: Request, answers: list[ShardReply | ShardFailure]
) -> tuple[Response | None, list[tuple[int, bytes]], list[ShardFailure]]:
    """The (shard, body) of the shards that answered and the failures of the others; first,
    when a shard refused the request itself (a 4xx: every shard answers the same query
    alike), that answer as the response."""
    bodies: list[tuple[int, bytes]] = []
    failures: list[ShardFailure] = []
    for answer in answers:
        if isinstance(answer, ShardFailure):
            failures.append(answer)
        elif answer.failed:
            failures.append(failure_of(answer.shard, answer))
        elif answer.status >= 400:
            return _relay(answer), [], []
        else:
            bodies.append((answer.shard, answer.body))
    for failure in failures:
        log.warning(
            "gateway: %s %s: shard %d failed: %s",
            request.method,
            request.url.path,
            failure.shard,
            failure.reason,
        )
    return None, bodies, failures


def _none_answered(failures: Sequence[ShardFailure], block: Json) -> ApiError:
    reasons = "; ".join(f"shard {f.shard}: {f.reason}" for f in failures)
    return ApiError(
        502, f"no shard answered ({reasons})", code="shards_unavailable", extra={"shards": block}
    )


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    """A paging parameter the shards have accepted (they answer 422 otherwise, and that
    answer is relayed before any merge)."""
    try:
        return int(request.query_params[name])
    except (KeyError, ValueError):
        return default


def _owned_user(request: Request) -> int | None:
    """``?user_id=`` when it is a user id: the request is that bot's (its owner answers)."""
    text = request.query_params.get("user_id")
    try:
        return parse(UserIdPath, {"user_id": text}).user_id if text is not None else None
    except ApiError:
        return None


# --- endpoints -------------------------------------------------------------------------------


def _fleet_endpoint(merge: Merger) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await _fleet(request, merge)

    return endpoint


async def per_bot(request: Request) -> Response:
    # Only {user_id}: the rest of the path (``dead-letters/redrive``) is the shard's to read.
    user_id = parse(UserIdPath, {"user_id": request.path_params["user_id"]}).user_id
    return await _to_owner(request, user_id)


async def add_bot(request: Request) -> Response:
    """``POST /admin/bots`` goes to the owner of the body's user_id; a body without one
    goes to shard 0, which says what is wrong with it."""
    try:
        user_id = json.loads(await request.body()).get("user_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        user_id = None
    valid = isinstance(user_id, int) and not isinstance(user_id, bool) and user_id >= 1
    return await _to_owner(request, user_id if valid else None)


async def usage(request: Request) -> Response:
    user_id = _owned_user(request)
    if user_id is not None:
        return await _to_owner(request, user_id)
    return await _fleet(request, lambda parts, _: merge_usage(parts))


async def usage_csv(request: Request) -> Response:
    user_id = _owned_user(request)
    if user_id is not None:
        return await _to_owner(request, user_id)
    shards = _gateway(request).shards
    query, _, headers = await _outgoing(request)
    answers = await shards.fan_out("GET", _path(request), query=query, headers=headers)
    refused, bodies, failures = _partition(request, answers)
    if refused is not None:
        return refused
    block = _shards_block(shards.count, len(bodies), failures)
    if not bodies:
        raise _none_answered(failures, block)
    text = merge_usage_csv([body.decode("utf-8", "replace") for _, body in bodies])
    failed = ", ".join(f"{f.shard} ({f.reason})" for f in failures)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "x-botvisor-shards": f"total={shards.count} ok={len(bodies)}",
            **({"x-botvisor-shards-failed": failed} if failed else {}),
        },
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    """Ready as soon as it listens: a gateway with every shard down still answers (and says
    which), so it stays in its Service."""
    count = _gateway(request).shards.count
    return JSONResponse({"status": "ready", "detail": f"gateway over {count} shard(s)"})


async def no_metrics(request: Request) -> Response:
    raise ApiError(
        404,
        "the gateway serves no /metrics: Prometheus scrapes each shard's /metrics directly "
        "(every series carries its shard label)",
    )


async def no_openapi(request: Request) -> Response:
    raise ApiError(
        404,
        "the gateway has no OpenAPI document of its own: a shard's /openapi.json describes "
        "every route; the gateway's fleet answers add a 'shards' member",
    )


async def _post_only(request: Request) -> Response:
    raise ApiError(
        405,
        f"{request.method} is not allowed on {request.url.path}; use POST",
        headers={"Allow": "POST"},
    )


async def not_routed(request: Request) -> Response:
    raise ApiError(404, f"the gateway does not route {request.method} {request.url.path}")


async def events_over_http(request: Request) -> Response:
    raise ApiError(
        426,
        "/admin/events is a WebSocket: connect with ws:// (or wss://) and the same token",
        code="upgrade_required",
        headers={"Upgrade": "websocket"},
    )


# --- the live events, fanned in ----------------------------------------------------------------


def _stream_reason(exc: BaseException, timeout: float) -> str:
    """A shard's stream's end, as short as a fleet read's reasons."""
    if isinstance(exc, (ConnectionTimeout, trio.TooSlowError)):
        return f"timeout after {timeout:g} s"
    if isinstance(exc, ConnectionRejected):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, ConnectionClosed):
        return "its stream closed"
    if connection_refused(exc):
        # trio-websocket's HandshakeError carries Trio's connect error as its cause.
        return "connection refused"
    if isinstance(exc, (OSError, HandshakeError)):
        return "cannot connect"
    return f"its stream failed ({type(exc).__name__})"


class _Client:
    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()


class GatewayEvents:
    """``/admin/events`` of the gateway: the shards' streams (or the owner's, for
    ``?user_id=``) as one. The first message is ``{"type": "subscribed", "user_id", "shards"}``
    once every shard's stream was opened or failed (each within the timeout); then every
    shard's events with ``"shard": i`` added, and ``{"type": "shard", "shard": i, "state":
    "down", "error": ...}`` / ``"up"`` when a shard's stream fails and comes back (it is
    reopened every ``reconnect`` seconds). A client that falls behind is closed with 1008."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        token: str | None,
        timeout: float,
        reconnect: float = 5.0,
        send_timeout: float = 10.0,
        queue_size: int = 256,
    ) -> None:
        self._urls = list(urls)
        self._token = token
        self._timeout = timeout
        self._reconnect = reconnect
        self._send_timeout = send_timeout
        self._queue_size = queue_size
        self._open: set[_Client] = set()
        self._closing = False

    @property
    def open(self) -> int:
        return len(self._open)

    async def close_all(self, grace: float = 2.0) -> None:
        self._closing = True
        clients = list(self._open)
        for client in clients:
            client.scope.cancel()
        with trio.move_on_after(grace):
            for client in clients:
                await client.done.wait()

    def _stream_url(self, shard: int, user_id: int | None) -> str:
        parts = urlsplit(self._urls[shard])
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = f"?user_id={quote(str(user_id))}" if user_id is not None else ""
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/admin/events{query}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            known = {k: query[k][-1] for k in EventsQuery.model_fields if k in query}
            user_id = parse(EventsQuery, known).user_id
        except ApiError as exc:
            await refuse(scope, send, 422, exc.message)
            return
        if self._closing:
            await refuse(scope, send, 503, SHUTDOWN_REASON)
            return
        websocket = WebSocket(scope, receive, send)
        chosen = (
            EVENTS_SUBPROTOCOL
            if EVENTS_SUBPROTOCOL.encode() in offered_subprotocols(scope)
            else None
        )
        await websocket.accept(subprotocol=chosen)
        client = _Client()
        self._open.add(client)
        try:
            close = await self._serve(websocket, user_id, client)
            if close is not None:
                with trio.move_on_after(1):
                    await websocket.close(*close)
        except WebSocketDisconnect:
            pass
        finally:
            self._open.discard(client)
            client.done.set()

    async def _serve(
        self, websocket: WebSocket, user_id: int | None, client: _Client
    ) -> tuple[int, str] | None:
        count = len(self._urls)
        targets = [jump_hash(user_id, count)] if user_id is not None else list(range(count))
        out, events = trio.open_memory_channel[dict[str, Any]](self._queue_size)
        first: dict[int, str | None] = {}
        opened = trio.Event()
        gone = trio.Event()
        overflowed = False
        close: tuple[int, str] | None = (GOING_AWAY, SHUTDOWN_REASON)
        with client.scope:
            async with trio.open_nursery() as nursery:

                def reported(shard: int, error: str | None) -> None:
                    first[shard] = error
                    if len(first) == len(targets):
                        opened.set()

                def offer(event: dict[str, Any]) -> None:
                    nonlocal overflowed
                    try:
                        out.send_nowait(event)
                    except trio.WouldBlock:
                        overflowed = True
                        nursery.cancel_scope.cancel()

                for shard in targets:
                    nursery.start_soon(self._follow, shard, user_id, offer, reported)
                nursery.start_soon(_watch_client, websocket, gone, nursery.cancel_scope)
                await opened.wait()
                failed = [
                    {"shard": s, "error": first[s]} for s in sorted(first) if first[s] is not None
                ]
                block = {"total": len(targets), "ok": len(targets) - len(failed), "failed": failed}
                subscribed = {"type": "subscribed", "user_id": user_id, "shards": block}
                close = await self._forward(websocket, subscribed, events)
                nursery.cancel_scope.cancel()
        if gone.is_set():
            return None
        if overflowed:
            log.info("gateway live events: dropped a client that fell behind")
            return POLICY_VIOLATION, "too slow: events arrived faster than they were read"
        return close

    async def _forward(
        self,
        websocket: WebSocket,
        subscribed: dict[str, Any],
        events: trio.MemoryReceiveChannel[dict[str, Any]],
    ) -> tuple[int, str]:
        if not await self._send(websocket, subscribed):
            return POLICY_VIOLATION, "the first message could not be delivered in time"
        async for event in events:
            if not await self._send(websocket, event):
                return (
                    POLICY_VIOLATION,
                    f"too slow: one event took longer than {self._send_timeout:g} s to send",
                )
        return GOING_AWAY, SHUTDOWN_REASON  # pragma: no cover - the channel is never closed

    async def _send(self, websocket: WebSocket, data: dict[str, Any]) -> bool:
        with trio.move_on_after(self._send_timeout):
            await websocket.send_text(json.dumps(data, separators=(",", ":")))
            return True
        return False

    async def _follow(
        self,
        shard: int,
        user_id: int | None,
        offer: Callable[[dict[str, Any]], None],
        reported: Callable[[int, str | None], None],
    ) -> None:
        """Shard ``shard``'s stream through ``offer``, reopened ``reconnect`` seconds after a
        failure, until cancelled. The first attempt's outcome goes to ``reported``; later
        ones are events of their own (``"type": "shard"``)."""
        attempt = 0
        up = False

        def opened() -> None:
            nonlocal up
            if attempt == 1:
                reported(shard, None)
            else:
                offer({"type": "shard", "shard": shard, "state": "up"})
            up = True

        while True:
            attempt += 1
            error = await self._stream(shard, user_id, offer, opened)
            if attempt == 1 and not up:
                reported(shard, error)
            elif up:
                offer({"type": "shard", "shard": shard, "state": "down", "error": error})
            up = False
            await trio.sleep(self._reconnect)

    async def _stream(
        self,
        shard: int,
        user_id: int | None,
        offer: Callable[[dict[str, Any]], None],
        opened: Callable[[], None],
    ) -> str:
        """One connection to the shard's stream; the short reason it ended."""
        headers = [(b"authorization", f"Bearer {self._token}".encode())] if self._token else []
        try:
            async with open_websocket_url(
                self._stream_url(shard, user_id),
                extra_headers=headers,
                connect_timeout=self._timeout,
                disconnect_timeout=1,
                message_queue_size=64,
            ) as connection:
                with trio.fail_after(self._timeout):
                    await connection.get_message()  # the shard's own "subscribed"
                opened()
                while True:
                    event = json.loads(await connection.get_message())
                    if isinstance(event, dict):
                        offer({**event, "shard": shard})
        except _STREAM_ERRORS as exc:
            return _stream_reason(exc, self._timeout)
        except BaseExceptionGroup as group:
            for kind in _STREAM_ERRORS:
                found = find_exception(group, kind)
                if found is not None:
                    return _stream_reason(found, self._timeout)
            raise


_STREAM_ERRORS = (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError, ValueError)


async def _watch_client(websocket: WebSocket, gone: trio.Event, scope: trio.CancelScope) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            gone.set()
            scope.cancel()
            return


# --- the app and its server ------------------------------------------------------------------


def gateway_routes(events: GatewayEvents) -> list[BaseRoute]:
    base = "/admin/system"

    def fleet(path: str, merge: Merger, methods: list[str] | None = None) -> Route:
        return Route(path, _fleet_endpoint(merge), methods=methods or ["GET"])

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", no_metrics),
        Route("/openapi.json", no_openapi),
        fleet(f"{base}/bot-health/summary", lambda p, _: merge_health_summaries(p)),
        fleet(f"{base}/bot-health/unhealthy", lambda p, _: merge_unhealthy(p)),
        fleet(f"{base}/bot-health/unhealthy-history", lambda p, _: merge_unhealthy_history(p)),
        fleet(f"{base}/bot-health/persist-now", lambda p, _: summed("rows_written")(p), ["POST"]),
        # Not a bot: without it a GET would be read as /bot-health/{user_id}.
        Route(f"{base}/bot-health/persist-now", _post_only, methods=["GET"]),
        Route(f"{base}/bot-health/history/{{user_id}}", per_bot),
        Route(f"{base}/bot-health/{{user_id}}", per_bot),
        fleet(f"{base}/circuit-breakers/summary", lambda p, _: merge_breaker_summaries(p)),
        Route(f"{base}/circuit-breakers/{{user_id}}", per_bot),
        Route(f"{base}/circuit-breakers/{{user_id}}/reset", per_bot, methods=["POST"]),
        fleet(f"{base}/retry-statistics", lambda p, _: merge_retry_statistics(p)),
        fleet(f"{base}/retry-statistics/reset", lambda p, _: summed("reset")(p), ["POST"]),
        fleet(
            "/admin/bots",
            lambda p, request: merge_bot_pages(p, _int_param(request, "limit", None)),
        ),
        Route("/admin/bots", add_bot, methods=["POST"]),
        Route(
            "/admin/bots/{user_id}",
            per_bot,
            methods=["GET", "DELETE"],
        ),
        Route("/admin/bots/{user_id}/{action:path}", per_bot, methods=["GET", "POST"]),
        Route("/admin/analytics/usage", usage),
        Route("/admin/analytics/usage.csv", usage_csv),
        fleet(
            "/admin/analytics/top",
            lambda p, request: merge_top(p, _int_param(request, "limit", 20) or 20),
        ),
        WebSocketRoute("/admin/events", events),
        Route("/admin/events", events_over_http),
        *dashboard_routes(),
        Route("/admin/{rest:path}", not_routed, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]


def create_gateway_app(config: GatewayConfig, http: httpx.AsyncClient) -> Starlette:
    """The gateway's ASGI app over the shards ``config`` names, calling them with ``http``
    (the caller owns and closes it). ``app.state.gateway_events`` is the live-event fan-in."""
    shards = Shards(
        config.urls,
        http=http,
        timeout=config.shard_timeout,
        write_timeout=config.write_timeout,
        token=config.token,
    )
    events = GatewayEvents(
        config.urls,
        token=config.token,
        timeout=config.shard_timeout,
        reconnect=config.events_reconnect,
    )
    middleware = [Middleware(BearerAuth, token=config.token)]
    limit = config.rate_limit
    if limit is not None:
        buckets = ClientBuckets(*limit)
        middleware.insert(
            0, Middleware(IpRateLimit, buckets=buckets, trusted_proxies=config.trusted_proxies)
        )
    middleware.insert(0, Middleware(SecurityHeaders))
    app = Starlette(
        routes=gateway_routes(events), middleware=middleware, exception_handlers=exception_handlers
    )
    proxies = tuple(ip_network(p, strict=False) for p in config.trusted_proxies)
    app.state.gateway = _Gateway(shards=shards, trusted_proxies=proxies)
    app.state.gateway_events = events
    app.state.dashboard = DashboardAssets.load()
    return app


class GatewayListenError(ListenError):
    """The gateway could not bind its address."""


class GatewayServer(HttpServer):
    """The gateway's server; ``stop`` closes the live-event streams first."""

    listen_error = GatewayListenError

    def __init__(self, app: Starlette, *, host: str, port: int) -> None:
        super().__init__(app, host=host, port=port, name="the gateway", setting="gateway.listen")

    async def stop(self) -> None:
        events: GatewayEvents = self._app.state.gateway_events
        await events.close_all()
        await super().stop()
