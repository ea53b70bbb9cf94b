"""botvisor's daemon in its own process for the webhook benchmarks, driven over stdin/stdout.

``python -m bench.webhook_server --bots N --port P --master M [--mode webhook|polling]
[--handler echo|silent] [--api-base URL] [--first-bot-id ID] [--prepare]`` runs the real
Daemon (SQLite in threads, production settings) with N bots added through the API, a webhook
listener on 127.0.0.1:P whose public URL is ``http://127.0.0.1:P/tg``, and prints
``{"ready": true}``. Without ``--api-base`` the Bot API is a simulated one in process that
knows no bot (any call would show in ``calls``); ``--prepare`` stores each webhook bot's
current registration first, as an earlier run would have, so the start makes no Bot API call.

Then one JSON line per command: ``{"cmd": "wait_handled", "count": K, "timeout": T}``
(waits until the fleet handled K updates in all; answers ``handled``), ``{"cmd": "stats"}``.
The benchmark reads this process's CPU time from ``/proc``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from actors import BotConfig, BotMode, BotToken, LimitsConfig, TelegramConfig, WebhookConfig
from actors.simulator import SimulatedBotApi, SimulatedTransport
from actors.webhook import derive_secret_token, secret_fingerprint
from admin import AdminConfig
from bench.common import raise_fd_limit
from storage import StorageConfig, Store, WebhookRegistration
from supervisor import Config, SupervisorConfig
from supervisor.clock import system_wall_clock
from supervisor.daemon import Daemon, DaemonHandle
from supervisor.fleet import bot_record

__all__ = ["main", "make_tokens", "prepare"]

# Production settings but limits that never hold a reply back: the benchmark measures CPU.
RAISED = LimitsConfig(global_rps=100_000, global_burst=10_000, bot_rps=10_000, bot_burst=1_000)


def make_tokens(count: int, first_bot_id: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [SimulatedBotApi.make_token(first_bot_id + i, rng) for i in range(count)]


def bots_of(tokens: list[str], mode: BotMode, handler: str) -> list[BotConfig]:
    kwargs: dict[str, Any] = {"handler": "autoreply"} if handler == "silent" else {}
    return [
        BotConfig(user_id=i + 1, token=BotToken(t), mode=mode, **kwargs)
        for i, t in enumerate(tokens)
    ]


async def prepare(db: Path, bots: list[BotConfig], webhook: WebhookConfig) -> None:
    """The database an earlier run left: the bots stored, webhook registrations current."""
    assert webhook.secret is not None
    now = time.time()
    store = Store(str(db))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.upsert_bots([bot_record(bot, "api", now) for bot in bots])

        async def register(chunk: list[BotConfig]) -> None:
            for bot in chunk:
                secret = derive_secret_token(webhook.secret or "", bot.token.bot_id)
                await store.upsert_webhook_registration(
                    WebhookRegistration(
                        user_id=bot.user_id,
                        url=webhook.bot_url(bot.user_id),
                        secret_fingerprint=secret_fingerprint(secret),
                        allowed_updates=tuple(bot.allowed_updates),
                        max_connections=webhook.max_connections,
                        registered_at=now,
                    )
                )

        async with trio.open_nursery() as writers:
            for start in range(0, len(bots), 1_000):
                writers.start_soon(register, bots[start : start + 1_000])
        await store.stop()


def _handled(handle: DaemonHandle) -> int:
    return sum(actor.health_sample().handled_updates for actor in handle.fleet.actors())


async def _serve(args: argparse.Namespace, db: Path) -> None:
    mode = BotMode(args.mode)
    tokens = make_tokens(args.bots, args.first_bot_id, args.seed)
    bots = bots_of(tokens, mode, args.handler)
    webhook = WebhookConfig(
        listen=f"127.0.0.1:{args.port}",
        public_url=f"http://127.0.0.1:{args.port}/tg",
        secret=args.master,
    )
    if args.prepare:
        await prepare(db, [b for b in bots if b.mode is BotMode.WEBHOOK], webhook)
    else:
        now = time.time()
        store = Store(str(db))
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.upsert_bots([bot_record(bot, "api", now) for bot in bots])
            await store.stop()
    api = SimulatedBotApi(rng=random.Random(1))
    config = Config(
        telegram=TelegramConfig(api_base=args.api_base or "http://sim.invalid", poll_timeout=10),
        storage=StorageConfig(path=str(db)),
        admin=AdminConfig(listen="127.0.0.1:0", enabled=False),
        supervisor=SupervisorConfig(graceful_timeout=2.0),
        limits=RAISED,
        webhook=webhook,
    )
    daemon = Daemon(
        config,
        wall_clock=system_wall_clock(),
        rng=random.Random(1),
        transport=None if args.api_base else SimulatedTransport(api),
        freeze_after_load=True,
    )
    async with trio.open_nursery() as nursery:
        handle: DaemonHandle = await nursery.start(daemon.run)
        _say({"ready": True, "calls": api.statistics().calls, "webhook_url": handle.webhook_url})
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        while True:
            chunk = await stdin.receive_some()
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                command = json.loads(line)
                if command["cmd"] == "wait_handled":
                    with trio.move_on_after(float(command["timeout"])):
                        # No "handled K" event: 5 ms looks cost little next to the work.
                        while _handled(handle) < int(command["count"]):  # noqa: ASYNC110
                            await trio.sleep(0.005)
                    _say({"handled": _handled(handle)})
                else:
                    _say({"handled": _handled(handle), "calls": api.statistics().calls})
        daemon.request_shutdown()


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_server", description=__doc__)
    parser.add_argument("--bots", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--mode", default="webhook", choices=["webhook", "polling"])
    parser.add_argument("--handler", default="echo", choices=["echo", "silent"])
    parser.add_argument("--api-base")
    parser.add_argument("--first-bot-id", type=int, default=7_000_000_001)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prepare", action="store_true")
    args = parser.parse_args(argv)
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        trio.run(_serve, args, Path(tmp) / "webhooks.db")


if __name__ == "__main__":
    main()
