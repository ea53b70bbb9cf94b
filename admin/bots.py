"""``/admin/bots``: tenants added, listed, removed, suspended and resumed while the daemon runs.

Everything goes through ``supervisor.Fleet``: a token is checked for its format here and with
getMe there before anything is stored; a bot added here is persisted (source ``"api"``) and
comes back after a restart. Tokens are only ever shown as ``123456:…``.
"""

from __future__ import annotations

import math
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from actors import AutoreplyRule, BotActor, BotConfig, BotToken, LifecycleError
from admin.context import AdminContext, context_of, read_json, user_id_param
from admin.errors import ApiError
from supervisor import BotExists, FleetError, TelegramUnreachable, UnknownBot

__all__ = ["bot_json", "bot_routes", "parse_new_bot"]

MAX_USER_ID = 2**63 - 1
_FIELDS = frozenset({"user_id", "token", "handler", "autoreply", "autoreply_default", "rps"})
MAX_REASON = 500


def bot_json(ctx: AdminContext, actor: BotActor) -> dict[str, Any]:
    """A bot as the API shows it: never its token, only ``123456:…``."""
    stats = actor.statistics()
    child = ctx.fleet.child_state(actor.user_id)
    config = actor.config
    return {
        "user_id": actor.user_id,
        "bot_id": config.token.bot_id,
        "token": config.token.redacted,
        "handler": config.handler,
        "rps": config.rps,
        "autoreply_rules": len(config.autoreply),
        "source": ctx.fleet.source(actor.user_id),
        "state": stats.state.value,
        "status": stats.status.value,
        "supervisor_state": child.value if child is not None else None,
        "suspended_reason": stats.health.suspended_reason,
        "circuit_state": stats.breaker.state.value,
    }


def parse_new_bot(data: dict[str, Any]) -> BotConfig:
    """The body of ``POST /admin/bots`` as a BotConfig, or a 422 naming what is wrong."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ApiError(
            422, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}"
        )
    for name in ("user_id", "token"):
        if name not in data:
            raise ApiError(422, f"the field {name!r} is required")
    user_id = data["user_id"]
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 1 <= user_id <= MAX_USER_ID:
        raise ApiError(422, f"user_id must be a whole number from 1 to {MAX_USER_ID}")
    raw_token = data["token"]
    if not isinstance(raw_token, str):
        raise ApiError(422, "token must be a string")
    try:
        token = BotToken(raw_token.strip())
    except ValueError as exc:
        raise ApiError(422, f"token: {exc}") from None
    handler = data.get("handler", "echo")
    if not isinstance(handler, str):
        raise ApiError(422, "handler must be a string")
    rules = data.get("autoreply", [])
    if not isinstance(rules, list) or not all(
        isinstance(rule, dict)
        and set(rule) == {"contains", "reply"}
        and all(isinstance(v, str) and v for v in rule.values())
        for rule in rules
    ):
        raise ApiError(
            422,
            "autoreply must be a list of objects with non-empty strings 'contains' and 'reply'",
        )
    default = data.get("autoreply_default")
    if default is not None and not isinstance(default, str):
        raise ApiError(422, "autoreply_default must be a string or null")
    rps = data.get("rps")
    if rps is not None and (
        not isinstance(rps, (int, float))
        or isinstance(rps, bool)
        or not math.isfinite(rps)
        or rps <= 0
    ):
        raise ApiError(422, f"rps must be a number > 0 or null, got {rps!r}")
    try:
        return BotConfig(
            user_id=user_id,
            token=token,
            handler=handler,
            autoreply=tuple(AutoreplyRule(r["contains"], r["reply"]) for r in rules),
            autoreply_default=default,
            rps=float(rps) if rps is not None else None,
            key="body",
        )
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None


def _actor(ctx: AdminContext, user_id: int) -> BotActor:
    try:
        return ctx.fleet.get(user_id)
    except UnknownBot as exc:
        raise ApiError(404, str(exc)) from None


def _fleet_error(exc: FleetError) -> ApiError:
    if isinstance(exc, UnknownBot):
        return ApiError(404, str(exc))
    if isinstance(exc, BotExists):
        return ApiError(409, str(exc))
    if isinstance(exc, TelegramUnreachable):
        return ApiError(503, f"{exc}; try again later", headers={"Retry-After": "30"})
    # TokenRejected, a handler that cannot be loaded: the request itself is wrong.
    return ApiError(422, str(exc))


class _Management:
    """Bot-management requests run one at a time: an add racing a delete of the same bot
    would otherwise interleave inside the fleet."""

    def __init__(self) -> None:
        self.lock = trio.Lock()


def _lock(request: Request) -> trio.Lock:
    management: _Management = request.app.state.bot_management
    return management.lock


async def add_bot(request: Request) -> Response:
    ctx = context_of(request)
    bot = parse_new_bot(await read_json(request))
    async with _lock(request):
        try:
            actor = await ctx.fleet.add(bot, source="api")
        except FleetError as exc:
            raise _fleet_error(exc) from None
    return JSONResponse(
        bot_json(ctx, actor),
        status_code=201,
        headers={"Location": f"/admin/bots/{bot.user_id}"},
    )


async def list_bots(request: Request) -> Response:
    ctx = context_of(request)
    bots = [bot_json(ctx, actor) for actor in ctx.fleet.actors()]
    return JSONResponse({"count": len(bots), "bots": bots})


async def get_bot(request: Request) -> Response:
    ctx = context_of(request)
    return JSONResponse(bot_json(ctx, _actor(ctx, user_id_param(request))))


async def remove_bot(request: Request) -> Response:
    ctx = context_of(request)
    user_id = user_id_param(request)
    async with _lock(request):
        _actor(ctx, user_id)
        try:
            await ctx.fleet.remove(user_id)
        except FleetError as exc:
            raise _fleet_error(exc) from None
    return JSONResponse({"user_id": user_id, "removed": True, "history_kept": True})


async def suspend_bot(request: Request) -> Response:
    ctx = context_of(request)
    user_id = user_id_param(request)
    data = await read_json(request)
    unknown = sorted(set(data) - {"reason"})
    if unknown:
        raise ApiError(422, f"unknown field(s) {', '.join(unknown)}; known: reason")
    reason = data.get("reason", "suspended by an admin")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise ApiError(422, f"reason must be a non-empty string of at most {MAX_REASON} characters")
    async with _lock(request):
        actor = _actor(ctx, user_id)
        try:
            await ctx.fleet.suspend(user_id, reason.strip())
        except LifecycleError as exc:
            raise ApiError(409, str(exc)) from None
        except FleetError as exc:
            raise _fleet_error(exc) from None
        return JSONResponse(bot_json(ctx, actor))


async def resume_bot(request: Request) -> Response:
    ctx = context_of(request)
    user_id = user_id_param(request)
    async with _lock(request):
        actor = _actor(ctx, user_id)
        try:
            await ctx.fleet.resume(user_id)
        except LifecycleError as exc:
            raise ApiError(409, str(exc)) from None
        except FleetError as exc:
            raise _fleet_error(exc) from None
        return JSONResponse(bot_json(ctx, actor))


def bot_routes() -> list[BaseRoute]:
    """The routes, for ``create_app`` (which also puts the management lock on app.state)."""
    return [
        Route("/admin/bots", list_bots, methods=["GET"]),
        Route("/admin/bots", add_bot, methods=["POST"]),
        Route("/admin/bots/{user_id}", get_bot, methods=["GET"]),
        Route("/admin/bots/{user_id}", remove_bot, methods=["DELETE"]),
        Route("/admin/bots/{user_id}/suspend", suspend_bot, methods=["POST"]),
        Route("/admin/bots/{user_id}/resume", resume_bot, methods=["POST"]),
    ]


def management_state() -> _Management:
    return _Management()
