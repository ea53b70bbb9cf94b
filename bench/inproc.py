"""A botvisor daemon and the simulated Bot API in one process (in-process transport).

Shared by the fleet-scale and throughput benchmarks: ``start_fleet`` builds the simulated
bots first (so their memory is part of the baseline, not of the bots' figure), then the real
Daemon with production settings: SQLite in threads, the default report interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from actors import BotConfig, BotToken, LimitsConfig, TelegramConfig
from actors.simulator import SimulatedBotApi, SimulatedTransport
from admin import AdminConfig
from storage import Offload, StorageConfig
from supervisor import Config, SupervisorConfig
from supervisor.clock import system_wall_clock
from supervisor.daemon import Daemon, DaemonHandle

__all__ = ["InProcessFleet", "make_api", "start_fleet", "wait_all_polling"]

FIRST_BOT_ID = 5_000_000_001


@dataclass
class InProcessFleet:
    api: SimulatedBotApi
    tokens: list[str]
    daemon: Daemon
    handle: DaemonHandle


def make_api(bots: int, seed: int, *, record: bool = False) -> tuple[SimulatedBotApi, list[str]]:
    """A simulated Bot API with ``bots`` bots; ``record`` keeps every delivered reply."""
    rng = random.Random(seed)
    api = SimulatedBotApi(rng=random.Random(seed + 1), record=record, call_log_size=100_000)
    tokens = [SimulatedBotApi.make_token(FIRST_BOT_ID + i, rng) for i in range(bots)]
    for token in tokens:
        api.add_bot(token)
    return api, tokens


@asynccontextmanager
async def start_fleet(
    api: SimulatedBotApi,
    tokens: list[str],
    db: Path,
    *,
    poll_timeout: int = 10,
    limits: LimitsConfig | None = None,
    store_offload: Offload | None = None,
    wall_clock: Callable[[], float] | None = None,
    report_interval: float = 5.0,
    admin: bool = False,
    metrics_per_bot: bool = True,
) -> AsyncIterator[InProcessFleet]:
    """Run the daemon over ``api`` until the block ends (then shut it down).

    ``store_offload=run_inline`` and an anchored ``wall_clock`` make it run on a MockClock.
    ``admin``: serve the admin API on 127.0.0.1 (a free port, no token: loopback only), with
    per-bot series in ``/metrics`` unless ``metrics_per_bot`` is false.
    """
    config = Config(
        telegram=TelegramConfig(api_base="http://sim.invalid", poll_timeout=poll_timeout),
        storage=StorageConfig(path=str(db)),
        admin=AdminConfig(listen="127.0.0.1:0", enabled=admin, metrics_per_bot=metrics_per_bot),
        supervisor=SupervisorConfig(graceful_timeout=2.0, report_interval=report_interval),
        limits=limits or LimitsConfig(),
        bots=tuple(
            BotConfig(user_id=1 + i, token=BotToken(token)) for i, token in enumerate(tokens)
        ),
    )
    daemon = Daemon(
        config,
        wall_clock=wall_clock or system_wall_clock(),
        rng=random.Random(1),
        transport=SimulatedTransport(api),
        store_offload=store_offload,
        # As `botvisor run` does.
        freeze_after_load=True,
    )
    async with trio.open_nursery() as nursery:
        handle: DaemonHandle = await nursery.start(daemon.run)
        try:
            yield InProcessFleet(api, tokens, daemon, handle)
        finally:
            daemon.request_shutdown()


async def wait_all_polling(api: SimulatedBotApi, bots: int, within: float = math.inf) -> int:
    """Wait until ``bots`` long polls wait at the server, at most ``within`` seconds;
    returns how many do."""
    with trio.move_on_after(within):
        # The simulator has no "n polls waiting" event; 10 ms polls are cheap next to start-up.
        while api.statistics().waiting_polls < bots:  # noqa: ASYNC110
            await trio.sleep(0.01)
    return api.statistics().waiting_polls
