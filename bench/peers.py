"""Over HTTP on loopback, side by side: botvisor, aiogram 3 and python-telegram-bot 22.

Each client runs in its own process against the simulated Bot API in another process
(``bench.simserver``), with the same bots, the same echo workload and 10 s long polls; see
:mod:`bench.loopback` for what is measured. botvisor also runs alone at fleet size (1,000
bots) for the fleet-scale figures over real sockets. The peers run in ``.venv-bench``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import fmt, main_python, spread, table
from bench.loopback import CLIENTS, Workload, measure

__all__ = ["markdown", "run"]

PEER_ORDER = ("botvisor", "aiogram", "aiogram-shared", "ptb")


def one_line(error: Exception) -> str:
    """A child's failure in one line: what happened and the exception it died of."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = [line for line in lines[1:] if "Error" in line or "Exception" in line]
    return lines[0].rstrip(":;") + (f" ({cause[-1]})" if cause else "") if lines else repr(error)


# Figures compared as a ratio to botvisor's of the same round.
RATIO_KEYS = ("startup_s", "rss_per_bot_kib", "updates_per_cpu_s", "cpu_ms_per_update")


def _repeat(
    kind: str, workload: Workload, runs: int, python: str | Path, work: Path
) -> dict[str, Any]:
    samples, errors = [], []
    for i in range(runs):
        try:
            samples.append(
                measure(CLIENTS[kind], workload, python=python, work_dir=work, seed=1 + i)
            )
        except RuntimeError as exc:
            errors.append(one_line(exc))
    return _summarise(kind, workload, samples, errors)


def _interleaved(
    kinds: tuple[str, ...],
    workload: Workload,
    rounds: int,
    pythons: dict[str, str | Path],
    work: Path,
) -> list[dict[str, Any]]:
    """``rounds`` rounds of one run of each client in turn (botvisor, aiogram, …, then
    botvisor again), so a slow spell of the machine falls on every client alike; each
    peer's figures are also given as ratios to botvisor's of the same round."""
    runs: dict[str, list[dict[str, Any] | None]] = {kind: [] for kind in kinds}
    errors: dict[str, list[str]] = {kind: [] for kind in kinds}
    for i in range(rounds):
        for kind in kinds:
            try:
                runs[kind].append(
                    measure(
                        CLIENTS[kind], workload, python=pythons[kind], work_dir=work, seed=1 + i
                    )
                )
            except RuntimeError as exc:
                errors[kind].append(one_line(exc))
                runs[kind].append(None)
    rows = []
    ours = runs.get("botvisor")
    for kind in kinds:
        row = _summarise(kind, workload, [s for s in runs[kind] if s is not None], errors[kind])
        if ours is not None and kind != "botvisor":
            ratios = {}
            for key in RATIO_KEYS:
                pairs = [
                    theirs[key] / mine[key]
                    for mine, theirs in zip(ours, runs[kind], strict=True)
                    if mine is not None and theirs is not None and mine.get(key)
                ]
                if pairs:
                    ratios[key] = spread(pairs)
            row["ratios"] = ratios
        rows.append(row)
    return rows


def _summarise(
    kind: str, workload: Workload, samples: list[dict[str, Any]], errors: list[str]
) -> dict[str, Any]:
    failed = {"failed_runs": len(errors), "error": errors[0] if errors else None}
    if not samples:
        return {"client": CLIENTS[kind].name, "bots": workload.bots, **failed}
    figures = {
        key: spread([s[key] for s in samples])
        for key in samples[0]
        if isinstance(samples[0][key], (int, float)) and not isinstance(samples[0][key], bool)
    }
    return {
        "client": CLIENTS[kind].name,
        "version": samples[0].get("version"),
        "bots": workload.bots,
        "updates": workload.updates,
        **figures,
        **failed,
    }


def run(
    quick: bool = False,
    *,
    peer_python: Path | None,
    peer_bots: int | None = None,
    fleet_bots: int = 1_000,
    runs: int | None = None,
    peer_error: str | None = None,
    kinds: tuple[str, ...] = PEER_ORDER,
    idle: float | None = None,
    rounds: int | None = None,
) -> dict[str, Any]:
    """The 1,000-bot botvisor fleet over HTTP (``runs`` runs, 3 by default), then every
    client on the peers' workload in ``rounds`` interleaved rounds (5 by default, in both
    profiles: 100 bots quick, 1,000 full).
    """
    runs = runs or 3
    rounds = rounds or 5
    idle = idle if idle is not None else (10.0 if quick else 30.0)
    peer_bots = peer_bots or (100 if quick else 1_000)
    results: dict[str, Any] = {
        "benchmark": "peers",
        "runs": runs,
        "rounds": rounds,
        "idle_window_s": idle,
        "peer_error": peer_error,
    }
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        work = Path(tmp)
        if fleet_bots:
            fleet = Workload(
                bots=fleet_bots, chats=1, messages=1 if quick else 3, idle_seconds=idle
            )
            results["fleet"] = _repeat("botvisor", fleet, runs, main_python(), work)
        workload = Workload(
            bots=peer_bots, chats=2, messages=5, idle_seconds=0.0 if quick else idle
        )
        results["workload"] = {
            "bots": workload.bots,
            "chats": workload.chats,
            "messages": workload.messages,
        }
        pythons: dict[str, str | Path] = {}
        for kind in kinds:
            client = CLIENTS[kind]
            if client.peer and peer_python is None:
                continue
            pythons[kind] = peer_python if client.peer and peer_python else main_python()
        chosen = tuple(kind for kind in kinds if kind in pythons)
        results["clients"] = _interleaved(chosen, workload, rounds, pythons, work)
    return results


def _row(r: dict[str, Any], baseline: dict[str, Any] | None) -> list[str]:
    def ratio(key: str) -> str:
        per_round = (r.get("ratios") or {}).get(key)
        if per_round is not None:
            if per_round["runs"] > 1 and per_round["min"] != per_round["max"]:
                return (
                    f" ×{per_round['median']:.2f} (×{per_round['min']:.2f}–{per_round['max']:.2f})"
                )
            return f" ×{per_round['median']:.2f}"
        if baseline is None or key not in r or key not in baseline:
            return ""
        return f" ×{r[key]['median'] / baseline[key]['median']:.2f}"

    name = r["client"] + (f" {r['version']}" if r.get("version") else "")
    if "startup_s" not in r:
        return [name, f"{r['bots']:,}", f"failed in every run: {r['error']}"] + [""] * 6
    if r.get("failed_runs"):
        name += f" ({r['failed_runs']} failed run{'s' if r['failed_runs'] > 1 else ''})"
    return [
        name,
        f"{r['bots']:,}",
        fmt(r["startup_s"], 2, " s") + ratio("startup_s"),
        fmt(r["rss_per_bot_kib"], 1, " KiB") + ratio("rss_per_bot_kib"),
        fmt(r.get("idle_cpu_us_per_bot_s"), 1, " µs") + ratio("idle_cpu_us_per_bot_s"),
        fmt(r["updates_per_cpu_s"], 0) + ratio("updates_per_cpu_s"),
        fmt(r["cpu_ms_per_update"], 2, " ms") + ratio("cpu_ms_per_update"),
        fmt(r["updates_per_s"], 0, "/s"),
        fmt(r["duplicates"], 0),
    ]


def _median_of(figure: Any) -> float:
    return float(figure["median"]) if isinstance(figure, dict) else float(figure or 0)


HEADER = [
    "client",
    "bots",
    "start-up (all polling)",
    "RSS per bot",
    "idle CPU per bot-second (10 s polls)",
    "updates per client CPU-second (per core)",
    "client CPU per update",
    "updates/s (wall)",
    "duplicates",
]


def markdown(results: dict[str, Any]) -> str:
    out = []
    fleet = results.get("fleet")
    if fleet is not None:
        per_bot = round(_median_of(fleet.get("updates")) / fleet["bots"])
        out += [
            "### Fleet scale over real HTTP on loopback (botvisor alone)",
            "",
            table(HEADER, [_row(fleet, None)]),
            f"The load phase gives each bot {per_bot} update{'s' if per_bot != 1 else ''}, so "
            "each update also pays a whole getUpdates round, its inbox commit and its "
            "confirmation, which a busier bot shares between up to 100 updates (see the peers' "
            "workload below).\n",
        ]
    clients = results.get("clients", [])
    w = results.get("workload", {})
    if clients:
        baseline = clients[0] if clients[0]["client"] == "botvisor" else None
        out += [
            "### Peers: the same echo workload over HTTP on loopback",
            "",
            f"{w['bots']:,} bots; each bot's {w['chats']} private chats receive {w['messages']} "
            f"messages at once ({w['bots'] * w['chats'] * w['messages']:,} updates); 10 s long "
            f"polls; {results.get('rounds', results['runs'])} interleaved rounds (each client "
            "once per round, botvisor first, fresh processes). ×N: ratio to botvisor's figure "
            "of the same round, median (min–max over the rounds); lower is better for time, "
            "memory and CPU, higher for updates per CPU-second.",
            "",
            table(HEADER, [_row(r, baseline) for r in clients]),
        ]
    if any(c["client"].startswith("aiogram 3 (one shared") for c in clients):
        out.append(
            "aiogram's shared session is given a connection limit of bots + 100: with aiohttp's "
            "default of 100, the bots' long polls hold every connection, replies wait for a "
            "poll to return, and at 1,000 bots the getMe calls queued behind the polls time "
            "out before aiogram finishes starting.\n"
        )
    for r in [results.get("fleet") or {}, *clients]:
        if r.get("error"):
            out.append(f"{r['client']}: {r['failed_runs']} run(s) failed: {r['error']}\n")
    if results.get("peer_error"):
        out.append(f"Peers not measured: {results['peer_error']}\n")
    return "\n".join(out)
