"""Webhooks side by side with their baselines, in one run: ingest, echo and 100,000 bots.

1. **Ingest** over loopback: a load generator (``bench.webhook_load``, its own process, raw
   keep-alive sockets, 40 connections) POSTs the same realistic updates to (a) the floor, a
   bare ASGI app on Hypercorn/Trio that parses each body and answers 200
   (``bench.webhook_floor``), and (b) botvisor's daemon (``bench.webhook_server``: the
   receiver, the inbox commit before each 200, the bots' handling after it, with a handler
   that sends nothing). The runs alternate (floor, botvisor, floor, …) so a noisy moment hits
   both; each figure is the server process's CPU seconds per delivery until every delivery is
   handled, and the ratio is taken per pair.
2. **Echo, 1,000 bots × 1 update**: the simulated Bot API in its own process
   (``bench.simserver``) with each bot's one message, delivered (a) by pushing to the
   daemon's webhook listener, the bots in webhook mode, and (b) by getUpdates, the same bots
   polling; the daemon's CPU seconds from the post until every reply arrived, per update.
   Alternating, a fresh simulator each run.
3. **100,000 dormant webhook bots** (``bench.webhook_fleet``): start-up with unchanged
   registrations, Bot API calls at start-up, RSS per bot, idle CPU.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import webhook_fleet
from bench.common import ChildProcess, cpu_seconds, fmt, main_python, spread, table

__all__ = ["TARGETS", "markdown", "run"]

TARGETS = {"ingest_ratio": 1.5}
MASTER = "bench-webhook-master"
SIM_FIRST_BOT_ID = 6_000_000_001  # bench.simserver's tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _load(port: int, bots: int, deliveries: int) -> dict[str, Any]:
    argv = [main_python(), "-m", "bench.webhook_load", "--port", str(port), "--bots", str(bots)]
    argv += ["--master", MASTER, "--deliveries", str(deliveries), "--connections", "40"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["statuses"] != {"200": deliveries}:
        raise RuntimeError(f"webhook load: not every delivery answered 200: {result}")
    return result


def _ingest_floor(work: Path, deliveries: int) -> dict[str, float]:
    with ChildProcess(
        [main_python(), "-m", "bench.webhook_floor"], log_path=work / "floor.log"
    ) as floor:
        port = int(floor.expect(60)["port"])
        before = cpu_seconds(floor.pid)
        load = _load(port, 100, deliveries)
        cpu = cpu_seconds(floor.pid) - before
    return {"cpu_ms": cpu / deliveries * 1000, "p99_ms": load["p99_ms"], "p50_ms": load["p50_ms"]}


def _ingest_botvisor(work: Path, deliveries: int) -> dict[str, float]:
    port = _free_port()
    argv = [main_python(), "-m", "bench.webhook_server", "--bots", "100", "--port", str(port)]
    argv += ["--master", MASTER, "--handler", "silent", "--prepare"]
    with ChildProcess(argv, log_path=work / "webhook-server.log") as server:
        ready = server.expect(300)
        if ready["calls"]:
            raise RuntimeError(f"a start with current registrations called Telegram: {ready}")
        before = cpu_seconds(server.pid)
        load = _load(port, 100, deliveries)
        handled = server.request(
            {"cmd": "wait_handled", "count": deliveries, "timeout": 120}, timeout=180
        )["handled"]
        cpu = cpu_seconds(server.pid) - before
    if handled < deliveries:
        raise RuntimeError(f"botvisor handled {handled} of {deliveries} deliveries")
    return {"cpu_ms": cpu / deliveries * 1000, "p99_ms": load["p99_ms"], "p50_ms": load["p50_ms"]}


def _echo(work: Path, bots: int, mode: str) -> float:
    """Daemon CPU ms per handled update: ``bots`` bots, one message each, in ``mode``."""
    sim_argv = [main_python(), "-m", "bench.simserver", "--bots", str(bots), "--push-webhooks"]
    with ChildProcess(sim_argv, log_path=work / f"sim-{mode}.log") as sim:
        url = sim.expect(60)["url"]
        port = _free_port()
        argv = [main_python(), "-m", "bench.webhook_server", "--bots", str(bots)]
        argv += ["--port", str(port), "--master", MASTER, "--mode", mode, "--api-base", url]
        argv += ["--first-bot-id", str(SIM_FIRST_BOT_ID)]
        with ChildProcess(argv, log_path=work / f"echo-{mode}.log") as server:
            server.expect(300)
            # Ready to receive: every webhook registered, or every bot's long poll waiting.
            for _ in range(6000):
                stats = sim.request({"cmd": "stats"})
                ready = stats["webhooks"] if mode == "webhook" else stats["waiting_polls"]
                if ready >= bots:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"{mode}: only {ready} of {bots} bots ready")
            before = cpu_seconds(server.pid)
            sim.request({"cmd": "post", "chats": 1, "messages": 1})
            replies = sim.request({"cmd": "wait", "replies": bots, "timeout": 300}, timeout=360)
            cpu = cpu_seconds(server.pid) - before
    if replies["replies"] < bots:
        raise RuntimeError(f"{mode}: {replies['replies']} of {bots} replies")
    return cpu / bots * 1000


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 3 if quick else 5
    deliveries = 4_000 if quick else 10_000
    echo_bots = 1_000
    results: dict[str, Any] = {"benchmark": "webhooks", "deliveries": deliveries}
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        work = Path(tmp)
        floors, ours = [], []
        for _ in range(rounds):
            floors.append(_ingest_floor(work, deliveries))
            ours.append(_ingest_botvisor(work, deliveries))
        results["ingest"] = {
            "floor_cpu_ms": spread([f["cpu_ms"] for f in floors]),
            "botvisor_cpu_ms": spread([o["cpu_ms"] for o in ours]),
            "ratio": spread([o["cpu_ms"] / f["cpu_ms"] for f, o in zip(floors, ours, strict=True)]),
            "floor_p99_ms": spread([f["p99_ms"] for f in floors]),
            "botvisor_p99_ms": spread([o["p99_ms"] for o in ours]),
            "botvisor_p50_ms": spread([o["p50_ms"] for o in ours]),
        }
        webhook_runs, polling_runs = [], []
        for _ in range(2 if quick else 3):
            webhook_runs.append(_echo(work, echo_bots, "webhook"))
            polling_runs.append(_echo(work, echo_bots, "polling"))
        results["echo"] = {
            "bots": echo_bots,
            "webhook_cpu_ms": spread(webhook_runs),
            "polling_cpu_ms": spread(polling_runs),
            "ratio": spread([w / p for w, p in zip(webhook_runs, polling_runs, strict=True)]),
        }
    results["fleet"] = webhook_fleet.run(quick)
    return results


def markdown(results: dict[str, Any]) -> str:
    ingest, echo = results["ingest"], results["echo"]
    per_core = {
        k: (1000 / v if k in ("median", "min", "max") else v)
        for k, v in ingest["botvisor_cpu_ms"].items()
    }
    floor_per_core = {
        k: (1000 / v if k in ("median", "min", "max") else v)
        for k, v in ingest["floor_cpu_ms"].items()
    }
    lines = [
        f"**Ingest**, {results['deliveries']:,} deliveries a run over 40 keep-alive "
        "connections (runs alternate; CPU of the server process until every delivery was "
        f"handled). Target: botvisor ≤ {TARGETS['ingest_ratio']:g}× the floor's CPU per "
        "delivery.\n",
        table(
            ["server", "CPU per delivery", "deliveries per CPU-second", "p50 / p99 to the 200"],
            [
                [
                    "floor: bare ASGI app on Hypercorn/Trio (parse, answer)",
                    fmt(ingest["floor_cpu_ms"], 3, " ms"),
                    fmt(floor_per_core, 0),
                    f"– / {fmt(ingest['floor_p99_ms'], 1, ' ms')}",
                ],
                [
                    "botvisor: receiver + inbox commit before the 200 + handling",
                    fmt(ingest["botvisor_cpu_ms"], 3, " ms"),
                    fmt(per_core, 0),
                    f"{fmt(ingest['botvisor_p50_ms'], 1, ' ms')} / "
                    f"{fmt(ingest['botvisor_p99_ms'], 1, ' ms')}",
                ],
                ["ratio, per pair of runs", fmt(ingest["ratio"], 2, "×"), "", ""],
            ],
        ),
        f"**Echo**, {echo['bots']:,} bots × 1 update, the daemon's CPU from the post until "
        "every reply arrived (the simulated Bot API in its own process; runs alternate):\n",
        table(
            ["delivery", "daemon CPU per handled update"],
            [
                ["webhook (pushed; dormant bots woken)", fmt(echo["webhook_cpu_ms"], 2, " ms")],
                ["polling (getUpdates)", fmt(echo["polling_cpu_ms"], 2, " ms")],
                ["webhook ÷ polling, per pair", fmt(echo["ratio"], 2, "×")],
            ],
        ),
        "**Dormant webhook bots**:\n",
        webhook_fleet.markdown(results["fleet"]),
    ]
    return "\n".join(lines)
