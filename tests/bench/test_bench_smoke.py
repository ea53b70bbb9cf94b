"""Every benchmark at a tiny size, so none of them rots; the real runs are ``make bench``.

These assert that each benchmark produces its figures and its section, and the few things
a tiny run can already show (every message answered, a revoked tenant's loss confined to it).
Speed is not asserted here: speed claims live in docs/BENCHMARKS.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import chaos, fleet, limiter, memory, peers, pipeline, shutdown, throughput
from bench.__main__ import render
from bench.chaos import Timeline
from bench.common import spread
from bench.limiter import jain_index, worst_window
from bench.notes import notes, summary

TINY = Timeline(bots=3, chats=1, period=5.0, warmup=10.0, fault=40.0, after=10.0, drain=1_000.0)


def test_jain_index_is_one_for_equal_shares_and_one_over_n_when_one_takes_all() -> None:
    assert jain_index([7, 7, 7, 7]) == 1.0
    assert jain_index([12, 0, 0, 0]) == 0.25
    assert jain_index([1, 3]) == pytest.approx(16 / 20)


def test_worst_window_counts_a_half_open_second_starting_anywhere() -> None:
    times = [0.0, 0.5, 0.99, 1.0, 1.2, 1.3, 1.4, 5.0]
    # [0.5, 1.5) holds 0.5, 0.99, 1.0, 1.2, 1.3, 1.4: six grants, more than any whole second.
    assert worst_window(times) == 6
    assert worst_window(times, since=1.0) == 4
    assert worst_window([], since=0.0) == 0


def test_spread_gives_median_and_range() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    with pytest.raises(ValueError, match="at least one"):
        spread([])


def test_limiter_benchmark_keeps_the_global_rate_and_is_fair() -> None:
    results = limiter.run(tenants=30, seconds=30.0)
    for shape in ("equal", "skewed"):
        r = results[shape]
        # 25 a second plus the initial burst of 25 over 30 s, at most.
        assert r["grants"] <= 25 * 30 + 25
        assert r["worst_window_after_1s"] <= 25
        assert r["jain"] > 0.95
    assert "Jain" in limiter.markdown(results)


def test_chaos_baseline_answers_everything_once() -> None:
    r = chaos.run_scenario("none", TINY)
    assert r["messages"] > 0
    assert r["answered_share"] == 1.0
    assert r["duplicates"] == 0
    assert r["latency_p50_s"] is not None


def test_chaos_revoked_tenant_loses_only_its_own_messages() -> None:
    r = chaos.run_scenario("revoked", TINY)
    assert r["answered_share"] < 1.0
    assert r["healthy_answered_share"] == 1.0
    assert r["troubled_at_end"] == 1  # the revoked bot, suspended


@pytest.mark.parametrize("name", [n for n in chaos.CHAOS_SCENARIOS if n != "revoked"])
def test_every_chaos_scenario_runs_and_recovers(name: str) -> None:
    r = chaos.run_scenario(name, TINY)
    assert r["healthy_answered_share"] == 1.0, r
    assert r["recovery_s"] is not None


def test_chaos_section_and_notes_render() -> None:
    results = chaos.run(names=("revoked",), timeline=TINY, seeds=(1, 2))
    text = chaos.markdown(results)
    assert "`revoked`" in text
    assert "answered (healthy tenants)" in text
    assert "chaos:" in summary({"chaos": results})


def test_fleet_and_memory_benchmarks_at_twenty_bots() -> None:
    results = fleet.run(sizes=(20,), runs=1, idle=0.5, profile_bots=0)
    figures = results["sizes"]["20"]
    assert figures["startup_s"]["median"] > 0
    assert figures["rss_per_bot_kib"]["runs"] == 1
    # The fleet's totals over HTTP: 20 bots by status (4 statuses), breakers by state...
    assert figures["scrape_samples"]["median"] > 40
    assert figures["lateness_wakeups"]["median"] > 0
    assert figures["lateness_p99_ms"]["median"] >= figures["lateness_p50_ms"]["median"]
    text = fleet.markdown(results)
    assert "| 20 |" in text
    assert "`/metrics` scrape" in text
    mem = memory.run(bots=20)
    assert mem["total_kib_per_bot"] > 0
    assert "tracemalloc" in memory.markdown(mem)


def test_throughput_benchmark_handles_every_update() -> None:
    results = throughput.run(bots=3, chats=2, messages=2, runs=1, profile=False)
    assert results["updates"]["median"] == 12
    assert results["duplicates"]["median"] == 0
    assert "12 updates" in throughput.markdown(results)


def test_loopback_benchmark_with_botvisor_over_http() -> None:
    results = peers.run(peer_python=None, peer_bots=3, fleet_bots=0, runs=1, idle=0.0)
    (ours,) = results["clients"]
    assert ours["client"] == "botvisor"
    assert ours["updates"]["median"] == 3 * 2 * 5
    assert ours["duplicates"]["median"] == 0
    assert "Peers: the same echo workload" in peers.markdown(results)


def test_shutdown_benchmark_stops_every_poll_and_exits_zero() -> None:
    results = shutdown.run(bots=5, runs=1)
    assert results["exit_codes"] == [0]
    assert results["polls_waiting_at_signal"]["median"] == 5
    assert results["polls_after_signal"]["median"] == 0
    assert results["polls_waiting_after"]["median"] == 0
    assert "SIGTERM to exit" in shutdown.markdown(results)


def test_pipeline_benchmark_measures_our_stack() -> None:
    results = pipeline.run(peer_python=None, calls=300, repeats=1, peer_error="skipped")
    assert results["ours"]["net_us"]["median"] > 0
    text = pipeline.markdown(results)
    assert "RequestPipeline" in text
    assert "Peer stack not measured: skipped" in text


def test_the_document_has_targets_results_and_notes() -> None:
    results: dict[str, Any] = {
        "pipeline": {
            "ours": {"net_us": spread([30.0]), "gross_us": spread([31.0])},
            "peer": None,
            "peer_error": "skipped",
            "target_us": 8.0,
            "calls": 1,
            "repeats": 1,
        }
    }
    text = render(results, {"pipeline": pipeline.markdown}, {}, {"pipeline": 1.0}, 60.0, True, "x")
    assert text.startswith("# botvisor benchmarks")
    assert "| pipeline overhead ≤ 8 µs a call | 30.00 µs | ≤ 8 µs | **missed** |" in text
    assert "**Pipeline overhead.**" in text
    assert "**Pipeline overhead.**" not in notes({"pipeline": {"ours": {"net_us": spread([5.0])}}})


def test_a_missed_cpu_target_brings_the_http_pool_measurement_with_the_cpu_note() -> None:
    clients = [{"client": "botvisor", "cpu_ms_per_update": spread([1.6])}]
    text = notes({"peers": {"clients": clients}})
    assert "**CPU per update.**" in text
    assert "**The fleet's HTTP pool**" in text
    met = notes({"peers": {"clients": [{**clients[0], "cpu_ms_per_update": spread([0.9])}]}})
    assert "**The fleet's HTTP pool**" not in met


def test_a_start_up_cut_off_by_the_cap_is_shown_as_longer_than_the_cap() -> None:
    sizes = {
        "10000": {
            "startup_s": spread([60.0]),
            "daemon_started_s": spread([60.0]),
            "rss_per_bot_kib": spread([40.0]),
            "rss_ready_kib": spread([200_000.0]),
            "shutdown_s": spread([5.0]),
            "polling_bots": spread([4_000.0]),
            "capped_s": spread([60.0]),
        }
    }
    results = {"benchmark": "fleet", "idle_window_s": 10.0, "sizes": sizes}
    text = fleet.markdown(results)
    assert "**> 60 s**: 4,000 of 10,000 polling" in text
    assert "under 512 MiB" not in text  # no total to compare when only part started
    assert "> 60 s (the benchmark stopped waiting) | ≤ 3 s | **missed**" in summary(
        {"fleet": results}
    )


def test_a_client_that_fails_every_run_is_shown_with_its_error_not_dropped() -> None:
    error = RuntimeError(
        "python -m bench.peer_aiogram exited with 1; its stderr ends:\n"
        '  File "aiohttp.py", line 174, in make_request\n'
        "aiogram.exceptions.TelegramNetworkError: HTTP Client says - Request timeout error\n"
        "Unclosed client session"
    )
    line = peers.one_line(error)
    assert line == (
        "python -m bench.peer_aiogram exited with 1; its stderr ends "
        "(aiogram.exceptions.TelegramNetworkError: HTTP Client says - Request timeout error)"
    )
    results = {
        "runs": 3,
        "workload": {"bots": 10, "chats": 2, "messages": 5},
        "clients": [{"client": "aiogram 3", "bots": 10, "failed_runs": 3, "error": line}],
    }
    text = peers.markdown(results)
    assert f"| aiogram 3 | 10 | failed in every run: {line} |" in text
    assert "aiogram 3: 3 run(s) failed" in text


def test_peer_runs_interleave_by_round_and_report_per_round_ratios(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A machine that slows down over the run: a later round is slower for every client.
    order: list[str] = []

    def fake_measure(client: Any, workload: Any, **kwargs: Any) -> dict[str, Any]:
        order.append(client.module + " ".join(client.extra))
        slow = 1.0 + len(order) / 10
        ours = client.name == "botvisor"
        cpu = (2.0 if ours else 1.0) * slow
        return {
            "startup_s": 1.0 * slow,
            "rss_per_bot_kib": 50.0 if ours else 100.0,
            "updates_per_cpu_s": 1000 / cpu,
            "cpu_ms_per_update": cpu,
            "updates_per_s": 10.0,
            "duplicates": 0,
        }

    monkeypatch.setattr(peers, "measure", fake_measure)
    results = peers.run(
        peer_python=tmp_path / "python",
        fleet_bots=0,
        kinds=("botvisor", "aiogram", "ptb"),
        rounds=5,
    )
    assert order == ["bench.client_botvisor", "bench.peer_aiogram", "bench.peer_ptb"] * 5
    ours, aiogram, _ptb = results["clients"]
    assert "ratios" not in ours
    rss = aiogram["ratios"]["rss_per_bot_kib"]
    assert rss == {"median": 2.0, "min": 2.0, "max": 2.0, "runs": 5}
    # The peer ran 0.1 "later" than botvisor in each round: its ratio shows that, not the
    # slowdown across rounds.
    cpu = aiogram["ratios"]["cpu_ms_per_update"]
    assert cpu["runs"] == 5
    assert 0.5 < cpu["min"] <= cpu["median"] <= cpu["max"] < 0.55
    text = peers.markdown(results)
    assert "5 interleaved rounds" in text
    assert "×2.00" in text
    verdicts = summary({"peers": results})
    assert "in every round" in verdicts
