"""The simulated Bot API over real HTTP: a Starlette app and a Hypercorn server on Trio.

Routes ``/bot{token}/{method}`` take parameters as GET query strings, a POST JSON body or a
POST form, like Telegram's. ``/c/{client}/bot{token}/{method}`` is the same call by a named
client (a shard given ``api_base = ".../c/shard-0"``): its getUpdates calls are recorded
(:meth:`SimulatedBotApi.pollers`), and ``GET /sim/pollers`` answers who polled each bot and
the 409s each client got, so a test of several processes sees that each bot had one poller;
``GET /sim/webhooks`` answers each bot's webhook URL as last set, and ``GET /sim/report``
what the simulated users saw so far (answered, unanswered, duplicates, out of order: fleet
totals and the bots where something is wrong; ``active_chats``, the chats that will still
write: 0 once every chat has sent its ``--messages``), so a test of several processes can check that
every update was handled.

Faults without a Bot API answer cannot all be shown over HTTP:

- a connect error or an outage's gateway fault is answered ``502 Bad Gateway`` with an HTML
  page (a server cannot refuse a connection it has accepted);
- a timeout holds the request until the client gives up (disconnects), at most
  ``HOLD_SECONDS``;
- a drop is held the same way: ASGI offers no way to abort a connection, and Hypercorn keeps a
  connection open when an app ends mid-response, so the client fails with a read timeout
  (``request_sent=True``, as for a drop) instead of a disconnect.

When the client disconnects, its call is cancelled, so a long poll frees its bot's poll slot.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from actors.simulator.api import SimulatedBotApi
from actors.simulator.faults import FaultKind, SimulatedFault
from actors.simulator.transport import BAD_GATEWAY_PAGE, parse_params

__all__ = ["HOLD_SECONDS", "create_sim_app", "serve_sim"]

# Longer than any client's timeout: getUpdates' 50 s plus a margin.
HOLD_SECONDS = 120.0

log = logging.getLogger("botvisor.sim.http")


class _BotApiEndpoint:
    """The raw ASGI endpoint of ``/bot{token}/{method}``: it must watch for disconnects."""

    def __init__(self, api: SimulatedBotApi) -> None:
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        token = str(scope["path_params"]["token"])
        method = str(scope["path_params"]["method"])
        body = await request.body()
        try:
            params = parse_params(
                list(request.query_params.multi_items()),
                request.headers.get("content-type", ""),
                body,
            )
        except (ValueError, UnicodeDecodeError):
            response: Response = _error(400, "Bad Request: can't parse request body")
            await response(scope, receive, send)
            return
        client = scope["path_params"].get("client")
        polls = client is not None and method.lower() == "getupdates"
        if polls:
            self._api.note_poller(token, str(client))
        outcome: tuple[int, dict[str, Any]] | SimulatedFault | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            try:
                outcome = await self._api.handle(token, method, params)
            except SimulatedFault as fault:
                outcome = fault
                if fault.kind in (FaultKind.TIMEOUT, FaultKind.DROP):
                    await trio.sleep(HOLD_SECONDS)
            nursery.cancel_scope.cancel()
        if outcome is None:
            return  # the client went away; nobody to answer
        if isinstance(outcome, SimulatedFault):
            response = Response(BAD_GATEWAY_PAGE, status_code=502, media_type="text/html")
        else:
            status, answer = outcome
            if polls and status == 409:
                self._api.note_poll_conflict(str(client))
            response = Response(
                json.dumps(answer).encode(), status_code=status, media_type="application/json"
            )
        await response(scope, receive, send)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _error(status: int, description: str) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error_code": status, "description": description}, status_code=status
    )


async def _not_found(request: Request) -> Response:
    return _error(404, "Not Found")


async def _pollers(request: Request) -> Response:
    api: SimulatedBotApi = request.app.state.api
    return JSONResponse(
        {
            "pollers": {str(bot_id): calls for bot_id, calls in sorted(api.pollers().items())},
            "conflicts": api.poll_conflicts(),
            "statistics": {
                "conflicts": api.statistics().conflicts,
                "calls": api.statistics().calls,
            },
        }
    )


async def _report(request: Request) -> Response:
    """What the simulated users saw so far: fleet totals, and each bot whose users saw a
    duplicate, an answer out of order or a message not answered yet (by bot id)."""
    api = request.app.state.api
    report = api.report()
    return JSONResponse(
        {
            "active_chats": api.statistics().active_chats,
            "user_messages": report.user_messages,
            "answered": report.answered,
            "unanswered": report.unanswered,
            "duplicates": report.duplicates,
            "out_of_order": report.out_of_order,
            "updates_pending": sum(bot.updates_pending for bot in report.bots),
            "bots": {
                str(bot.bot_id): {
                    "user_messages": bot.user_messages,
                    "answered": bot.answered,
                    "unanswered": len(bot.unanswered),
                    "duplicates": bot.duplicates,
                    "out_of_order": bot.out_of_order,
                    "replies": bot.replies,
                    "untracked_replies": bot.untracked_replies,
                    "updates_pending": bot.updates_pending,
                }
                for bot in report.bots
                if bot.unanswered or bot.duplicates or bot.out_of_order
            },
        }
    )


async def _webhooks(request: Request) -> Response:
    api: SimulatedBotApi = request.app.state.api
    return JSONResponse(
        {
            "webhooks": {
                str(bot.bot_id): bot.webhook.url for bot in api.bots if bot.webhook is not None
            }
        }
    )


def create_sim_app(api: SimulatedBotApi) -> Starlette:
    """A Starlette app serving ``api`` at ``/bot{token}/{method}``; other paths -> 404 JSON."""
    app = Starlette(
        routes=[
            Route("/bot{token}/{method}", _BotApiEndpoint(api)),
            Route("/c/{client}/bot{token}/{method}", _BotApiEndpoint(api)),
            Route("/sim/pollers", _pollers, methods=["GET"]),
            Route("/sim/webhooks", _webhooks, methods=["GET"]),
            Route("/sim/report", _report, methods=["GET"]),
            Route("/{path:path}", _not_found, methods=["GET", "POST"]),
        ]
    )
    app.state.api = api
    return app


async def serve_sim(
    api: SimulatedBotApi,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``api`` over HTTP with Hypercorn until cancelled or ``shutdown_trigger`` returns.

    ``started()`` gets the base URL, e.g. ``"http://127.0.0.1:50123"``: use it as
    ``TelegramConfig.api_base``.
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    trigger = shutdown_trigger if shutdown_trigger is not None else trio.sleep_forever
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                serve,
                cast(ASGIFramework, create_sim_app(api)),
                config,
                shutdown_trigger=trigger,
            )
        )
        task_status.started(binds[0])
