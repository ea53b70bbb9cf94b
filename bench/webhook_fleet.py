"""100,000 registered webhook bots in one process: memory, start-up and idle CPU.

``python -m bench.webhook_fleet --bots N`` first prepares a database as an earlier run would
have left it (N bots added through the API, in webhook mode, each with its current
``setWebhook`` registration stored), then, in the same fresh process:

- start-up: from ``Daemon.run`` being started until it reports ready (the fleet loaded, the
  webhook listener listening), and how many Bot API calls that made (unchanged
  registrations need none);
- RSS per bot: RSS after start-up minus RSS before the daemon was built (imports, the
  prepared database closed), divided by N;
- idle CPU: the process's CPU seconds over a window of nothing, per bot-second (a dormant
  webhook bot has no task: only the fleet-wide tasks run);
- a wake: one delivery POSTed to one bot's URL over loopback, answered 200, and handled.

The polling figures beside them in docs/BENCHMARKS.md are the fleet section's, same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from actors import BotConfig, BotMode, BotToken, TelegramConfig, WebhookConfig
from actors.simulator import SimulatedBotApi, SimulatedTransport
from actors.webhook import derive_secret_token
from admin import AdminConfig
from bench.common import ChildProcess, fmt, main_python, self_rss_kib, spread, table
from bench.webhook_server import prepare
from storage import StorageConfig
from supervisor import Config, SupervisorConfig
from supervisor.clock import system_wall_clock
from supervisor.daemon import Daemon

__all__ = ["TARGETS", "markdown", "run"]

TARGETS = {"rss_per_bot_kib": 10.0, "startup_s": 10.0, "idle_cpu_us_per_bot_s": 1.0}
FIRST_BOT_ID = 8_000_000_001
MASTER = "bench-webhook-master-secret"
PUBLIC_URL = "http://127.0.0.1:8443/tg"


def _webhook() -> WebhookConfig:
    return WebhookConfig(listen="127.0.0.1:0", public_url=PUBLIC_URL, secret=MASTER)


def _tokens(bots: int) -> list[str]:
    rng = random.Random(7)
    return [SimulatedBotApi.make_token(FIRST_BOT_ID + i, rng) for i in range(bots)]


def _update(update_id: int, chat_id: int) -> dict[str, Any]:
    sender = {"id": chat_id, "is_bot": False, "first_name": "Ana"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "from": sender,
            "chat": {"id": chat_id, "first_name": "Ana", "type": "private"},
            "date": 1_800_000_000,
            "text": "hello",
        },
    }


async def _measure(bots: int, idle: float, db: Path) -> dict[str, Any]:
    tokens = _tokens(bots)
    await prepare(
        db,
        [
            BotConfig(user_id=i + 1, token=BotToken(t), mode=BotMode.WEBHOOK)
            for i, t in enumerate(tokens)
        ],
        _webhook(),
    )
    # A simulated Bot API that knows none of the bots: any call a bot made would show.
    api = SimulatedBotApi(rng=random.Random(1))
    config = Config(
        telegram=TelegramConfig(api_base="http://sim.invalid"),
        storage=StorageConfig(path=str(db)),
        admin=AdminConfig(listen="127.0.0.1:0", enabled=False),
        supervisor=SupervisorConfig(graceful_timeout=2.0),
        webhook=_webhook(),
    )
    daemon = Daemon(
        config,
        wall_clock=system_wall_clock(),
        rng=random.Random(1),
        transport=SimulatedTransport(api),
        freeze_after_load=True,
    )
    gc.collect()
    rss_base = self_rss_kib()
    result: dict[str, Any] = {"bots": bots, "rss_base_kib": rss_base}
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        handle = await nursery.start(daemon.run)
        result["startup_s"] = time.perf_counter() - started
        result["startup_calls"] = api.statistics().calls
        await trio.sleep(1.0)
        gc.collect()
        rss_ready = self_rss_kib()
        result["rss_ready_kib"] = rss_ready
        result["rss_per_bot_kib"] = (rss_ready - rss_base) / bots
        if idle > 0:
            cpu, wall = time.process_time(), time.perf_counter()
            await trio.sleep(idle)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            result["idle_cpu_us_per_bot_s"] = cpu / (bots * wall) * 1e6
            result["idle_calls"] = api.statistics().calls - result["startup_calls"]
        # One delivery wakes one bot; its echo reaches the simulator (which refuses it: the
        # bot is unknown there, so the wake shows as a call).
        url = f"{handle.webhook_url}{_webhook().path}"
        user_id = bots // 2
        secret = derive_secret_token(MASTER, FIRST_BOT_ID + user_id - 1)
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{url}/{user_id}",
                json=_update(1, 42),
                headers={"X-Telegram-Bot-Api-Secret-Token": secret},
            )
        result["wake_status"] = answer.status_code
        daemon.request_shutdown()
    return result


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_fleet")
    parser.add_argument("--bots", type=int, required=True)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        result = trio.run(_measure, args.bots, args.idle, Path(tmp) / "webhooks.db")
    print(json.dumps(result), flush=True)


def run(quick: bool = False, *, bots: int = 100_000, runs: int | None = None) -> dict[str, Any]:
    """Measure ``bots`` webhook bots ``runs`` times (once in the quick profile)."""
    idle = 10.0 if quick else 30.0
    count = runs if runs is not None else (1 if quick else 3)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        samples = []
        for _ in range(count):
            argv = [main_python(), "-m", "bench.webhook_fleet", "--bots", str(bots)]
            argv += ["--idle", str(idle)]
            with ChildProcess(argv, log_path=Path(tmp) / "webhook-fleet.log") as child:
                samples.append(child.expect(timeout=1800))
    keys = set.intersection(*(set(s) for s in samples)) - {"bots"}
    return {
        "benchmark": "webhook_fleet",
        "bots": bots,
        "idle_window_s": idle,
        "figures": {
            key: spread([s[key] for s in samples])
            for key in sorted(keys)
            if isinstance(samples[0][key], (int, float))
        },
    }


def markdown(results: dict[str, Any], polling: dict[str, Any] | None = None) -> str:
    f = results["figures"]
    rows = [
        [
            f"{results['bots']:,} webhook bots (dormant)",
            fmt(f["startup_s"], 2, " s"),
            fmt(f["startup_calls"], 0),
            fmt(f["rss_per_bot_kib"], 2, " KiB"),
            fmt(f.get("idle_cpu_us_per_bot_s"), 3, " µs"),
        ]
    ]
    if polling is not None:
        for bots, s in polling.get("sizes", {}).items():
            rows.append(
                [
                    f"{int(bots):,} polling bots (fleet section)",
                    fmt(s["startup_s"], 2, " s"),
                    "one getUpdates each, then long polls",
                    fmt(s["rss_per_bot_kib"], 1, " KiB"),
                    fmt(s.get("idle_cpu_us_per_bot_s"), 1, " µs"),
                ]
            )
    return (
        f"Targets: start-up ≤ {TARGETS['startup_s']:g} s with no Bot API call, ≤ "
        f"{TARGETS['rss_per_bot_kib']:g} KiB per bot, idle CPU ≤ "
        f"{TARGETS['idle_cpu_us_per_bot_s']:g} µs per bot-second. A delivery to one of them "
        f"was answered {fmt(f['wake_status'])} after the idle window.\n\n"
        + table(
            [
                "fleet",
                "start-up",
                "Bot API calls at start-up",
                "RSS per bot",
                "idle CPU per bot-second",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    import sys

    _child(sys.argv[1:])
