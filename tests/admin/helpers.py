"""Admin test helpers: the real daemon in process with an admin app driven over ASGI."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from actors.simulator import SimulatedBotApi
from admin import AdminConfig, AdminContext, create_app
from supervisor import Config
from supervisor.clock import anchored_wall_clock
from tests.harness import EPOCH, Fleet, running_fleet

ADMIN_TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def make_app(fleet: Fleet, **options: Any) -> Starlette:
    """An admin app over the running daemon's components (as the daemon builds it)."""
    handle = fleet.handle
    assert handle.events is not None

    async def ready() -> tuple[bool, str]:
        return await handle.store.check_writable()

    context = AdminContext(
        fleet=handle.fleet,
        metrics=handle.metrics,
        store=handle.store,
        supervisor=handle.supervisor,
        events=handle.events,
        wall_clock=anchored_wall_clock(EPOCH),
        admin_token=options.pop("admin_token", ADMIN_TOKEN),
        ready=ready,
        **options,
    )
    return create_app(context)


def client(app: Starlette, address: str = "127.0.0.1", **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=(address, 40000)),
        base_url="http://admin.test",
        headers=headers,
    )


@dataclass
class AdminFleet:
    fleet: Fleet
    app: Starlette
    http: httpx.AsyncClient

    @property
    def api(self) -> SimulatedBotApi:
        return self.fleet.api


async def add_api_bot(admin: AdminFleet, user_id: int, **fields: Any) -> str:
    """Register a bot through ``POST /admin/bots`` (source ``api``, so the API may remove it,
    unlike the config file's bots); returns its token."""
    from tests.harness import bot_token

    token = bot_token(user_id)
    admin.api.add_bot(token)
    response = await admin.http.post(
        "/admin/bots", json={"user_id": user_id, "token": token, **fields}
    )
    assert response.status_code == 201, response.text
    return token


@asynccontextmanager
async def admin_fleet(
    db_path: Path,
    user_ids: list[int],
    *,
    api: SimulatedBotApi | None = None,
    seed: int = 1,
    config: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[AdminFleet]:
    """The in-process daemon (MockClock-friendly) plus its admin app behind an authorized
    in-process client."""
    api = api or SimulatedBotApi(rng=random.Random(seed))

    def configure(base: Config) -> Config:
        return base.model_copy(update=config or {})

    async with running_fleet(db_path, user_ids, api=api, seed=seed, configure=configure) as fleet:
        app = make_app(fleet, **options)
        async with client(app, **AUTH) as http:
            yield AdminFleet(fleet, app, http)


def served(admin: dict[str, Any] | None = None, **sections: Any) -> Callable[[Config], Config]:
    """A ``configure`` for ``running_fleet``: the admin server on 127.0.0.1:0 with the admin
    token (real sockets: use it on the real clock), plus the given config sections."""

    def configure(base: Config) -> Config:
        settings = AdminConfig(listen="127.0.0.1:0", token=ADMIN_TOKEN, **(admin or {}))
        return base.model_copy(update={"admin": settings, **sections})

    return configure


def ws_url(http_url: str, path: str = "/admin/events") -> str:
    return http_url.replace("http://", "ws://", 1) + path


WS_AUTH = [(b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())]
