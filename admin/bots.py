"""``/admin/bots``: tenants added, listed, removed, suspended and resumed while the daemon runs.

Everything goes through the fleet (``admin.ports.FleetControl``): a token is checked for its
format here and with getMe there before anything is stored; a bot added here is persisted
(source ``"api"``) and comes back after a restart. Tokens are only ever shown as ``123456:…``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actors import (
    BotActor,
    BotConfig,
    BotExists,
    FleetError,
    LifecycleError,
    NotOwned,
    OwnedByConfig,
    RegistryUnavailable,
    TelegramUnreachable,
    UnknownBot,
)
from admin.context import AdminContext, context_of
from admin.errors import ApiError, misdirected
from admin.operations import Reply, operation
from admin.records import Bot, BotList, Removed, record_response
from admin.requests import (
    BotListQuery,
    ModeRequest,
    SuspendRequest,
    UserIdPath,
    parse_body,
    parse_path,
    parse_query,
)

__all__ = ["bot_record", "bot_routes"]


def bot_record(ctx: AdminContext, actor: BotActor) -> Bot:
    """A bot as the API shows it: never its token, only ``123456:…``."""
    stats = actor.statistics()
    child = ctx.fleet.child_state(actor.user_id)
    config = actor.config
    return Bot(
        user_id=actor.user_id,
        bot_id=config.token.bot_id,
        token=config.token.redacted,
        handler=config.handler,
        rps=config.rps,
        autoreply_rules=len(config.autoreply),
        allowed_updates=list(config.allowed_updates),
        mode=config.mode.value,
        source=ctx.fleet.source(actor.user_id),
        state=stats.state,
        status=stats.status,
        supervisor_state=child.value if child is not None else None,
        suspended_reason=stats.health.suspended_reason,
        webhook_registration_error=stats.health.webhook_registration_error,
        circuit_state=stats.breaker.state,
    )


def _user_id(request: Request) -> int:
    return parse_path(request, UserIdPath).user_id


def _actor(ctx: AdminContext, user_id: int) -> BotActor:
    try:
        return ctx.fleet.get(user_id)
    except UnknownBot as exc:
        raise ApiError(404, str(exc)) from None


def _fleet_error(exc: FleetError) -> ApiError:
    if isinstance(exc, NotOwned):
        return misdirected(exc)
    if isinstance(exc, UnknownBot):
        return ApiError(404, str(exc))
    if isinstance(exc, (BotExists, OwnedByConfig)):
        return ApiError(409, str(exc))
    if isinstance(exc, RegistryUnavailable):
        return ApiError(503, str(exc), headers={"Retry-After": "10"})
    if isinstance(exc, TelegramUnreachable):
        return ApiError(503, f"{exc}; try again later", headers={"Retry-After": "30"})
    # TokenRejected, a handler that cannot be loaded: the request itself is wrong.
    return ApiError(422, str(exc))


class _Management:
    """Bot-management requests of one bot run one at a time (an add racing a delete of the
    same bot would otherwise interleave inside the fleet); those of different bots never wait
    on each other, so a slow getMe of one bot's add or resume holds up no other bot."""

    def __init__(self) -> None:
        # user_id -> its lock and how many requests hold or wait for it; dropped at zero,
        # so the table stays as small as the requests in flight.
        self._locks: dict[int, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def of(self, user_id: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(user_id, (trio.Lock(), 0))
        self._locks[user_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[user_id]
            if users == 1:
                del self._locks[user_id]
            else:
                self._locks[user_id] = (lock, users - 1)


def _lock(request: Request, user_id: int) -> AbstractAsyncContextManager[None]:
    management: _Management = request.app.state.bot_management
    return management.of(user_id)


@operation(
    "Add a bot: its token is checked with getMe before it is stored; it starts at once and "
    "survives restarts",
    {201: Reply("added and started", record=Bot)},
    body=BotConfig,
    errors=(409, 421, 503),
    tag="bots",
)
async def add_bot(request: Request) -> Response:
    ctx = context_of(request)
    bot = await parse_body(request, BotConfig)
    async with _lock(request, bot.user_id):
        try:
            actor = await ctx.fleet.add(bot, source="api")
        except FleetError as exc:
            raise _fleet_error(exc) from None
    return record_response(
        bot_record(ctx, actor),
        status=201,
        headers={"Location": f"/admin/bots/{bot.user_id}"},
    )


def _matches(actor: BotActor, query: BotListQuery) -> bool:
    if query.cursor is not None and actor.user_id <= query.cursor:
        return False
    if query.q is not None and query.q not in str(actor.user_id):
        return False
    if query.mode is not None and actor.config.mode is not query.mode:
        return False
    if query.breaker is not None and actor.pipeline.breaker.state is not query.breaker:
        return False
    return query.status is None or actor.status() is query.status


@operation(
    "Bots in user_id order, tokens redacted: every one, or a page of them (limit, then "
    "cursor=next_cursor), filtered by status, breaker, mode and user_id digits (q)",
    {200: BotList},
    query=BotListQuery,
    tag="bots",
)
async def list_bots(request: Request) -> Response:
    ctx = context_of(request)
    query = parse_query(request, BotListQuery)
    matching = sorted(
        (actor for actor in ctx.fleet.actors() if _matches(actor, query)),
        key=lambda actor: actor.user_id,
    )
    page = matching if query.limit is None else matching[: query.limit]
    more = len(page) < len(matching)
    bots = [bot_record(ctx, actor) for actor in page]
    listing = BotList(
        count=len(bots),
        matching=len(matching),
        next_cursor=page[-1].user_id if more else None,
        bots=bots,
    )
    return record_response(listing)


@operation("One bot", {200: Bot}, path=UserIdPath, errors=(404,), tag="bots")
async def get_bot(request: Request) -> Response:
    ctx = context_of(request)
    return record_response(bot_record(ctx, _actor(ctx, _user_id(request))))


@operation(
    "Stop the bot and unregister it; its health history is kept. A bot the config file "
    "declares is the file's: 409 (suspend it, or remove it from the file)",
    {200: Removed},
    path=UserIdPath,
    errors=(404, 409, 503),
    tag="bots",
)
async def remove_bot(request: Request) -> Response:
    ctx = context_of(request)
    user_id = _user_id(request)
    async with _lock(request, user_id):
        _actor(ctx, user_id)
        try:
            await ctx.fleet.remove(user_id)
        except FleetError as exc:
            raise _fleet_error(exc) from None
    return record_response(Removed(user_id=user_id, removed=True, history_kept=True))


@operation(
    "Stop the bot until it is resumed",
    {200: Bot},
    path=UserIdPath,
    body=SuspendRequest,
    body_required=False,
    errors=(404, 409, 503),
    tag="bots",
)
async def suspend_bot(request: Request) -> Response:
    ctx = context_of(request)
    user_id = _user_id(request)
    reason = (await parse_body(request, SuspendRequest)).reason
    async with _lock(request, user_id):
        actor = _actor(ctx, user_id)
        try:
            await ctx.fleet.suspend(user_id, reason.strip())
        except LifecycleError as exc:
            raise ApiError(409, str(exc)) from None
        except FleetError as exc:
            raise _fleet_error(exc) from None
        return record_response(bot_record(ctx, actor))


@operation(
    "Check the token with getMe again and start the bot",
    {200: Bot},
    path=UserIdPath,
    errors=(404, 409, 503),
    tag="bots",
)
async def resume_bot(request: Request) -> Response:
    ctx = context_of(request)
    user_id = _user_id(request)
    async with _lock(request, user_id):
        actor = _actor(ctx, user_id)
        try:
            await ctx.fleet.resume(user_id)
        except LifecycleError as exc:
            raise ApiError(409, str(exc)) from None
        except FleetError as exc:
            raise _fleet_error(exc) from None
        return record_response(bot_record(ctx, actor))


@operation(
    "Switch the bot between polling and webhooks, losing no update (the poller stops, then "
    "setWebhook; or deleteWebhook keeping pending updates, then polling). A bot the config "
    "file declares is the file's: 409",
    {200: Bot},
    path=UserIdPath,
    body=ModeRequest,
    errors=(404, 409, 422, 503),
    tag="bots",
)
async def set_bot_mode(request: Request) -> Response:
    ctx = context_of(request)
    user_id = _user_id(request)
    mode = (await parse_body(request, ModeRequest)).mode
    async with _lock(request, user_id):
        actor = _actor(ctx, user_id)
        try:
            await ctx.fleet.set_mode(user_id, mode)
        except FleetError as exc:
            raise _fleet_error(exc) from None
        return record_response(bot_record(ctx, actor))


def bot_routes() -> list[BaseRoute]:
    """The routes, for ``create_app`` (which also puts the management lock on app.state)."""
    return [
        Route("/admin/bots", list_bots, methods=["GET"]),
        Route("/admin/bots", add_bot, methods=["POST"]),
        Route("/admin/bots/{user_id}", get_bot, methods=["GET"]),
        Route("/admin/bots/{user_id}", remove_bot, methods=["DELETE"]),
        Route("/admin/bots/{user_id}/suspend", suspend_bot, methods=["POST"]),
        Route("/admin/bots/{user_id}/resume", resume_bot, methods=["POST"]),
        Route("/admin/bots/{user_id}/mode", set_bot_mode, methods=["POST"]),
    ]


def management_state() -> _Management:
    return _Management()
