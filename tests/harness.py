"""Test harness: a whole daemon in process, on the simulated Bot API.

``running_fleet`` starts the real Daemon (real SQLite file, real supervisor and actors) with
the simulated Bot API behind an in-process transport, so it runs on a MockClock.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from starlette.applications import Starlette

from actors import (
    BotConfig,
    BotEvent,
    BotToken,
    EventSink,
    HandlersConfig,
    Shard,
    TelegramConfig,
)
from actors.simulator import SimulatedBotApi, SimulatedTransport
from admin import AdminConfig, AdminContext, create_app
from storage import StorageConfig, run_inline
from supervisor import Config, SupervisorConfig
from supervisor.clock import anchored_wall_clock
from supervisor.daemon import Daemon, DaemonHandle
from supervisor.shard_registry import ShardRegistry

EPOCH = 1_800_000_000.0  # the wall clock reads this when Trio's clock reads 0
FIRST_BOT_ID = 5_000_000_001


def bot_token(user_id: int, rng: random.Random | None = None) -> str:
    return SimulatedBotApi.make_token(FIRST_BOT_ID + user_id, rng or random.Random(user_id))


@dataclass
class Fleet:
    """A running in-process daemon and the simulated Telegram it talks to."""

    api: SimulatedBotApi
    daemon: Daemon
    handle: DaemonHandle
    tokens: dict[int, str] = field(default_factory=dict)

    def bot_id(self, user_id: int) -> int:
        return BotToken(self.tokens[user_id]).bot_id


def make_config(
    db_path: Path,
    user_ids: list[int],
    *,
    tokens: dict[int, str],
    admin: bool = False,
    **sections: Any,
) -> Config:
    """A Config for tests: fast cadences, the given bots (echo), admin off unless asked."""
    base = Config(
        telegram=TelegramConfig(api_base="http://sim.invalid", poll_timeout=30),
        storage=StorageConfig(path=str(db_path), persist_interval=300),
        admin=AdminConfig(listen="127.0.0.1:0", enabled=admin),
        supervisor=SupervisorConfig(graceful_timeout=5.0, report_interval=5.0, restart_jitter=0.0),
        # The tests' own handlers (tests.handlers_for_tests, ...) are allowed.
        handlers=HandlersConfig(allowed_modules=("tests",)),
        bots=tuple(
            BotConfig(user_id=uid, token=BotToken(tokens[uid])) for i, uid in enumerate(user_ids)
        ),
    )
    return base.model_copy(update=sections)


@asynccontextmanager
async def running_fleet(
    db_path: Path,
    user_ids: list[int],
    *,
    api: SimulatedBotApi | None = None,
    seed: int = 1,
    configure: Callable[[Config], Config] | None = None,
    admin: bool = False,
    wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    shard: Shard | None = None,
    registry: ShardRegistry | None = None,
    **sections: Any,
) -> AsyncIterator[Fleet]:
    """Run the daemon over the simulated API until the block ends, then shut it down.

    ``wrap_transport`` may put a test's own layer between the bots and the simulated API.
    """
    api = api or SimulatedBotApi(rng=random.Random(seed))
    tokens = {uid: bot_token(uid) for uid in user_ids}
    known = {bot.token for bot in api.bots}
    for token in tokens.values():
        if token not in known:
            api.add_bot(token)
    config = make_config(db_path, user_ids, tokens=tokens, admin=admin, **sections)
    if configure is not None:
        config = configure(config)
    transport: httpx.AsyncBaseTransport = SimulatedTransport(api)
    if wrap_transport is not None:
        transport = wrap_transport(transport)
    daemon = Daemon(
        config,
        wall_clock=anchored_wall_clock(EPOCH),
        rng=random.Random(seed),
        transport=transport,
        store_offload=run_inline,
        shard=shard,
        registry=registry,
    )
    async with trio.open_nursery() as nursery:
        handle: DaemonHandle = await nursery.start(daemon.run)
        yield Fleet(api, daemon, handle, tokens)
        daemon.request_shutdown()


ADMIN_TOKEN = "harness-admin-token-0123456789abcdef"


def admin_app(fleet: Fleet, *, token: str = ADMIN_TOKEN, shard: Shard | None) -> Starlette:
    """An admin app built from the running daemon's parts, as shard ``shard`` (None: no
    shard) whatever the daemon was started as."""
    handle = fleet.handle
    send, _receive = trio.open_memory_channel[BotEvent](1000)
    return create_app(
        AdminContext(
            fleet=handle.fleet,
            metrics=handle.metrics,
            store=handle.store,
            supervisor=handle.supervisor,
            events=EventSink(send),
            wall_clock=anchored_wall_clock(EPOCH),
            admin_token=token,
            ready=handle.store.check_writable,
            webhook=handle.webhook,
            shard=shard,
        )
    )


def admin_client(fleet: Fleet, token: str = ADMIN_TOKEN) -> httpx.AsyncClient:
    """An authorized client of an admin app built from the running daemon's parts, over an
    in-process transport (no sockets: it works on a MockClock)."""
    app = admin_app(fleet, token=token, shard=fleet.handle.fleet.shard)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://admin.invalid",
        headers={"Authorization": f"Bearer {token}"},
    )
