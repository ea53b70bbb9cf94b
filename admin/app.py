"""The admin HTTP API: ``create_app(context) -> Starlette``.

Routes read ``statistics()`` records of the fleet's components and never reach into private
state. Every ``/admin`` route (and ``/metrics`` unless configured public) needs the admin
bearer token; every request counts against its client address's rate limit first.

Each endpoint declares what it takes and answers with ``@operation`` (``operations``); bodies
and parameters are parsed into the models of ``requests``, answers are the records of
``records``, and ``openapi`` generates the document from those.

Modules: ``bots`` (bot management), ``dead_letters`` (list, redrive, discard), ``events``
(the live WebSocket), ``metrics`` (Prometheus), ``openapi`` (the spec), ``dashboard`` (the
page at ``/`` and its security headers), ``auth`` and ``ratelimit`` (middleware), ``errors``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from actors import (
    BotActor,
    BotStatistics,
    BreakerState,
    BreakerStatistics,
    UnknownBot,
    combine_retry_statistics,
)
from admin.analytics import analytics_routes
from admin.auth import BearerAuth
from admin.bots import bot_routes, management_state
from admin.context import AdminContext, context_of
from admin.dashboard import DashboardAssets, SecurityHeaders, dashboard_routes
from admin.dead_letters import DeadLetterActions, dead_letter_routes
from admin.errors import ApiError, exception_handlers
from admin.events import EventStreams
from admin.metrics import FleetCollector, metrics_endpoint, metrics_registry
from admin.openapi import openapi_endpoint, openapi_spec
from admin.operations import Reply, operation
from admin.ratelimit import ClientBuckets, IpRateLimit
from admin.records import (
    Alive,
    BotHealth,
    BotRetry,
    Breaker,
    BreakerSummary,
    HealthSummary,
    History,
    PersistNow,
    Ready,
    RetryReset,
    RetrySummary,
    UnhealthyBots,
    UnhealthyHistory,
    fields_of,
    record_response,
)
from admin.requests import EventsQuery, HoursQuery, UserIdPath, parse_path, parse_query
from storage import HealthRow

__all__ = ["AdminContext", "create_app"]


Handler = Callable[[Request], Awaitable[Response]]


def _ctx(request: Request) -> AdminContext:
    return context_of(request)


def _user_id(request: Request) -> int:
    return parse_path(request, UserIdPath).user_id


def _actor(request: Request) -> BotActor:
    user_id = _user_id(request)
    try:
        return _ctx(request).fleet.get(user_id)
    except UnknownBot as exc:
        raise ApiError(404, str(exc)) from None


def _hours(request: Request) -> int:
    return parse_query(request, HoursQuery).hours


def _bot_health(stats: BotStatistics, child_state: str | None) -> BotHealth:
    health = stats.health
    return BotHealth(
        user_id=stats.user_id,
        status=stats.status,
        actor_state=stats.state,
        supervisor_state=child_state,
        suspended_reason=health.suspended_reason,
        total_requests=health.total_requests,
        successful_requests=health.successful_requests,
        failed_requests=health.failed_requests,
        error_rate=health.error_rate,
        avg_response_time_ms=health.ema_latency_ms,
        consecutive_failures=health.consecutive_failures,
        polling_status=stats.polling_status,
        call_status=stats.call_status,
        polls=health.polls,
        poll_failures=health.poll_failures,
        poll_consecutive_failures=health.poll_consecutive_failures,
        last_poll_at=health.last_poll_at,
        rate_limited_count=health.throttled,
        chat_errors=health.chat_errors,
        last_success_at=health.last_success_at,
        last_failure_at=health.last_failure_at,
        last_error=health.last_error,
        webhook_registration_error=health.webhook_registration_error,
        circuit_state=stats.breaker.state,
        handled_updates=stats.handled_updates,
        replies_sent=stats.replies_sent,
        dead_letters=stats.dead_letters,
        ambiguous_sends=stats.ambiguous_sends,
        handler_errors=stats.handler_errors,
    )


# --- probes ----------------------------------------------------------------------------------


@operation("The process is alive", {200: Alive}, public=True)
async def healthz(request: Request) -> Response:
    return record_response(Alive(status="alive"))


@operation(
    "The store is writable and the daemon is not shutting down",
    {200: Ready, 503: Reply("not ready; detail says why", record=Ready)},
    public=True,
)
async def readyz(request: Request) -> Response:
    ok, detail = await _ctx(request).ready()
    ready = Ready(status="ready" if ok else "not ready", detail=detail)
    return record_response(ready, status=200 if ok else 503)


# --- 1–3: bot health -----------------------------------------------------------------------


@operation("Fleet health totals", {200: HealthSummary})
async def health_summary(request: Request) -> Response:
    ctx = _ctx(request)
    summary = ctx.metrics.summary()
    return record_response(HealthSummary(generated_at=ctx.wall_clock(), **fields_of(summary)))


@operation("Bots that are not healthy", {200: UnhealthyBots})
async def health_unhealthy(request: Request) -> Response:
    ctx = _ctx(request)
    bots = []
    for stats in ctx.metrics.health.unhealthy():
        state = ctx.fleet.child_state(stats.user_id)
        bots.append(_bot_health(stats, state.value if state else None))
    return record_response(UnhealthyBots(generated_at=ctx.wall_clock(), count=len(bots), bots=bots))


@operation("One bot's health", {200: BotHealth}, path=UserIdPath, errors=(404,))
async def health_one(request: Request) -> Response:
    actor = _actor(request)
    ctx = _ctx(request)
    state = ctx.fleet.child_state(actor.user_id)
    return record_response(
        _bot_health(ctx.metrics.health.one(actor), state.value if state else None)
    )


# --- 4–6: circuit breakers -----------------------------------------------------------------


def _breaker(ctx: AdminContext, user_id: int, stats: BreakerStatistics) -> Breaker:
    """A breaker's statistics, its times as wall-clock epoch seconds like every other time
    the API shows (the breaker keeps Trio time, whose origin means nothing to an operator)."""
    data = fields_of(stats)
    offset = ctx.wall_clock() - trio.current_time()
    for key in ("opened_at", "half_open_at"):
        if data[key] is not None:
            data[key] += offset
    return Breaker(user_id=user_id, **data)


@operation("Breakers by state", {200: BreakerSummary})
async def breakers_summary(request: Request) -> Response:
    ctx = _ctx(request)
    counts = dict.fromkeys(BreakerState, 0)
    not_closed = []
    closed = BreakerState.CLOSED
    # Only the state of the CLOSED majority is read: a full statistics record per bot cost
    # three times as much at 10,000 bots, and the answer lists only the others.
    for actor in ctx.fleet.actors():
        breaker = actor.pipeline.breaker
        state = breaker.state
        counts[state] += 1
        if state is not closed:
            not_closed.append(_breaker(ctx, actor.user_id, breaker.statistics()))
    by_state = {state.value: n for state, n in counts.items()}
    summary = BreakerSummary(total=sum(by_state.values()), by_state=by_state, not_closed=not_closed)
    return record_response(summary)


@operation("One bot's breaker", {200: Breaker}, path=UserIdPath, errors=(404,))
async def breaker_one(request: Request) -> Response:
    actor = _actor(request)
    return record_response(
        _breaker(_ctx(request), actor.user_id, actor.pipeline.breaker.statistics())
    )


@operation("Close the bot's breaker", {200: Breaker}, path=UserIdPath, errors=(404,))
async def breaker_reset(request: Request) -> Response:
    actor = _actor(request)
    breaker = actor.pipeline.breaker
    breaker.reset()
    return record_response(_breaker(_ctx(request), actor.user_id, breaker.statistics()))


# --- 7–8: retry statistics -----------------------------------------------------------------


@operation("Retry counters, overall and per bot", {200: RetrySummary})
async def retry_statistics(request: Request) -> Response:
    ctx = _ctx(request)
    per_bot = {a.user_id: a.pipeline.counters.statistics() for a in ctx.fleet.actors()}
    summary = RetrySummary(
        overall=combine_retry_statistics(per_bot.values()),
        bots=[BotRetry(user_id=uid, **fields_of(stats)) for uid, stats in per_bot.items()],
    )
    return record_response(summary)


@operation("Zero every bot's retry counters", {200: RetryReset})
async def retry_reset(request: Request) -> Response:
    ctx = _ctx(request)
    actors = ctx.fleet.actors()
    for actor in actors:
        actor.pipeline.counters.reset()
    return record_response(RetryReset(reset=len(actors)))


# --- 9–11: history and persistence ---------------------------------------------------------


# A history answer holds at most this many rows (the newest); "truncated" says if more exist.
HISTORY_ROW_LIMIT = 10_000


def _page(rows: list[HealthRow]) -> tuple[list[HealthRow], bool]:
    """The newest rows an answer holds, and whether older ones were left out."""
    return rows[-HISTORY_ROW_LIMIT:], len(rows) > HISTORY_ROW_LIMIT


@operation(
    "One bot's stored snapshots",
    {200: History},
    path=UserIdPath,
    query=HoursQuery,
    errors=(404,),
)
async def health_history(request: Request) -> Response:
    ctx = _ctx(request)
    user_id = _user_id(request)
    hours = _hours(request)
    ctx.fleet.check_owned(user_id)  # another shard's bot: 421, its history is there
    since = ctx.wall_clock() - hours * 3600
    rows = await ctx.store.history(user_id, since, limit=HISTORY_ROW_LIMIT + 1)
    if not rows:
        try:
            ctx.fleet.get(user_id)
        except UnknownBot as exc:
            raise ApiError(404, f"{exc}, and no history is stored for it") from None
    kept, truncated = _page(rows)
    history = History(
        user_id=user_id, hours=hours, since=since, count=len(kept), truncated=truncated, rows=kept
    )
    return record_response(history)


@operation("Stored snapshots that were not healthy", {200: UnhealthyHistory}, query=HoursQuery)
async def unhealthy_history(request: Request) -> Response:
    ctx = _ctx(request)
    hours = _hours(request)
    since = ctx.wall_clock() - hours * 3600
    rows = await ctx.store.unhealthy_history(since, limit=HISTORY_ROW_LIMIT + 1)
    kept, truncated = _page(rows)
    history = UnhealthyHistory(
        hours=hours, since=since, count=len(kept), truncated=truncated, rows=kept
    )
    return record_response(history)


@operation("Write a health snapshot of every bot now", {200: PersistNow})
async def persist_now(request: Request) -> Response:
    written = await _ctx(request).metrics.persist_now()
    return record_response(PersistNow(rows_written=written))


@operation(
    "Live events over a WebSocket (ws://…/admin/events[?user_id=N]): one JSON object per "
    "message, first {'type': 'subscribed'}, then 'status', 'breaker' and 'lifecycle' "
    "transitions. A client that falls behind is closed with 1008; shutdown closes with 1001. "
    "A plain HTTP GET is answered 426. Sign in with the bearer header, or, from a browser "
    "(which cannot send headers), offer the subprotocols 'botvisor.events' and "
    "'base64url.bearer.botvisor.<the token, base64url without padding>': the server answers "
    "'botvisor.events', never the entry that carries the token.",
    {101: Reply("switching to the WebSocket protocol")},
    query=EventsQuery,
    errors=(426,),
    tag="events",
)
async def events_over_http(request: Request) -> Response:
    raise ApiError(
        426,
        "/admin/events is a WebSocket: connect with ws:// (or wss://) and the same token",
        code="upgrade_required",
        headers={"Upgrade": "websocket"},
    )


def _not_allowed(path: str, allowed: str) -> Route:
    """Answer 405 on a fixed path for the methods it does not take. Without it a GET of
    ``.../persist-now`` would fall through to ``.../{user_id}`` and be told that
    'persist-now' is not a user id."""

    async def endpoint(request: Request) -> Response:
        raise ApiError(
            405,
            f"{request.method} is not allowed on {request.url.path}; use {allowed}",
            headers={"Allow": allowed},
        )

    others = ["GET", "PUT", "PATCH", "DELETE", "POST"]
    return Route(
        path,
        endpoint,
        methods=[m for m in others if m != allowed],
        name="method_not_allowed",
        include_in_schema=False,
    )


def routes(streams: EventStreams) -> list[BaseRoute]:
    base = "/admin/system"
    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/openapi.json", openapi_endpoint),
        Route("/metrics", metrics_endpoint),
        # Fixed paths first: /bot-health/{user_id} would otherwise swallow them.
        Route(f"{base}/bot-health/summary", health_summary),
        Route(f"{base}/bot-health/unhealthy", health_unhealthy),
        Route(f"{base}/bot-health/unhealthy-history", unhealthy_history),
        Route(f"{base}/bot-health/persist-now", persist_now, methods=["POST"]),
        _not_allowed(f"{base}/bot-health/persist-now", "POST"),
        Route(f"{base}/bot-health/history/{{user_id}}", health_history),
        Route(f"{base}/bot-health/{{user_id}}", health_one),
        Route(f"{base}/circuit-breakers/summary", breakers_summary),
        Route(f"{base}/circuit-breakers/{{user_id}}", breaker_one),
        Route(f"{base}/circuit-breakers/{{user_id}}/reset", breaker_reset, methods=["POST"]),
        Route(f"{base}/retry-statistics", retry_statistics),
        Route(f"{base}/retry-statistics/reset", retry_reset, methods=["POST"]),
        *bot_routes(),
        *dead_letter_routes(),
        *analytics_routes(),
        WebSocketRoute("/admin/events", streams),
        Route("/admin/events", events_over_http),
        *dashboard_routes(),
    ]


def create_app(context: AdminContext, *, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """The admin ASGI app. Every route, ``extra_routes`` too, declares its contract with
    ``@operation`` on its endpoint: the OpenAPI document is generated here and refuses a route
    that declares none (``RuntimeError``).

    ``app.state`` holds what ``AdminServer`` and tests reach for: ``event_streams``
    (``EventStreams``), ``rate_limiter`` (``ClientBuckets`` or None), ``metrics_registry``,
    ``dashboard`` (``DashboardAssets``, the page's files).
    """
    streams = EventStreams(
        context.metrics,
        send_timeout=context.event_send_timeout,
        check_owned=context.fleet.check_owned,
    )
    buckets = (
        ClientBuckets(*context.ip_rate_limit, max_clients=context.ip_rate_limit_clients)
        if context.ip_rate_limit is not None
        else None
    )
    middleware = [
        Middleware(
            BearerAuth,
            token=context.admin_token,
            paths=() if context.metrics_public else ("/metrics",),
        )
    ]
    if buckets is not None:
        # Floods and token guessing are limited before anything else runs.
        middleware.insert(
            0, Middleware(IpRateLimit, buckets=buckets, trusted_proxies=context.trusted_proxies)
        )
    # Outermost: every answer, a refusal too, carries the security headers.
    middleware.insert(0, Middleware(SecurityHeaders))
    app = Starlette(
        routes=[*routes(streams), *(extra_routes or [])],
        middleware=middleware,
        exception_handlers=exception_handlers,
    )
    app.state.admin = context
    app.state.dashboard = DashboardAssets.load()
    app.state.event_streams = streams
    app.state.rate_limiter = buckets
    app.state.bot_management = management_state()
    actions = DeadLetterActions()
    app.state.dead_letter_actions = actions
    collector = FleetCollector(
        context, rate_limiter=buckets, streams=streams, dead_letter_actions=actions
    )
    app.state.metrics_collector = collector
    app.state.metrics_registry = metrics_registry(collector)
    # Generated from the routing table: a route without a declaration fails here, at start.
    app.state.openapi = openapi_spec(app.routes)
    return app
