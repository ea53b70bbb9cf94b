"""Shutdown at scale: SIGTERM to a daemon whose bots all long-poll over loopback HTTP.

The simulated Bot API runs in one process (``bench.simserver``), the real daemon in another
(``bench.client_botvisor`` with its admin API on: the daemon as ``botvisor run`` builds it,
with ``graceful_timeout`` 10 s and 30 s long polls). Once every bot has a long poll waiting
at the server, the benchmark sends SIGTERM and measures until the process has exited, and
asks the server how many ``getUpdates`` arrived after the signal (none should: every long
poll is cancelled when the shutdown begins and no bot starts another).

Target (the issue): exit within ``graceful_timeout`` + 2 s at 10,000 bots. The quick profile
runs 2,000 bots, the full one 10,000.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ChildProcess, fmt, main_python, spread, table

__all__ = ["GRACE", "markdown", "run"]

GRACE = 10.0
POLL_TIMEOUT = 30


def _once(bots: int, work: Path, seed: int) -> dict[str, Any]:
    sim = ChildProcess(
        [main_python(), "-m", "bench.simserver", "--bots", str(bots), "--seed", str(seed)],
        log_path=work / "shutdown-sim.log",
    )
    try:
        hello = sim.expect(120)
        tokens = work / "tokens.json"
        tokens.write_text(json.dumps(hello["tokens"]))
        argv = [main_python(), "-m", "bench.client_botvisor", "--api", hello["url"]]
        argv += ["--tokens-file", str(tokens), "--poll-timeout", str(POLL_TIMEOUT)]
        argv += ["--graceful-timeout", str(GRACE), "--admin"]
        with ChildProcess(argv, log_path=work / "shutdown-daemon.log") as daemon:
            daemon.expect(120)  # imported
            daemon.expect(600)  # started
            began = time.perf_counter()
            while (waiting := sim.request({"cmd": "stats"})["waiting_polls"]) < bots:
                if time.perf_counter() - began > 600:
                    raise RuntimeError(f"only {waiting} of {bots} bots were polling after 600 s")
                time.sleep(0.05)
            time.sleep(1.0)
            before = sim.request({"cmd": "stats"})
            signalled = time.perf_counter()
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                code = daemon.proc.wait(GRACE + 120)
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"the daemon had not exited {GRACE + 120:g} s after SIGTERM"
                ) from None
            exit_s = time.perf_counter() - signalled
        after = sim.request({"cmd": "stats"})
    finally:
        sim.close()
    return {
        "exit_s": exit_s,
        "exit_code": code,
        "polls_waiting_at_signal": before["waiting_polls"],
        "polls_after_signal": after["by_method"].get("getUpdates", 0)
        - before["by_method"].get("getUpdates", 0),
        "polls_waiting_after": after["waiting_polls"],
    }


def run(quick: bool = False, *, bots: int | None = None, runs: int | None = None) -> dict[str, Any]:
    bots = bots or (2_000 if quick else 10_000)
    runs = runs or (1 if quick else 2)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        samples = [_once(bots, Path(tmp), seed=1 + i) for i in range(runs)]
    return {
        "benchmark": "shutdown",
        "bots": bots,
        "grace_s": GRACE,
        "poll_timeout_s": POLL_TIMEOUT,
        "exit_codes": sorted({s["exit_code"] for s in samples}),
        **{key: spread([s[key] for s in samples]) for key in samples[0] if key != "exit_code"},
    }


def markdown(results: dict[str, Any]) -> str:
    r = results
    target = r["grace_s"] + 2
    met = r["exit_s"]["max"] <= target and r["polls_after_signal"]["max"] == 0
    row = [
        f"{r['bots']:,}",
        fmt(r["exit_s"], 2, " s"),
        ", ".join(str(c) for c in r["exit_codes"]),
        fmt(r["polls_waiting_at_signal"], 0),
        fmt(r["polls_after_signal"], 0),
    ]
    return "\n".join(
        [
            "### Shutdown at scale: SIGTERM with every bot long-polling over loopback HTTP",
            "",
            f"The daemon in its own process (admin API on, `graceful_timeout` "
            f"{r['grace_s']:g} s, {r['poll_timeout_s']} s long polls), the simulated Bot API in "
            "another; from SIGTERM until the process exited. Target: exit within "
            f"`graceful_timeout` + 2 s ({target:g} s), no getUpdates after the signal: "
            f"{'met' if met else '**missed**'}.",
            "",
            table(
                [
                    "bots",
                    "SIGTERM to exit",
                    "exit code",
                    "long polls waiting at the signal",
                    "getUpdates after the signal",
                ],
                [row],
            ),
        ]
    )
