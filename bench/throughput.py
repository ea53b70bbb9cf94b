"""Throughput in one process: handled updates per CPU-second through the full pipeline.

The real daemon with its SQLite inbox (threads), bots polling the simulated Bot API through
the in-process transport, rate limits raised out of the way. Every bot's ``chats`` private
chats receive ``messages`` messages at once; the echo replies are counted by the simulator.
The CPU figure is the whole process (all threads), so it includes the simulator's own work;
the loopback benchmark gives the client's CPU alone.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.client_botvisor import RAISED_LIMITS
from bench.common import ChildProcess, fmt, main_python, spread, table
from bench.inproc import make_api, start_fleet, wait_all_polling
from bench.profiles import summarize

__all__ = ["markdown", "run"]

FIRST_CHAT = 10_000


async def _measure(
    bots: int, chats: int, messages: int, db: Path, profiler: cProfile.Profile | None
) -> dict[str, Any]:
    api, tokens = make_api(bots, seed=2)
    async with start_fleet(api, tokens, db, limits=RAISED_LIMITS) as fleet:
        await wait_all_polling(fleet.api, bots)
        total = bots * chats * messages
        cpu = time.process_time()
        wall = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        n = 0
        for _ in range(messages):
            for token in tokens:
                for c in range(chats):
                    n += 1
                    api.send_user_message(token, FIRST_CHAT + c, f"bench q{n}.")
        # The simulator has no "replies reached n" event.
        while api.statistics().replies < total:  # noqa: ASYNC110
            await trio.sleep(0.002)
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
        report = api.report()
    return {
        "updates": total,
        "wall_s": wall,
        "updates_per_s": total / wall,
        "cpu_s": cpu,
        "updates_per_cpu_s": total / cpu,
        "cpu_ms_per_update": cpu / total * 1000,
        "duplicates": report.duplicates,
        "out_of_order": report.out_of_order,
    }


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--bots", type=int, default=50)
    parser.add_argument("--chats", type=int, default=10)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        result = trio.run(
            _measure, args.bots, args.chats, args.messages, Path(tmp) / "t.db", profiler
        )
    if profiler is not None and args.profile is not None:
        profiler.dump_stats(args.profile)
    print(json.dumps(result), flush=True)


def _run_child(
    bots: int, chats: int, messages: int, work: Path, profile: Path | None = None
) -> dict[str, Any]:
    argv = [main_python(), "-m", "bench.throughput", "--bots", str(bots)]
    argv += ["--chats", str(chats), "--messages", str(messages)]
    if profile is not None:
        argv += ["--profile", str(profile)]
    with ChildProcess(argv, log_path=work / "throughput.log") as child:
        return child.expect(timeout=900)


def run(
    quick: bool = False,
    *,
    bots: int = 50,
    chats: int = 10,
    messages: int | None = None,
    runs: int | None = None,
    profile: bool = True,
) -> dict[str, Any]:
    messages = messages or (6 if quick else 20)
    runs = runs or (3 if quick else 5)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        work = Path(tmp)
        samples = [_run_child(bots, chats, messages, work) for _ in range(runs)]
        result: dict[str, Any] = {
            "benchmark": "throughput",
            "bots": bots,
            "chats": chats,
            "messages": messages,
            **{key: spread([s[key] for s in samples]) for key in samples[0]},
        }
        if profile:
            path = work / "throughput.prof"
            _run_child(bots, chats, messages, work, profile=path)
            result["profile"] = summarize(path)
    return result


def markdown(results: dict[str, Any]) -> str:
    r = results
    rows = [
        [
            f"{r['bots']} bots × {r['chats']} chats × {r['messages']} messages "
            f"= {int(r['updates']['median']):,} updates",
            fmt(r["updates_per_s"], 0, "/s"),
            fmt(r["updates_per_cpu_s"], 0),
            fmt(r["cpu_ms_per_update"], 2, " ms"),
            fmt(r["duplicates"], 0),
        ]
    ]
    out = [
        "### Throughput, in process (full pipeline, durable inbox, limits raised)",
        "",
        table(
            [
                "workload",
                "handled updates/s (wall)",
                "updates per CPU-second (per core)",
                "CPU per update (client + simulator)",
                "duplicates",
            ],
            rows,
        ),
    ]
    if "profile" in r:
        out += ["Where the CPU goes (cProfile of one run, own time by area):", "", r["profile"]]
    return "\n".join(out)


if __name__ == "__main__":
    _child(sys.argv[1:])
