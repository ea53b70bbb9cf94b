"""Turn a cProfile dump into "where the time goes": own time by area, and the top functions.

cProfile sees the main thread only: SQLite work done in worker threads appears as the main
thread's wait for it, and time blocked in ``epoll`` is the event loop having nothing to do.
"""

from __future__ import annotations

import pstats
import re
from pathlib import Path

from bench.common import ROOT, table

__all__ = ["area", "summarize"]

_SITE = re.compile(r"site-packages/([A-Za-z0-9_]+)")
_OURS = ("actors", "storage", "supervisor", "admin", "bench")


def area(filename: str, function: str) -> str:
    """The area a profiled function belongs to, for grouping own time."""
    if filename == "~":
        name = function.strip("<>{}")
        if "epoll" in name or "select" in name:
            return "idle: waiting in epoll"
        if "lock" in name and "acquire" in name:
            return "idle: waiting for a thread"
        if "sqlite3" in name:
            return "sqlite3 (C)"
        if "json" in name or "encode" in name or "scanner" in name:
            return "json (C)"
        return "builtins (C)"
    if filename.startswith("<"):
        return "trio" if "trio" in filename else "generated code"
    match = _SITE.search(filename)
    if match:
        return match.group(1)
    try:
        relative = Path(filename).resolve().relative_to(ROOT)
    except ValueError:
        return f"stdlib: {_module(filename)}"
    parts = relative.parts
    if parts[0] in _OURS:
        if parts[0] == "actors" and len(parts) > 2 and parts[2].startswith("sim"):
            return "simulated Bot API (actors/botapi/sim*)"
        return f"botvisor: {parts[0]}/{parts[1] if len(parts) > 2 else ''}".rstrip("/")
    return str(relative)


def summarize(path: Path, *, areas: int = 12, functions: int = 10) -> str:
    """Markdown: own time by area (share of the profiled total), then the top functions."""
    stats = pstats.Stats(str(path))
    raw = stats.stats  # type: ignore[attr-defined]
    by_area: dict[str, float] = {}
    rows = []
    total = 0.0
    for (filename, line, function), (_cc, calls, own, cumulative, _callers) in raw.items():
        total += own
        key = area(filename, function)
        by_area[key] = by_area.get(key, 0.0) + own
        where = function if filename == "~" else f"{_short(filename)}:{line} `{function}`"
        rows.append((own, calls, cumulative, where))
    total = total or 1.0
    area_rows = [
        [name, f"{seconds:.2f} s", f"{seconds / total:.0%}"]
        for name, seconds in sorted(by_area.items(), key=lambda kv: -kv[1])[:areas]
    ]
    top = [
        [where, f"{calls:,}", f"{own:.2f} s", f"{cumulative:.2f} s"]
        for own, calls, cumulative, where in sorted(rows, key=lambda r: -r[0])[:functions]
    ]
    return (
        table(["area", "own time", "share"], area_rows)
        + "\n"
        + table(["function", "calls", "own time", "cumulative"], top)
    )


def _module(filename: str) -> str:
    """The top-level stdlib module of a file: ``.../json/encoder.py`` -> ``json``."""
    tail = re.split(r"/lib/python3\.\d+/", filename)[-1]
    return tail.split("/", 1)[0].removesuffix(".py")


def _short(filename: str) -> str:
    match = _SITE.search(filename)
    if match:
        return filename[match.start() + len("site-packages/") :]
    try:
        return str(Path(filename).resolve().relative_to(ROOT))
    except ValueError:
        return Path(filename).name
