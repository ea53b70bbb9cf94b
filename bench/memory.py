"""Where a bot's memory goes: tracemalloc's allocation growth over a fleet's start, by file.

``python -m bench.memory --bots N`` starts N bots in process (as :mod:`bench.fleet` does) with
tracemalloc on, and prints the allocations still live after start-up, grouped by source file
and by the line that allocated most, per bot. tracemalloc sees Python allocations only (not
the interpreter's own pools or C libraries' buffers), so its total is below the RSS growth.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import trio

from bench.common import ROOT, ChildProcess, main_python, table
from bench.inproc import make_api, start_fleet, wait_all_polling

__all__ = ["markdown", "run"]


async def _measure(bots: int, db: Path, top: int) -> dict[str, Any]:
    api, tokens = make_api(bots, seed=1)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    async with start_fleet(api, tokens, db) as fleet:
        await wait_all_polling(fleet.api, bots)
        await trio.sleep(1.0)
        gc.collect()
        after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    by_file = after.compare_to(before, "filename")
    by_line = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in by_file)
    return {
        "bots": bots,
        "total_kib_per_bot": total / bots / 1024,
        "files": [
            [_short(s.traceback[0].filename), s.size_diff / bots / 1024, s.count_diff / bots]
            for s in by_file[:top]
        ],
        "lines": [
            [
                f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                s.size_diff / bots / 1024,
                s.count_diff / bots,
            ]
            for s in by_line[:top]
        ],
    }


def _short(filename: str) -> str:
    marker = "site-packages/"
    if marker in filename:
        return filename.split(marker, 1)[1]
    try:
        return str(Path(filename).resolve().relative_to(ROOT))
    except ValueError:
        return Path(filename).name


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--bots", type=int, default=2_000)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        result = trio.run(_measure, args.bots, Path(tmp) / "m.db", args.top)
    print(json.dumps(result), flush=True)


def run(quick: bool = False, *, bots: int = 2_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        argv = [main_python(), "-m", "bench.memory", "--bots", str(bots)]
        with ChildProcess(argv, log_path=Path(tmp) / "memory.log") as child:
            result = child.expect(timeout=900)
    return {"benchmark": "memory", **result}


def markdown(results: dict[str, Any]) -> str:
    def rows(entries: list[list[Any]]) -> list[list[str]]:
        return [[f"`{name}`", f"{kib:.2f} KiB", f"{blocks:.1f}"] for name, kib, blocks in entries]

    return "\n".join(
        [
            f"Where a bot's memory goes (tracemalloc over a {results['bots']:,}-bot start: "
            f"{results['total_kib_per_bot']:.1f} KiB of Python allocations per bot):",
            "",
            table(["file", "per bot", "blocks per bot"], rows(results["files"])),
            table(["line", "per bot", "blocks per bot"], rows(results["lines"])),
        ]
    )


if __name__ == "__main__":
    _child(sys.argv[1:])
