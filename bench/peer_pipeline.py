"""The peer protection stack for the pipeline benchmark: tenacity + pybreaker + aiolimiter.

Runs in ``.venv-bench`` on asyncio: ``python -m bench.peer_pipeline --calls N --repeats R``
prints ``{"gross_us": [...], "net_us": [...]}`` like ``bench.pipeline``. The stack mirrors
ours: a retry loop for transient errors with exponential backoff and jitter, a circuit breaker
(5 failures, 60 s), a chat, a bot and a global limiter (raised far above the call rate), and
the call's latency recorded as an EMA.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from importlib import import_module
from importlib.metadata import version
from typing import Any

__all__ = ["main"]


class TransientError(Exception):
    pass


async def _measure(calls: int, repeats: int) -> dict[str, Any]:
    tenacity = import_module("tenacity")
    pybreaker = import_module("pybreaker")
    aiolimiter = import_module("aiolimiter")
    loop = asyncio.get_running_loop()
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    chat, bot, world = (aiolimiter.AsyncLimiter(1e9, 1) for _ in range(3))
    health = {"ok": 0, "ema": 0.0}
    retry_args: dict[str, Any] = {
        "stop": tenacity.stop_after_attempt(3),
        "wait": tenacity.wait_exponential_jitter(initial=0.5, max=30),
        "retry": tenacity.retry_if_exception_type(TransientError),
        "reraise": True,
    }

    async def send() -> bool:
        return True

    async def protected() -> Any:
        async for attempt in tenacity.AsyncRetrying(**retry_args):
            with attempt, breaker.calling():
                async with chat, bot, world:
                    started = loop.time()
                    result = await send()
                    health["ok"] += 1
                    health["ema"] = 0.8 * health["ema"] + 0.2 * (loop.time() - started)
                    return result
        return None

    async def bare() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await send()
        return time.perf_counter() - started

    async def loop_protected() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await protected()
        return time.perf_counter() - started

    await loop_protected()  # warm-up
    gross, net = [], []
    for _ in range(repeats):
        base = await bare()
        total = await loop_protected()
        gross.append(total / calls * 1e6)
        net.append((total - base) / calls * 1e6)
    return {
        "gross_us": gross,
        "net_us": net,
        "tenacity": version("tenacity"),
        "pybreaker": version("pybreaker"),
        "aiolimiter": version("aiolimiter"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_pipeline", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_measure(args.calls, args.repeats))), flush=True)


if __name__ == "__main__":
    main()
