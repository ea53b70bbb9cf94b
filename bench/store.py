"""Storage benchmark: what the one writer costs, and how fast the admin history query is.

(a) Health snapshot rows/s through ``Store.insert_snapshots`` (fleet-sized batches of 1,000
    rows, each awaited until committed) against raw ``sqlite3`` ``executemany`` + ``COMMIT`` of
    the same batches into the same schema, in a fresh file with the same pragmas. Several
    repetitions, alternating which goes first; median and min–max. Target: the Store keeps at
    least half the raw rate.
(b) ``Store.history(user_id, since=24 h ago)`` latency on a 1,000,000-row table (1,000 bots ×
    1,000 snapshots, 300 s apart), through the Store's read connections (thread hop included).
    Target: p95 ≤ 10 ms.

Run ``python -m bench.store [--rows N] [--quick]``; ``run()`` returns the figures and
``markdown()`` renders them for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import operator
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from storage import HEALTH_COLUMNS, HealthRow, Store, migrate, open_database

__all__ = ["FULL", "QUICK", "Sizes", "markdown", "run"]

BATCH_ROWS = 1_000
SNAPSHOT_INTERVAL = 300.0
DAY = 86_400.0
T0 = 1_700_000_000.0
TARGET_RATIO = 0.5
TARGET_P95_MS = 10.0

_INSERT = (
    f"INSERT INTO bot_health_metrics ({', '.join(HEALTH_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in HEALTH_COLUMNS)})"
)
_values = operator.attrgetter(*HEALTH_COLUMNS)


@dataclass(frozen=True)
class Sizes:
    """How big a run is."""

    rows: int  # snapshot rows per repetition of (a)
    repeats: int  # repetitions of (a)
    bots: int  # (b): bots in the history table
    snapshots_per_bot: int  # (b): rows per bot
    queries: int  # (b): history queries timed


FULL = Sizes(rows=200_000, repeats=5, bots=1_000, snapshots_per_bot=1_000, queries=200)
QUICK = Sizes(rows=50_000, repeats=3, bots=1_000, snapshots_per_bot=1_000, queries=100)


def _row(user_id: int, recorded_at: float, step: int) -> HealthRow:
    unhealthy = user_id % 10 == 0  # every tenth bot is in trouble
    return HealthRow(
        user_id=user_id,
        recorded_at=recorded_at,
        status="unhealthy" if unhealthy else "healthy",
        total_requests=step * 40,
        successful_requests=step * (20 if unhealthy else 39),
        failed_requests=step * (20 if unhealthy else 1),
        error_rate=0.5 if unhealthy else 0.025,
        avg_response_time_ms=85.0 + user_id % 50,
        consecutive_failures=5 if unhealthy else 0,
        circuit_state="open" if unhealthy else "closed",
        circuit_failure_count=5 if unhealthy else 0,
        retry_attempts=step,
        rate_limited_count=step // 10,
        last_success_at=recorded_at - 2.0,
        last_failure_at=recorded_at - 1.0 if unhealthy else None,
        last_error="TRANSIENT_NETWORK: timed out" if unhealthy else None,
    )


def _snapshot_batches(rows: int) -> list[list[HealthRow]]:
    """``rows`` rows as fleet snapshots: batch k is every bot's row at T0 + k × 300 s."""
    batches = []
    for start in range(0, rows, BATCH_ROWS):
        step = start // BATCH_ROWS
        size = min(BATCH_ROWS, rows - start)
        at = T0 + step * SNAPSHOT_INTERVAL
        batches.append([_row(user_id, at, step) for user_id in range(1, size + 1)])
    return batches


def _fresh_schema(path: Path) -> None:
    db = open_database(path)
    try:
        migrate(db)
    finally:
        db.close()


def _raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _raw_insert(path: Path, batches: list[list[tuple[Any, ...]]]) -> float:
    """Seconds for raw executemany + COMMIT of every batch."""
    _fresh_schema(path)
    conn = _raw_connect(path)
    try:
        started = time.perf_counter()
        for batch in batches:
            conn.execute("BEGIN")
            conn.executemany(_INSERT, batch)
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


async def _store_insert(
    path: Path, batches: list[list[HealthRow]], watch: bool = False
) -> tuple[float, list[float]]:
    """Seconds for Store.insert_snapshots of every batch and, if ``watch``, how late a 1 ms
    timer woke meanwhile (the event loop's stalls). The timer competes for the GIL, so timed
    runs go without it."""
    _fresh_schema(path)
    lateness: list[float] = []
    tick = 0.001

    async def watch_loop() -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(tick)
            lateness.append(trio.current_time() - before - tick)

    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(path).run)
        if watch:
            nursery.start_soon(watch_loop)
        started = time.perf_counter()
        for batch in batches:
            await store.insert_snapshots(batch)
        elapsed = time.perf_counter() - started
        await store.stop()
        nursery.cancel_scope.cancel()
    return elapsed, lateness


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def _measure_inserts(directory: Path, sizes: Sizes) -> dict[str, Any]:
    batches = _snapshot_batches(sizes.rows)
    raw_batches = [[_values(row) for row in batch] for batch in batches]
    store_rates: list[float] = []
    raw_rates: list[float] = []
    # One short unmeasured round of each first: imports, page cache and thread pool warm up.
    warm = min(5, len(batches))
    _raw_insert(directory / "warm-raw.db", raw_batches[:warm])
    trio.run(_store_insert, directory / "warm-store.db", batches[:warm])
    for file in directory.glob("warm-*"):
        file.unlink()
    for repeat in range(sizes.repeats):
        # Alternate the order so neither side always runs on a warmer cache.
        for kind in ("raw", "store") if repeat % 2 == 0 else ("store", "raw"):
            path = directory / f"insert-{kind}-{repeat}.db"
            if kind == "raw":
                raw_rates.append(sizes.rows / _raw_insert(path, raw_batches))
            else:
                seconds, _ = trio.run(_store_insert, path, batches)
                store_rates.append(sizes.rows / seconds)
            for file in directory.glob(f"{path.name}*"):
                file.unlink()
    # The stalls, from one more run of the same size, not timed.
    _, lateness = trio.run(_store_insert, directory / "watched.db", batches, True)
    store = _spread(store_rates)
    raw = _spread(raw_rates)
    ratio = store["median"] / raw["median"]
    return {
        "rows": sizes.rows,
        "batch_rows": BATCH_ROWS,
        "repeats": sizes.repeats,
        "store_rows_per_s": store,
        "raw_rows_per_s": raw,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "loop_stall_p99_ms": _percentile(lateness, 0.99) * 1000,
        "loop_stall_max_ms": max(lateness) * 1000,
    }


def _history_rows(bots: int, snapshots: int) -> Iterator[tuple[Any, ...]]:
    for step in range(snapshots):
        at = T0 + step * SNAPSHOT_INTERVAL
        for user_id in range(1, bots + 1):
            yield _values(_row(user_id, at, step))


def _build_history_table(path: Path, bots: int, snapshots: int) -> float:
    """Fill the table fast: indexes dropped during the bulk insert, rebuilt after."""
    _fresh_schema(path)
    conn = _raw_connect(path)
    try:
        started = time.perf_counter()
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'bot_health_metrics' AND sql IS NOT NULL"
        ).fetchall()
        conn.execute("BEGIN")
        for name, _sql in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.executemany(_INSERT, _history_rows(bots, snapshots))
        for _name, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


async def _query_history(path: Path, sizes: Sizes) -> dict[str, Any]:
    rng = random.Random(7)
    newest = T0 + (sizes.snapshots_per_bot - 1) * SNAPSHOT_INTERVAL
    since = newest - DAY
    latencies: list[float] = []
    returned: list[int] = []
    async with trio.open_nursery() as nursery:
        store: Store = await nursery.start(Store(path).run)
        await store.history(1, since)  # warm the page cache like a running daemon's
        for _ in range(sizes.queries):
            user_id = rng.randint(1, sizes.bots)
            started = time.perf_counter()
            rows = await store.history(user_id, since)
            latencies.append(time.perf_counter() - started)
            returned.append(len(rows))
        latest: list[float] = []
        for _ in range(5):
            started = time.perf_counter()
            snapshot = await store.latest_snapshots()
            latest.append(time.perf_counter() - started)
        unhealthy: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            outages = await store.unhealthy_history(since)
            unhealthy.append(time.perf_counter() - started)
        await store.stop()
    p95 = _percentile(latencies, 0.95) * 1000
    return {
        "queries": sizes.queries,
        "rows_per_query": statistics.median(returned),
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": p95,
        "target_ms": TARGET_P95_MS,
        "meets_target": p95 <= TARGET_P95_MS,
        "latest_snapshots_ms": statistics.median(latest) * 1000,
        "latest_snapshots_bots": len(snapshot),
        "unhealthy_history_ms": statistics.median(unhealthy) * 1000,
        "unhealthy_history_rows": len(outages),
    }


def run(
    quick: bool = False,
    *,
    sizes: Sizes | None = None,
    directory: str | None = None,
) -> dict[str, Any]:
    """Run both measurements and return their figures (see ``markdown``)."""
    chosen = sizes or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-", dir=directory) as tmp:
        work = Path(tmp)
        inserts = _measure_inserts(work, chosen)
        table = work / "history.db"
        build_seconds = _build_history_table(table, chosen.bots, chosen.snapshots_per_bot)
        history = trio.run(_query_history, table, chosen)
    history = {
        "table_rows": chosen.bots * chosen.snapshots_per_bot,
        "bots": chosen.bots,
        "snapshots_per_bot": chosen.snapshots_per_bot,
        "build_seconds": build_seconds,
        **history,
    }
    return {"benchmark": "storage", "quick": quick, "insert": inserts, "history": history}


def markdown(results: dict[str, Any]) -> str:
    """The figures of ``run`` as a Markdown section."""
    ins = results["insert"]
    his = results["history"]

    def rate(spread: dict[str, float]) -> str:
        return f"median {spread['median']:,.0f} rows/s ({spread['min']:,.0f}–{spread['max']:,.0f})"

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines = [
        "### Storage (SQLite in WAL mode, synchronous=NORMAL, 3 indexes on the health table)",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| `Store.insert_snapshots`, {ins['batch_rows']:,}-row batches, each awaited until "
        f"committed ({ins['rows']:,} rows × {ins['repeats']}) | {rate(ins['store_rows_per_s'])} "
        "| |",
        "| raw `sqlite3` `executemany` + `COMMIT` of the same batches, same schema and pragmas "
        f"| {rate(ins['raw_rows_per_s'])} | |",
        f"| Store ÷ raw (medians) | {ins['ratio']:.0%} | ≥ {ins['target_ratio']:.0%}: "
        f"{verdict(ins['meets_target'])} |",
        "| event-loop stalls while the Store inserts (lateness of a 1 ms timer, one more run) "
        f"| p99 {ins['loop_stall_p99_ms']:.1f} ms, max {ins['loop_stall_max_ms']:.1f} ms | |",
        f"| `Store.history(user, last 24 h)` on {his['table_rows']:,} rows "
        f"({his['bots']:,} bots × {his['snapshots_per_bot']:,}); {his['rows_per_query']:.0f} "
        f"rows back, {his['queries']} queries | median {his['median_ms']:.2f} ms, "
        f"p95 {his['p95_ms']:.2f} ms | p95 ≤ {his['target_ms']:.0f} ms: "
        f"{verdict(his['meets_target'])} |",
        f"| `Store.latest_snapshots()` ({his['latest_snapshots_bots']:,} bots) "
        f"| {his['latest_snapshots_ms']:.1f} ms | |",
        f"| `Store.unhealthy_history(last 24 h)` ({his['unhealthy_history_rows']:,} rows) "
        f"| {his['unhealthy_history_ms']:.0f} ms | |",
        "",
        f"Building the {his['table_rows']:,}-row table (raw `executemany`, indexes rebuilt "
        f"after) took {his['build_seconds']:.1f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--rows", type=int, help="snapshot rows per insert repetition")
    parser.add_argument("--quick", action="store_true", help="fewer rows and repetitions")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rows is not None:
        if args.rows < BATCH_ROWS:
            parser.error(f"--rows must be >= {BATCH_ROWS}, got {args.rows}")
        sizes = replace(sizes, rows=args.rows)
    print(markdown(run(args.quick, sizes=sizes)), end="")


if __name__ == "__main__":
    main()
