"""The storage benchmark runs end to end at a tiny size (its figures are for bench/, not here)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import trio

from bench.store import (
    Sizes,
    _raw_insert,
    _snapshot_batches,
    _store_insert,
    _values,
    markdown,
    run,
)

TINY = Sizes(rows=2_000, repeats=1, bots=20, snapshots_per_bot=100, queries=10)


def test_the_storage_benchmark_runs_and_reports(tmp_path: Path) -> None:
    results = run(quick=True, sizes=TINY, directory=str(tmp_path))

    insert = results["insert"]
    assert insert["rows"] == 2_000
    assert insert["store_rows_per_s"]["median"] > 0
    assert insert["raw_rows_per_s"]["median"] > 0
    for spread in (insert["store_rows_per_s"], insert["raw_rows_per_s"]):
        assert spread["min"] <= spread["median"] <= spread["max"]
    assert insert["target_ratio"] == 0.5
    assert insert["loop_stall_max_ms"] >= insert["loop_stall_p99_ms"] >= 0
    history = results["history"]
    assert history["table_rows"] == 2_000
    # 100 snapshots 300 s apart all fall within the last 24 hours.
    assert history["rows_per_query"] == 100
    assert history["latest_snapshots_bots"] == 20
    # Every tenth bot is unhealthy: bots 10 and 20.
    assert history["unhealthy_history_rows"] == 2 * 100
    assert history["p95_ms"] >= history["median_ms"] > 0

    text = markdown(results)
    # The verdict row follows the measured ratio: too slow a Store is reported as missed.
    slow = {**insert, "ratio": 0.25, "meets_target": False}
    fast = {**insert, "ratio": 0.75, "meets_target": True}
    assert "| Store ÷ raw (medians) | 25% | ≥ 50%: **missed** |" in markdown(
        {**results, "insert": slow}
    )
    assert "| Store ÷ raw (medians) | 75% | ≥ 50%: met |" in markdown({**results, "insert": fast})
    assert insert["meets_target"] is (insert["ratio"] >= 0.5)
    assert "| Store ÷ raw (medians) |" in text
    assert "`Store.history(user, last 24 h)` on 2,000 rows" in text
    # Temporary files are cleaned up.
    assert list(tmp_path.iterdir()) == []


def test_both_timed_inserts_commit_every_row_they_are_timed_for(tmp_path: Path) -> None:
    # A rate is only real if the rows it counts are in the file when the clock stops: the
    # Store's batches are each awaited until committed, the raw ones committed explicitly.
    batches = _snapshot_batches(2_500)
    assert [len(b) for b in batches] == [1_000, 1_000, 500]
    raw_seconds = _raw_insert(tmp_path / "raw.db", [[_values(r) for r in b] for b in batches])
    store_seconds, _ = trio.run(_store_insert, tmp_path / "store.db", batches)
    assert raw_seconds > 0 and store_seconds > 0
    contents = []
    for name in ("raw.db", "store.db"):
        with closing(sqlite3.connect(tmp_path / name)) as conn:
            rows = conn.execute(
                "SELECT user_id, recorded_at, total_requests FROM bot_health_metrics "
                "ORDER BY user_id, recorded_at"
            ).fetchall()
        assert len(rows) == 2_500, name
        contents.append(rows)
    assert contents[0] == contents[1]  # the same work on both sides


def test_the_usage_benchmark_runs_and_reports(tmp_path: Path) -> None:
    from bench import usage

    results = usage.run(quick=True, directory=str(tmp_path), sample_bots=1)
    assert results["hot_path_us"]["median"] > 0
    assert (
        results["instrumented"]["per_update_median"]
        > results["instrumented"]["per_call_median"]
        > 0
    )
    # Sketch-sized traffic did cross into sketches (hour, day and month, chats and users).
    assert results["sketch"]["sketches"] >= 6
    assert results["disk"]["fleet_bytes"] > results["disk"]["sample_bytes"] > 0
    text = usage.markdown(results)
    assert "10,000 bots × 30 days" in text and "µs per update" in text
    assert "Prometheus instruments" in text and "Sketch-sized traffic" in text
