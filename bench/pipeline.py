"""Pipeline overhead: what breaker + retry + limiters + health cost per call.

Ours: one bot's :class:`~actors.RequestPipeline` (circuit breaker, per-category retry, chat,
bot and global limiters, flood gate, health tracker) on Trio. The peer stack: tenacity
(``AsyncRetrying``) + pybreaker (``calling()``) + three aiolimiter ``AsyncLimiter``s and the
same latency bookkeeping, on asyncio (:mod:`bench.peer_pipeline`, in ``.venv-bench``). Both
wrap the same fake call (an ``async def`` returning at once), with limits far above the call
rate so nothing waits: the figure is pure bookkeeping. Each side runs in a fresh process;
the bare call's own cost is measured in the same loop and subtracted.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from actors import (
    BreakerConfig,
    ChatLimiters,
    CircuitBreaker,
    FloodGate,
    GlobalRateLimiter,
    HealthConfig,
    HealthTracker,
    RequestPipeline,
    RetryConfig,
    RetryCounters,
    TokenBucket,
)
from bench.client_botvisor import RAISED_LIMITS
from bench.common import ChildProcess, fmt, main_python, spread, table
from bench.profiles import summarize

__all__ = ["TARGET_US", "markdown", "run"]

TARGET_US = 8.0


def make_pipeline() -> RequestPipeline:
    """One bot's pipeline with every limit raised out of the way."""
    limits = RAISED_LIMITS
    return RequestPipeline(
        user_id=1,
        breaker=CircuitBreaker(BreakerConfig()),
        retry=RetryConfig(),
        counters=RetryCounters(),
        bot_limiter=TokenBucket(limits.bot_rps, limits.bot_burst),
        flood_gate=FloodGate(),
        chat_limiters=ChatLimiters(limits),
        global_limiter=GlobalRateLimiter(limits.global_rps, limits.global_burst),
        health=HealthTracker(HealthConfig(), wall_clock=lambda: 1_700_000_000.0),
        rng=random.Random(1),
        on_suspend=lambda reason: None,
    )


async def _measure(calls: int, repeats: int) -> dict[str, Any]:
    pipeline = make_pipeline()

    async def send() -> bool:
        return True

    async def bare() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await send()
        return time.perf_counter() - started

    async def protected() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await pipeline.call("sendMessage", send, chat_id=42, idempotent=False)
        return time.perf_counter() - started

    await protected()  # warm-up
    gross, net = [], []
    for _ in range(repeats):
        base = await bare()
        total = await protected()
        gross.append(total / calls * 1e6)
        net.append((total - base) / calls * 1e6)
    return {"gross_us": gross, "net_us": net}


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    if args.profile is None:
        result = trio.run(_measure, args.calls, args.repeats)
    else:
        profiler = cProfile.Profile()
        result = profiler.runcall(trio.run, _measure, args.calls, 1)
        profiler.dump_stats(args.profile)
    print(json.dumps(result), flush=True)


def _side(
    python: str | Path,
    module: str,
    calls: int,
    repeats: int,
    work: Path,
    profile: Path | None = None,
) -> dict[str, Any]:
    argv = [str(python), "-m", module, "--calls", str(calls), "--repeats", str(repeats)]
    if profile is not None:
        argv += ["--profile", str(profile)]
    with ChildProcess(argv, log_path=work / f"{module}.log") as child:
        raw = child.expect(timeout=600)
    return {key: spread(values) for key, values in raw.items() if isinstance(values, list)} | {
        k: v for k, v in raw.items() if not isinstance(v, list)
    }


def run(
    quick: bool = False,
    *,
    peer_python: Path | None,
    calls: int | None = None,
    repeats: int | None = None,
    peer_error: str | None = None,
) -> dict[str, Any]:
    calls = calls or (20_000 if quick else 100_000)
    repeats = repeats or (5 if quick else 9)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        work = Path(tmp)
        ours = _side(main_python(), "bench.pipeline", calls, repeats, work)
        peer = (
            _side(peer_python, "bench.peer_pipeline", calls, repeats, work)
            if peer_python is not None
            else None
        )
        profile = None
        if ours["net_us"]["median"] > TARGET_US:
            path = work / "pipeline.prof"
            _side(main_python(), "bench.pipeline", calls, 1, work, profile=path)
            profile = summarize(path)
    return {
        "profile": profile,
        "benchmark": "pipeline",
        "calls": calls,
        "repeats": repeats,
        "ours": ours,
        "peer": peer,
        "peer_error": peer_error,
        "target_us": TARGET_US,
    }


def markdown(results: dict[str, Any]) -> str:
    ours, peer = results["ours"], results["peer"]
    rows = [
        [
            "botvisor `RequestPipeline` (Trio)",
            fmt(ours["net_us"], 2, " µs"),
            fmt(ours["gross_us"], 2, " µs"),
            "×1.00",
        ]
    ]
    if peer is not None:
        rows.append(
            [
                f"tenacity {peer.get('tenacity', '')} + pybreaker {peer.get('pybreaker', '')} + "
                f"aiolimiter {peer.get('aiolimiter', '')} (asyncio)",
                fmt(peer["net_us"], 2, " µs"),
                fmt(peer["gross_us"], 2, " µs"),
                f"×{peer['net_us']['median'] / ours['net_us']['median']:.2f}",
            ]
        )
    met = ours["net_us"]["median"] <= results["target_us"]
    out = [
        "### Pipeline overhead per call",
        "",
        f"{results['calls']:,} calls × {results['repeats']} repetitions per side, each side in "
        "a fresh process; the same fake call; limits far above the call rate.",
        "",
        table(
            ["stack", "cost per call (bare call subtracted)", "with the bare call", "ratio"],
            rows,
        ),
        f"Target ≤ {results['target_us']:g} µs for ours: {'met' if met else '**missed**'}.\n",
    ]
    if results.get("peer_error"):
        out.append(f"Peer stack not measured: {results['peer_error']}\n")
    if results.get("profile"):
        out += ["Where our time goes (cProfile, own time by area):", "", results["profile"]]
    return "\n".join(out)


if __name__ == "__main__":
    _child(sys.argv[1:])
