"""Dashboard benchmark: how soon the fleet overview is interactive at 10,000 bots.

The real daemon runs in this process (10,000 bots long-polling the in-process simulated Bot
API, the admin server on 127.0.0.1 over real HTTP) on a thread of its own; Debian's headless
Chromium, driven by Playwright, opens the page already signed in (the token put in
``sessionStorage`` before the page's scripts run) and the clock runs from navigation until:

- **interactive**: the fleet's counts are drawn (``data-ready``: the summary answered),
  timed by the browser's own clock from navigation start, and as the driver saw it (from
  ``goto`` until Playwright, checking every animation frame, noticed the attribute: that
  adds its relaying, which under load is a hundred milliseconds or more no user waits for);
- **loaded**: every panel is filled (hourly usage, busiest tenants, incidents);
- **bot list**: the first page of ``GET /admin/bots?limit=50`` is drawn, after a click.

Target (issue 14): interactive within 1 s. Also reported: the page's own bytes (all files
under ``admin/static``), budget 300 KB. Run ``python -m bench.dashboard [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

from actors import BotConfig, BotToken, LimitsConfig, TelegramConfig
from actors.simulator import SimulatedTransport
from admin import AdminConfig
from admin.dashboard import DashboardAssets
from bench.inproc import make_api, wait_all_polling
from storage import StorageConfig
from supervisor import Config, SupervisorConfig
from supervisor.clock import system_wall_clock
from supervisor.daemon import Daemon

__all__ = ["CHROMIUM_ARGS", "CHROMIUM_MISSING", "chromium_path", "markdown", "run"]

FLEET_BOTS = 10_000
TARGET_MS = 1000.0
BUDGET_BYTES = 300 * 1024
# Debian's Chromium (Playwright drives it through executable_path; no browser is downloaded),
# with what makes it quiet and quick headless. The browser tests use the same.
CHROMIUM_MISSING = "install Debian's chromium package (apt-get install chromium)"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _DaemonThread:
    """The daemon and its simulated fleet in ``trio.run`` on a thread."""

    def __init__(self, bots: int, db: Path, token: str) -> None:
        self.bots, self.db, self.token = bots, db, token
        self.url = ""
        self.polling = 0
        self.startup_seconds = 0.0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._trio: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="bench-daemon", daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._trio = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        api, tokens = make_api(self.bots, seed=14)
        config = Config(
            # The default 30 s long poll, as a deployment runs: the idle fleet's polls are
            # load on the same event loop as the admin server.
            telegram=TelegramConfig(api_base="http://sim.invalid"),
            storage=StorageConfig(path=str(self.db)),
            admin=AdminConfig(listen="127.0.0.1:0", token=self.token),
            supervisor=SupervisorConfig(graceful_timeout=2.0),
            limits=LimitsConfig(),
            bots=tuple(BotConfig(user_id=1 + i, token=BotToken(t)) for i, t in enumerate(tokens)),
        )
        daemon = Daemon(
            config,
            wall_clock=system_wall_clock(),
            rng=random.Random(1),
            transport=SimulatedTransport(api),
            freeze_after_load=True,
        )
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(daemon.run)
            self.polling = await wait_all_polling(api, self.bots, within=120)
            self.startup_seconds = trio.current_time() - began
            assert handle.admin_url is not None
            self.url = handle.admin_url
            self._ready.set()
            await self._stop.wait()
            daemon.request_shutdown()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None or not self.url:
            raise RuntimeError(f"the benchmark's daemon did not start: {self._error!r}")

    def stop(self) -> None:
        if self._trio is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._trio)
        self._thread.join(60)


# Notes, by the browser's clock (milliseconds from navigation start), when the page set
# data-ready: an observer of the whole document, set up before the page's own scripts run.
_READY_OBSERVER = """
new MutationObserver((changes, observer) => {
  for (const change of changes) {
    if (change.target.id === "view" && change.target.dataset.ready === "true") {
      window.__botvisorReadyAt = performance.now();
      observer.disconnect();
      return;
    }
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-ready"] });
"""

_READY = "() => document.querySelector('#view[data-ready=true]') !== null"

# Milliseconds from navigation start: the page's HTML received, its last script or style
# received (of those asked for before data-ready; the icon, which nothing waits for, left
# out), the counts asked for and received, and data-ready set.
_PHASES = """() => {
  const entries = (match) => performance.getEntriesByType("resource")
    .filter((e) => match(new URL(e.name).pathname));
  const ready = window.__botvisorReadyAt;
  const assets = entries((p) => p.startsWith("/static/") && !p.endsWith(".svg"))
    .filter((e) => e.startTime <= ready);
  const summaries = entries((p) => p.endsWith("/summary"));
  return {
    html_ms: performance.getEntriesByType("navigation")[0].responseEnd,
    assets_ms: Math.max(0, ...assets.map((e) => e.responseEnd)),
    summary_asked_ms: Math.min(...summaries.map((e) => e.startTime)),
    summaries_ms: Math.max(...summaries.map((e) => e.responseEnd)),
    ready_ms: ready,
  };
}"""


def _measure(url: str, token: str, repeats: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    if chromium is None:
        raise RuntimeError(f"no chromium: {CHROMIUM_MISSING}")
    figures: dict[str, list[float]] = {"interactive_ms": [], "loaded_ms": [], "bot_list_ms": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for _ in range(repeats):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_init_script(
                    f"sessionStorage.setItem('botvisor.admin-token', {token!r})"
                )
                context.add_init_script(_READY_OBSERVER)
                page = context.new_page()
                began = time.perf_counter()
                page.goto(url + "/", wait_until="commit", timeout=60_000)
                # Checked on every animation frame: wait_for_selector retries on a backoff
                # (20, 50, 100, then 500 ms apart), which would add its own wait to the figure.
                page.wait_for_function(_READY, polling="raf", timeout=60_000)
                figures["interactive_ms"].append((time.perf_counter() - began) * 1000)
                # Where the time went, from the browser's own timing of each request.
                phases = page.evaluate(_PHASES)
                for name, value in phases.items():
                    figures.setdefault(name, []).append(value)
                page.wait_for_selector("#view[data-loaded=true]", timeout=60_000)
                figures["loaded_ms"].append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                page.get_by_role("link", name="Bots", exact=True).click()
                page.wait_for_selector('[data-testid="bot-rows"] tr', timeout=60_000)
                figures["bot_list_ms"].append((time.perf_counter() - began) * 1000)
                context.close()
        finally:
            browser.close()
    return figures


def run(
    quick: bool = False,
    *,
    bots: int = FLEET_BOTS,
    repeats: int | None = None,
    directory: str | None = None,
) -> dict[str, Any]:
    """Start the fleet, time the page ``repeats`` times (each load in a new browser context,
    so every one starts with an empty cache)."""
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-", dir=directory) as tmp:
        daemon = _DaemonThread(bots, Path(tmp) / "dashboard.db", token)
        daemon.start()
        try:
            figures = _measure(daemon.url, token, repeats or (3 if quick else 7))
        finally:
            daemon.stop()
    return {
        "bots": bots,
        "polling": daemon.polling,
        "startup_seconds": daemon.startup_seconds,
        "page_bytes": DashboardAssets.load().total_bytes(),
        **{
            name: {
                "median": statistics.median(v),
                "min": min(v),
                "max": max(v),
                "runs": len(v),
                "values": [round(x, 1) for x in v],
            }
            for name, v in figures.items()
        },
    }


# Measured once, when the counts got an early request of their own (issue 14): what the
# figures above were before, under the same load (the old and new code alternated).
_BEFORE_AND_AFTER = (
    "- Before and after the counts got one early request of their own (`python -m "
    "bench.dashboard --json FILE`, 5 runs of 7 loads each, the old and the new code "
    "alternated, so both met the same load; median of the 35 loads, slowest in parentheses; "
    "by the browser's clock, then as the driver saw it). At load average 2–5: **397 ms (604) "
    "before, 301 ms (570) after**; driver 424 ms (645) before, 379 ms (637) after. At 6–8: "
    "567 ms (764) before, 359 ms (624) after; driver, then still with wait_for_selector, "
    "672 ms (1,221) before, 481 ms (1,093) after. At 9–14: 533 ms (839) before, 456 ms (809) "
    "after; driver 578 ms (953) before, 547 ms (828) after. What is left is mostly the "
    "summary's one pass over the bots: about 20 ms of CPU at 10,000 bots (fewer calls per "
    "bot did not shorten it measurably), which a loaded machine stretches to 100–350 ms; "
    "only fleet-wide counts kept as bots change, instead of read from every bot, would "
    "remove it."
)


def markdown(results: dict[str, Any]) -> str:
    """The figures of ``run`` as a Markdown section."""
    seen, loaded, listed = results["interactive_ms"], results["loaded_ms"], results["bot_list_ms"]
    ready = results["ready_ms"]
    verdict = "met" if ready["max"] <= TARGET_MS else "**missed**"
    budget = "within" if results["page_bytes"] < BUDGET_BYTES else "**over**"
    return "\n".join(
        [
            "### Dashboard",
            "",
            f"- Fleet overview at {results['bots']:,} bots ({results['polling']:,} long-polling) "
            "in headless Chromium: interactive (the counts drawn, `data-ready`) in median "
            f"**{ready['median']:.0f} ms** by the browser's clock from navigation start "
            f"(min {ready['min']:.0f}, max {ready['max']:.0f}; {ready['runs']} loads, each in a "
            f"new browser context with an empty cache); target ≤ {TARGET_MS:g} ms for every "
            f"load: {verdict}. As the driver saw it (from Playwright's `goto` until it noticed "
            f"the attribute, its own relaying included): median {seen['median']:.0f} ms "
            f"(min {seen['min']:.0f}, max {seen['max']:.0f}). Every panel filled in median "
            f"{loaded['median']:.0f} ms.",
            f"- Where the time goes (median ms from navigation start): the HTML received at "
            f"{results['html_ms']['median']:.0f}, its last script or style at "
            f"{results['assets_ms']['median']:.0f}; the counts asked for at "
            f"{results['summary_asked_ms']['median']:.0f} (by early.js, which waits for no "
            "other script), "
            f"answered at {results['summaries_ms']['median']:.0f}, drawn at "
            f"{ready['median']:.0f}. The admin server shares the daemon's event loop with the "
            "fleet's long polls, and its summary reads every bot.",
            f"- Bot list, first page of 50 (`GET /admin/bots?limit=50`) after a click: median "
            f"{listed['median']:.0f} ms (max {listed['max']:.0f}).",
            f"- The page's own files, uPlot included: {results['page_bytes'] / 1024:.0f} KB "
            f"uncompressed, {budget} the 300 KB budget.",
            _BEFORE_AND_AFTER,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bots", type=int, default=FLEET_BOTS)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    results = run(args.quick, bots=args.bots)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
