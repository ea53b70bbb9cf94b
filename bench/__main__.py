"""``python -m bench [--full]``: run every benchmark and rewrite docs/BENCHMARKS.md.

The quick profile (``make bench``) takes a few minutes on 2 cores; ``--full`` (``make
bench-full``) runs the fleet and peers at full size with more repetitions. The peers run in
their own environment, ``.venv-bench``, built on first use from bench/requirements-peers.txt.
``--only fleet,peers`` runs some sections and prints them instead of rewriting the document.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    arrivals,
    chaos,
    dashboard,
    fleet,
    limiter,
    memory,
    peers,
    pipeline,
    shutdown,
    throughput,
    usage,
    webhooks,
)
from bench import store as storage_bench
from bench.common import ROOT, machine_facts
from bench.notes import notes, summary
from bench.peers import one_line
from bench.peers_env import ensure_peer_python

__all__ = ["SECTIONS", "main"]

SECTIONS = (
    "fleet",
    "webhooks",
    "memory",
    "peers",
    "shutdown",
    "throughput",
    "pipeline",
    "limiter",
    "arrivals",
    "chaos",
    "storage",
    "usage",
    "dashboard",
)
DOC = ROOT / "docs" / "BENCHMARKS.md"
RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "fleet": fleet.markdown,
    "webhooks": webhooks.markdown,
    "memory": memory.markdown,
    "peers": peers.markdown,
    "shutdown": shutdown.markdown,
    "throughput": throughput.markdown,
    "pipeline": pipeline.markdown,
    "limiter": limiter.markdown,
    "arrivals": arrivals.markdown,
    "chaos": chaos.markdown,
    "storage": storage_bench.markdown,
    "usage": usage.markdown,
    "dashboard": dashboard.markdown,
}


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full sizes, more repetitions")
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument(
        "--out", type=Path, help=f"where to write (default {DOC.relative_to(ROOT)})"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip aiogram, PTB and tenacity")
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON here")
    parser.add_argument(
        "--render", type=Path, help="rewrite the document from a --json file; measure nothing"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        meta = saved.pop("_meta")
        target = args.out or DOC
        target.write_text(
            render(
                saved,
                RENDERERS,
                meta["failures"],
                meta["timings"],
                meta["total"],
                meta["quick"],
                meta["command"],
                meta["load_before"],
                meta.get("facts"),
            )
        )
        _say(f"wrote {target} from {args.render}")
        return 0
    quick = not args.full
    chosen = SECTIONS if args.only is None else tuple(s.strip() for s in args.only.split(","))
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    out = args.out if args.out is not None else (DOC if args.only is None else None)
    # The chaos scenarios suspend a bot on purpose: its ERROR line is expected noise here.
    logging.getLogger("botvisor").setLevel(logging.CRITICAL)
    load_before = os.getloadavg()[0]

    peer_python: Path | None = None
    peer_error: str | None = None
    if args.no_peers:
        peer_error = "skipped (--no-peers)"
    elif {"peers", "pipeline"} & set(chosen):
        try:
            peer_python = ensure_peer_python()
        except RuntimeError as exc:
            peer_error = str(exc).splitlines()[0]
            _say(f"peers unavailable: {exc}")

    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "fleet": lambda: fleet.run(quick),
        "webhooks": lambda: webhooks.run(quick),
        "memory": lambda: memory.run(quick),
        "peers": lambda: peers.run(quick, peer_python=peer_python, peer_error=peer_error),
        "shutdown": lambda: shutdown.run(quick),
        "throughput": lambda: throughput.run(quick),
        "pipeline": lambda: pipeline.run(quick, peer_python=peer_python, peer_error=peer_error),
        "limiter": lambda: limiter.run(quick),
        "arrivals": lambda: arrivals.run(quick),
        "chaos": lambda: chaos.run(quick),
        "storage": lambda: storage_bench.run(quick),
        "usage": lambda: usage.run(quick),
        "dashboard": lambda: dashboard.run(quick),
    }
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    failures: dict[str, str] = {}
    started = time.perf_counter()
    for name in chosen:
        _say(f"{name} …")
        began = time.perf_counter()
        try:
            results[name] = runners[name]()
        except Exception as exc:
            failures[name] = one_line(exc)
            _say(f"{name} failed:\n{traceback.format_exc()}")
        timings[name] = time.perf_counter() - began
        _say(f"{name} done in {timings[name]:.0f} s")
    total = time.perf_counter() - started

    command = "make bench-full" if args.full else "make bench"
    if args.only is not None or args.no_peers:
        command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    facts = machine_facts()
    document = render(
        results, RENDERERS, failures, timings, total, quick, command, load_before, facts
    )
    if out is None:
        print(document)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(document)
        _say(f"wrote {out} ({total:.0f} s in all)")
    if args.json is not None:
        meta = {
            "failures": failures,
            "timings": timings,
            "total": total,
            "quick": quick,
            "command": command,
            "load_before": load_before,
            "facts": facts,
        }
        args.json.write_text(json.dumps({**results, "_meta": meta}, indent=1, default=str))
    return 1 if failures else 0


def render(
    results: dict[str, Any],
    renderers: dict[str, Callable[[dict[str, Any]], str]],
    failures: dict[str, str],
    timings: dict[str, float],
    total: float,
    quick: bool,
    command: str,
    load_before: float | None = None,
    facts: dict[str, Any] | None = None,
) -> str:
    facts = facts or machine_facts()
    load = (
        f" Load average (1 min) {load_before:.1f} at the start and {facts['load']:.1f} at the "
        "end: other work on the machine shows up as wider ranges."
        if load_before is not None
        else ""
    )
    lines = [
        "# botvisor benchmarks",
        "",
        "Generated by `python -m bench`: do not edit by hand, run it again. "
        f"Profile: **{'quick' if quick else 'full'}**, produced by `{command}` on "
        f"{datetime.now(UTC):%Y-%m-%d} in {total / 60:.1f} min.",
        "",
        f"Machine: {facts['nproc']} cores ({facts['cpu']}), {facts['ram_gib']:.1f} GiB RAM, "
        f"{facts['implementation']} {facts['python']}, Linux {facts['kernel']}. Figures that "
        "depend on the machine are given with a ratio to a baseline measured in the same run "
        "(botvisor for the peers, the bare call for the pipeline, the fault-free run for the "
        f"chaos scenarios). Medians, with min–max of the runs in parentheses.{load}",
        "",
        "Every client talks to botvisor's simulated Bot API (`actors/simulator`), in process or "
        "over HTTP on 127.0.0.1 from a separate process; nothing reaches Telegram.",
        "",
        "## Targets",
        "",
        summary(results),
    ]
    for name, text in failures.items():
        lines += [f"**{name} failed**: `{text}`", ""]
    lines += ["## Results", ""]
    for name in SECTIONS:
        if name in results:
            lines += [renderers[name](results[name]).rstrip(), ""]
            lines += [f"<sub>{name}: {timings[name]:.0f} s of the run</sub>", ""]
    lines += ["## Where we lose, and what would close the gap", "", notes(results)]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
