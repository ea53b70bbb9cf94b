"""The storage benchmark runs end to end at a tiny size (its figures are for bench/, not here)."""

from __future__ import annotations

from pathlib import Path

from bench.store import Sizes, markdown, run

TINY = Sizes(rows=2_000, repeats=1, bots=20, snapshots_per_bot=100, queries=10)


def test_the_storage_benchmark_runs_and_reports(tmp_path: Path) -> None:
    results = run(quick=True, sizes=TINY, directory=str(tmp_path))

    insert = results["insert"]
    assert insert["rows"] == 2_000
    assert insert["store_rows_per_s"]["median"] > 0
    assert insert["raw_rows_per_s"]["median"] > 0
    assert insert["ratio"] == (
        insert["store_rows_per_s"]["median"] / insert["raw_rows_per_s"]["median"]
    )
    history = results["history"]
    assert history["table_rows"] == 2_000
    # 100 snapshots 300 s apart all fall within the last 24 hours.
    assert history["rows_per_query"] == 100
    assert history["latest_snapshots_bots"] == 20
    # Every tenth bot is unhealthy: bots 10 and 20.
    assert history["unhealthy_history_rows"] == 2 * 100
    assert history["p95_ms"] >= history["median_ms"] > 0

    text = markdown(results)
    assert "| Store ÷ raw (medians) |" in text
    assert "`Store.history(user, last 24 h)` on 2,000 rows" in text
    # Temporary files are cleaned up.
    assert list(tmp_path.iterdir()) == []
