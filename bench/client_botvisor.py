"""botvisor as a benchmark client: the real daemon, its bots polling the API over HTTP.

``python -m bench.client_botvisor --api URL --tokens-file F`` prints ``{"event": "imported",
"rss_kib": ...}`` before building anything, ``{"event": "started", ...}`` once the daemon says
it is up, and runs until SIGTERM. Production settings (threads for SQLite, a shared TLS context,
default report interval) except that the rate limits are raised out of the way, so the
throughput phase measures the pipeline's cost rather than Telegram's limits. With
``--limits default`` the production limits apply instead (``--global-rps`` and
``--global-burst`` override the global limiter's), for the arrivals benchmark.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import tempfile
import time
from pathlib import Path

import trio

from actors import BotConfig, BotToken, LimitsConfig, TelegramConfig
from admin import AdminConfig
from bench.common import raise_fd_limit, self_rss_kib
from storage import StorageConfig
from supervisor import Config, SupervisorConfig
from supervisor.clock import system_wall_clock
from supervisor.daemon import Daemon

__all__ = ["RAISED_LIMITS", "main"]

# Limits far above anything a benchmark reaches, so no call ever waits for a token. Built
# without validation on purpose: the config's ranges stop at sane values for operators
# (private_chat_per_second <= 1000 would make a benchmark's calls to one chat wait 1 ms each).
RAISED_LIMITS = LimitsConfig.model_construct(
    **{
        **LimitsConfig().model_dump(),
        "global_rps": 1e9,
        "global_burst": 10**9,
        "bot_rps": 1e9,
        "bot_burst": 10**9,
        "private_chat_per_second": 1e9,
        "group_chat_per_minute": 1e9,
    }
)


def bench_config(
    api_base: str,
    tokens: list[str],
    db: Path,
    poll_timeout: int,
    limits: LimitsConfig = RAISED_LIMITS,
    graceful_timeout: float = 2.0,
    admin: bool = False,
) -> Config:
    return Config(
        telegram=TelegramConfig(api_base=api_base, poll_timeout=poll_timeout),
        storage=StorageConfig(path=str(db)),
        admin=AdminConfig(listen="127.0.0.1:0", enabled=admin),
        supervisor=SupervisorConfig(graceful_timeout=graceful_timeout),
        limits=limits,
        bots=tuple(
            BotConfig(user_id=1 + i, token=BotToken(token)) for i, token in enumerate(tokens)
        ),
    )


async def _run(args: argparse.Namespace, tokens: list[str], db: Path) -> None:
    limits = RAISED_LIMITS
    if args.limits == "default":
        overrides = {"global_rps": args.global_rps, "global_burst": args.global_burst}
        limits = LimitsConfig(**{k: v for k, v in overrides.items() if v is not None})
    config = bench_config(
        args.api,
        tokens,
        db,
        args.poll_timeout,
        limits,
        graceful_timeout=args.graceful_timeout,
        admin=args.admin,
    )
    daemon = Daemon(config, wall_clock=system_wall_clock(), rng=random.Random(1))
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            started = time.perf_counter()
            await nursery.start(daemon.run)
            print(
                json.dumps(
                    {
                        "event": "started",
                        "seconds": time.perf_counter() - started,
                        "rss_kib": self_rss_kib(),
                    }
                ),
                flush=True,
            )
            async for _ in signals:
                daemon.request_shutdown()
                break


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client_botvisor", description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--tokens-file", type=Path, required=True)
    parser.add_argument("--poll-timeout", type=int, default=10)
    parser.add_argument("--graceful-timeout", type=float, default=2.0)
    parser.add_argument("--admin", action="store_true", help="serve the admin API too")
    parser.add_argument("--limits", choices=("raised", "default"), default="raised")
    parser.add_argument("--global-rps", type=float, help="with --limits default")
    parser.add_argument("--global-burst", type=int, help="with --limits default")
    args = parser.parse_args(argv)
    raise_fd_limit()
    tokens = json.loads(args.tokens_file.read_text())
    print(json.dumps({"event": "imported", "rss_kib": self_rss_kib()}), flush=True)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        trio.run(_run, args, tokens, Path(tmp) / "bench.db")


if __name__ == "__main__":
    main()
