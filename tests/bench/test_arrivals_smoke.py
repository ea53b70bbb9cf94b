"""The arrivals benchmark at a tiny size, so it does not rot; the real runs are ``make bench``.

Two real processes (the simulated server, the daemon) over loopback HTTP. What is asserted is
what a tiny run can show without timing: every reply arrived and was counted, and the
section and its target row render. The 30-a-second claim is the benchmark's, not this test's.
"""

from __future__ import annotations

from bench import arrivals
from bench.notes import summary


def test_the_arrivals_benchmark_counts_every_send_and_renders() -> None:
    settings = (("defaults", arrivals.DEFAULTS.global_rps, arrivals.DEFAULTS.global_burst),)
    results = arrivals.run(bots=2, chats=4, runs=1, settings=settings)
    (row,) = results["rows"]
    assert row["runs"] and 1 <= row["runs"][0] <= 8
    assert row["worst_window"]["runs"] == 1
    assert "Global limit at the receiving server" in arrivals.markdown(results)
    assert "sendMessage arrivals at the server" in summary({"arrivals": results})
