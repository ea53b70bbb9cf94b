"""One client process against the simulated Bot API in another, over HTTP on loopback.

The same measurement for botvisor and for its peers, each client in a fresh process:

1. start-up: from the client's "imported" line (its interpreter and libraries loaded) until
   every bot has a long poll waiting at the server;
2. memory: resident set size then, minus the RSS the client had after its imports, per bot;
3. idle CPU: the client's CPU seconds over ``idle_seconds`` of nothing but 10 s long polls,
   per bot-second;
4. throughput: every bot's ``chats`` private chats receive ``messages`` messages at once; the
   client's CPU seconds until every one was echoed, per handled update (and its inverse,
   updates per CPU-second: "per core"), and the wall-clock rate.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ChildProcess, cpu_seconds, main_python, rss_kib

__all__ = ["CLIENTS", "Client", "Workload", "measure"]


@dataclass(frozen=True)
class Client:
    """A client program: its module under ``bench`` and whether it runs in the peers' env."""

    name: str
    module: str
    peer: bool
    extra: tuple[str, ...] = ()


CLIENTS = {
    "botvisor": Client("botvisor", "bench.client_botvisor", peer=False),
    "aiogram": Client("aiogram 3 (a session per bot)", "bench.peer_aiogram", peer=True),
    "aiogram-shared": Client(
        "aiogram 3 (one shared session)",
        "bench.peer_aiogram",
        peer=True,
        extra=("--shared-session",),
    ),
    "ptb": Client("python-telegram-bot 22 (an Application per bot)", "bench.peer_ptb", peer=True),
}


@dataclass(frozen=True)
class Workload:
    bots: int
    chats: int  # private chats per bot in the throughput phase
    messages: int  # messages per chat, all posted at once
    idle_seconds: float  # 0: no idle measurement
    poll_timeout: int = 10
    startup_timeout: float = 600.0
    load_timeout: float = 300.0

    @property
    def updates(self) -> int:
        return self.bots * self.chats * self.messages


def measure(
    client: Client, workload: Workload, *, python: str | Path, work_dir: Path, seed: int = 1
) -> dict[str, Any]:
    """Run ``client`` once through the four phases; returns the raw figures."""
    sim = ChildProcess(
        [main_python(), "-m", "bench.simserver", "--bots", str(workload.bots), "--seed", str(seed)],
        log_path=work_dir / "simserver.log",
    )
    try:
        hello = sim.expect(120)
        tokens_file = work_dir / "tokens.json"
        tokens_file.write_text(json.dumps(hello["tokens"]))
        argv = [
            str(python),
            "-m",
            client.module,
            "--api",
            hello["url"],
            "--tokens-file",
            str(tokens_file),
            "--poll-timeout",
            str(workload.poll_timeout),
            *client.extra,
        ]
        log = work_dir / f"{client.module.rsplit('.', 1)[1]}.log"
        with ChildProcess(argv, log_path=log) as proc:
            return _phases(sim, proc, workload)
    finally:
        sim.close()


def _phases(sim: ChildProcess, proc: ChildProcess, workload: Workload) -> dict[str, Any]:
    imported = proc.expect(120)
    started = time.perf_counter()
    while (waiting := sim.request({"cmd": "stats"})["waiting_polls"]) < workload.bots:
        if time.perf_counter() - started > workload.startup_timeout:
            raise RuntimeError(
                f"only {waiting} of {workload.bots} bots were polling after "
                f"{workload.startup_timeout:g} s"
            )
        if proc.proc.poll() is not None:
            proc.expect(1)  # raises with the client's stderr
        time.sleep(0.02)
    startup = time.perf_counter() - started
    time.sleep(1.0)  # let the first polls' bookkeeping settle before sampling
    rss_ready = rss_kib(proc.pid)
    result: dict[str, Any] = {
        "version": imported.get("version"),
        "startup_s": startup,
        "rss_imported_kib": imported["rss_kib"],
        "rss_ready_kib": rss_ready,
        "rss_per_bot_kib": (rss_ready - imported["rss_kib"]) / workload.bots,
    }
    if workload.idle_seconds > 0:
        calls_before = sim.request({"cmd": "stats"})["calls"]
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(workload.idle_seconds)
        idle_cpu = cpu_seconds(proc.pid) - cpu_before
        result["idle_cpu_us_per_bot_s"] = idle_cpu / (workload.bots * workload.idle_seconds) * 1e6
        result["idle_calls"] = sim.request({"cmd": "stats"})["calls"] - calls_before
    if workload.updates:
        replies_before = sim.request({"cmd": "stats"})["replies"]
        cpu_before = cpu_seconds(proc.pid)
        sim_cpu_before = cpu_seconds(sim.pid)
        posted = sim.request(
            {"cmd": "post", "chats": workload.chats, "messages": workload.messages}
        )["posted"]
        done = sim.request(
            {
                "cmd": "wait",
                "replies": replies_before + posted,
                "timeout": workload.load_timeout,
            },
            timeout=workload.load_timeout + 60,
        )
        cpu = cpu_seconds(proc.pid) - cpu_before
        handled = done["replies"] - replies_before
        if handled < posted:
            raise RuntimeError(
                f"only {handled} of {posted} messages were answered within "
                f"{workload.load_timeout:g} s"
            )
        report = sim.request({"cmd": "report"})
        result.update(
            {
                "updates": posted,
                "load_wall_s": done["elapsed"],
                "updates_per_s": posted / done["elapsed"],
                "client_cpu_s": cpu,
                "updates_per_cpu_s": posted / cpu if cpu > 0 else float("inf"),
                "cpu_ms_per_update": cpu / posted * 1000,
                "server_cores_busy": (cpu_seconds(sim.pid) - sim_cpu_before) / done["elapsed"],
                "duplicates": report["duplicates"],
                "rss_after_load_kib": rss_kib(proc.pid),
            }
        )
    return result
