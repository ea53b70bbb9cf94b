"""The targets table and the notes on where botvisor loses, computed from a run's figures.

Each note is written only when its target was missed in this run, so a fixed gap drops out of
the document by itself. The causes named come from the profiles printed with each section.
"""

from __future__ import annotations

from typing import Any

from bench.common import table

__all__ = ["notes", "summary"]


def _median(figure: Any) -> float | None:
    if isinstance(figure, dict) and "median" in figure:
        return float(figure["median"])
    if isinstance(figure, (int, float)):
        return float(figure)
    return None


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


def _botvisor_http(results: dict[str, Any]) -> dict[str, Any] | None:
    for client in _get(results, "peers", "clients") or []:
        if client["client"] == "botvisor":
            found: dict[str, Any] = client
            return found
    return None


def _check(value: float | None, limit: float, *, at_most: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value <= limit if at_most else value >= limit
    return "met" if ok else "**missed**"


def _targets(results: dict[str, Any]) -> list[tuple[str, str, float | None, float, bool]]:
    """(what, how it is shown, measured, limit, at_most)."""
    big = _get(results, "fleet", "sizes", "10000") or {}
    fleet_http = _get(results, "peers", "fleet") or {}
    http = _botvisor_http(results) or {}
    rss = _median(big.get("rss_ready_kib"))
    if "capped_s" in big:
        rss = None  # only part of the fleet had started: no total to compare
    return [
        (
            "10,000 bots in one process under 512 MiB RSS",
            "MiB",
            rss / 1024 if rss is not None else None,
            512.0,
            True,
        ),
        (
            "RSS per bot at 10,000 bots ≤ 16 KiB",
            "KiB",
            _median(big.get("rss_per_bot_kib")),
            16.0,
            True,
        ),
        (
            "10,000 bots started (all polling) in ≤ 3 s",
            "s",
            _median(big.get("startup_s")),
            3.0,
            True,
        ),
        (
            "idle CPU ≤ 40 µs per bot-second, 10,000 bots in process",
            "µs",
            _median(big.get("idle_cpu_us_per_bot_s")),
            40.0,
            True,
        ),
        (
            "`/metrics` scrape at 10,000 bots (per-bot series off) ≤ 100 ms",
            "ms",
            _median(big.get("scrape_ms")),
            100.0,
            True,
        ),
        (
            "event-loop lateness p99 ≤ 2 ms, 10,000 bots long-polling and scraped",
            "ms",
            _median(big.get("lateness_p99_ms")),
            2.0,
            True,
        ),
        (
            "idle CPU ≤ 40 µs per bot-second, 1,000 bots over loopback HTTP",
            "µs",
            _median(fleet_http.get("idle_cpu_us_per_bot_s")),
            40.0,
            True,
        ),
        (
            "client CPU per handled update ≤ 1.0 ms, 1,000 bots over loopback HTTP",
            "ms",
            _median(fleet_http.get("cpu_ms_per_update")),
            1.0,
            True,
        ),
        (
            "client CPU per handled update ≤ 1.0 ms, peers' workload over loopback HTTP",
            "ms",
            _median(http.get("cpu_ms_per_update")),
            1.0,
            True,
        ),
        (
            "pipeline overhead ≤ 8 µs a call",
            "µs",
            _median(_get(results, "pipeline", "ours", "net_us")),
            8.0,
            True,
        ),
        (
            "100,000 webhook bots: RSS per bot ≤ 10 KiB",
            "KiB",
            _median(_get(results, "webhooks", "fleet", "figures", "rss_per_bot_kib")),
            10.0,
            True,
        ),
        (
            "100,000 webhook bots: start-up with unchanged registrations ≤ 10 s",
            "s",
            _median(_get(results, "webhooks", "fleet", "figures", "startup_s")),
            10.0,
            True,
        ),
        (
            "100,000 webhook bots: Bot API calls at start-up = 0",
            "calls",
            _median(_get(results, "webhooks", "fleet", "figures", "startup_calls")),
            0.0,
            True,
        ),
        (
            "100,000 webhook bots: idle CPU ≤ 1 µs per bot-second",
            "µs",
            _median(_get(results, "webhooks", "fleet", "figures", "idle_cpu_us_per_bot_s")),
            1.0,
            True,
        ),
        (
            "webhook ingest: CPU per delivery ≤ 1.5× the bare ASGI floor, same run",
            "×",
            _median(_get(results, "webhooks", "ingest", "ratio")),
            1.5,
            True,
        ),
        (
            "echo, 1,000 bots × 1 update: webhook CPU per update ÷ polling's, same run, < 1",
            "×",
            _median(_get(results, "webhooks", "echo", "ratio")),
            1.0,
            True,
        ),
        (
            "busiest 1-s window of sendMessage arrivals at the server, defaults, worst run ≤ 30",
            "sends",
            _worst_arrivals(results),
            30.0,
            True,
        ),
        (
            "dashboard at 10,000 bots: the overview interactive in ≤ 1 s, slowest load "
            "(browser's clock)",
            "ms",
            _float(_get(results, "dashboard", "ready_ms", "max")),
            1000.0,
            True,
        ),
    ]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _worst_arrivals(results: dict[str, Any]) -> float | None:
    for row in _get(results, "arrivals", "rows") or []:
        if row.get("label") == "defaults":
            return float(row["worst_window"]["max"])
    return None


def summary(results: dict[str, Any]) -> str:
    """The issue's targets, what this run measured, and whether each was met."""
    rows = []
    capped = "capped_s" in (_get(results, "fleet", "sizes", "10000") or {})
    for what, unit, value, limit, at_most in _targets(results):
        shown = "–" if value is None else f"{value:,.2f} {unit}"
        if capped and "started" in what and value is not None:
            shown = f"> {value:,.0f} {unit} (the benchmark stopped waiting)"
        rows.append(
            [
                what,
                shown,
                f"{'≤' if at_most else '≥'} {limit:g} {unit}",
                _check(value, limit, at_most=at_most),
            ]
        )
    chaos = _get(results, "chaos", "scenarios") or []
    if chaos:
        lost = [
            r["scenario"] for r in chaos if (_median(r.get("healthy_answered_share")) or 0.0) < 1.0
        ]
        dups = sum(_median(r.get("duplicates")) or 0.0 for r in chaos)
        rows.append(
            [
                "chaos: every healthy tenant's message answered, in every scenario",
                "all" if not lost else f"not in {', '.join(lost)}",
                "100%",
                "met" if not lost else "**missed**",
            ]
        )
        rows.append(
            [
                "chaos: no message answered twice",
                f"{dups:.0f} duplicates",
                "0",
                "met" if dups == 0 else "**missed**",
            ]
        )
    ours = _botvisor_http(results)
    for peer in _get(results, "peers", "clients") or []:
        if ours is None or peer is ours:
            continue
        for key, label, lower in (
            ("rss_per_bot_kib", "RSS per bot", True),
            ("updates_per_cpu_s", "updates per CPU-second", False),
        ):
            a, b = _median(ours.get(key)), _median(peer.get(key))
            if a is None or b is None:
                continue
            better = a <= b if lower else a >= b
            shown = f"{a:,.1f} vs {b:,.1f}"
            target = "botvisor at least as good"
            per_round = (peer.get("ratios") or {}).get(key)
            if per_round is not None:
                # peer ÷ botvisor of each round: botvisor is as good in every round when the
                # ratio never falls below 1 (memory) or never rises above 1 (throughput).
                better = per_round["min"] >= 1.0 if lower else per_round["max"] <= 1.0
                shown += (
                    f" (peer ÷ botvisor per round ×{per_round['median']:.2f}, "
                    f"×{per_round['min']:.2f}–{per_round['max']:.2f})"
                )
                target += " in every round"
            rows.append(
                [
                    f"{label}: botvisor vs {peer['client']}",
                    shown,
                    target,
                    "met" if better else "**missed**",
                ]
            )
    return table(["target", "measured", "target value", "verdict"], rows)


_GAPS = {
    "startup": (
        "**Start-up.** Bots are started in bulk (the registry in one transaction, every "
        "bot's offset and undone inbox read once for the fleet, the bots started "
        "concurrently, one Trio task each). A lease no longer builds an `httpx.AsyncClient` "
        "(its default headers, cookie jar and URL parsing were the largest share of the "
        "start-up profile before the lean request path note below): its `HttpClient` is "
        "an httpcore pool and a few slots. What is left, by the start-up profile above: "
        "Trio's spawning and first scheduling of every bot and the per-bot structures "
        "built before a bot's first call."
    ),
    "memory": (
        "**Memory per bot.** The tracemalloc table shows where it goes: each polling bot is "
        "one Trio task with a few cancel scopes and events (its supervision, its poll, its "
        "chat-lane nursery), its lease's `HttpClient` (an httpcore pool; the "
        "`httpx.AsyncClient` it replaced cost ~4 KiB more, see the lean request path note), "
        "the long poll in flight (its request, headers and the coroutine frames of the call "
        "through the pipeline and the client), and its resilience state (breaker, health "
        "windows, limiters); in process the simulator's half of each waiting poll is "
        "counted too. What would close it: lanes and limiters created on first use for "
        "bots that have not yet made a call, and fewer cancel scopes and events per bot."
    ),
    "idle": (
        "**Idle CPU.** An idle bot's cost is its long poll: one getUpdates round every 10 s "
        "through the pipeline and httpx, about {per_poll:.2f} ms of CPU a poll where the "
        "target was missed ({where}), where 40 µs per bot-second allows 0.4 ms. Where an "
        "empty poll's CPU goes (py-spy over a 15 s idle window at 1,000 bots over loopback "
        "HTTP, before each client kept its URLs and timeouts, 2026-12-04): a quarter in "
        "httpcore sending the request (h11 building and checking the header lines, then "
        "the header and body writes, each under a trio.fail_after), an eighth reading and "
        "closing the response, 8% httpx building the Request (JSON body, headers, then "
        "still the URL), 5% the cookie extraction httpx does on every response, 7% "
        "botvisor's own poller, pipeline and client, and a fifth Trio's scheduler and "
        "epoll between polls. Each client now keeps a method's parsed URL and a read "
        "timeout's httpx.Timeout, and a long poll that outlasted min_poll_interval is "
        "followed by the next without a sleep: CPU per idle poll 0.83 ms (0.78-0.88) after, "
        "0.89 ms (0.80-1.23) before, medians of 6 interleaved runs of 20 s windows, within "
        "the noise per bot-second (53 µs against 51). The request path below "
        "httpx.AsyncClient then cut an idle poll by a fifth (the lean request path note). "
        "What is left is httpcore's own work (h11 building and checking the header lines, "
        "each socket read and write under a trio.fail_after) and Trio's scheduler: what "
        "would close it is fewer, cheaper socket writes than httpcore's. Operators on the "
        "default 30 s polls pay a third of this figure."
    ),
    "cpu": (
        "**CPU per update.** The HTTP part of an update's CPU is now httpcore's (the lean "
        "request path note: httpx's request and response models, cookie and header "
        "merging are gone from the path, a third of the client's CPU per update at 1,000 "
        "bots), then Trio's scheduling; the SQLite inbox writes run in a thread. What would "
        "close the rest: batching the inbox's done marks per poll, and fewer, cheaper "
        "socket writes than httpcore's. aiogram's per-update cost is lower "
        "because it has no durable inbox, no per-chat ordering and no limiter on the path."
    ),
    # Measured by hand (not by python -m bench), so the figures are fixed text.
    "http_pool": (
        "**The fleet's HTTP pool** (an A/B by hand, 2026-12-04, same machine, not this run). "
        "One `httpx.AsyncClient` for the whole fleet (commit 8de13b8) multiplied the client's "
        "CPU per update over loopback HTTP: on every request start and every response close "
        "httpcore's pool walks its connections and, for each idle one, counts all of them "
        "again, and polls each idle socket, so with hundreds of long polls in one pool a "
        "request cost O(n²) (58% of the client's CPU in `_assign_requests_to_connections` "
        "under py-spy). Each lease now has a small pool of its own, kept for the next lease "
        "when it ends (`FleetHttpPool`, `LEASES_PER_CLIENT` = 1). Client CPU ms per update, "
        "median (min–max) of 4 interleaved runs each, `bench.loopback.measure(CLIENTS"
        '["botvisor"], Workload(bots, chats, messages, idle_seconds=0.0))` run from outside '
        "the tree with the tree first on `sys.path`: at 100 bots × 2 chats × 5 messages, one "
        "shared client 6.95 (5.47–8.99), a pool per lease 1.11 (0.99–1.17), a client per "
        "bot incarnation before the shared one (d1bebc7) 1.05 (0.98–1.08); at 1,000 bots × "
        "1 chat × 3 messages, 9.62 (9.01–10.12), 1.60 (1.47–2.67) and 1.67 (1.54–2.49). "
        "Sub-pools shared by 2, 4, 8 or 16 leases cost 1.08, 1.3, 1.6 and 2.0 ms at 100 bots "
        "(3-7 runs each), so no pool is shared. RSS per bot after start-up, same runs: 83.4, "
        "78.8 and 82.5 KiB at 100 bots; 55.0, 52.1 and 57.4 KiB at 1,000. Open files of the "
        "client at most 315 at 100 bots and 2,015 at 1,000 with a pool per lease, within "
        "`64 + 4 × bots`. In process (`python -m bench.memory --bots 2000`, tracemalloc, "
        "one run each) 40.8 KiB a bot, 36.3 with one shared client, 41.4 at d1bebc7: the "
        "~5 KiB of a client per lease is part of the memory note's gap. The rest of the "
        "1,000-bot gap to 1 ms is httpx and httpcore's per "
        "request work (header models, a `fail_after` around every socket read and write), "
        "the CPU note above."
    ),
    # Measured by hand (not by python -m bench), so the figures are fixed text.
    "lean_path": (
        "**The lean request path** (an A/B by hand, 2026-12-04, same machine, not this run). "
        "Bot API calls go below `httpx.AsyncClient`: `actors/botapi/http.py`'s "
        "`HttpClient` builds each POST itself (Host header and URL parsed once, fixed header "
        "bytes, the body encoded once, getUpdates' constant parameters once per bot) and "
        "sends it on httpcore's `AsyncConnectionPool` directly; no cookie jar, no request "
        "log line, no httpx Request/Response models. Interleaved runs, main (AsyncClient) "
        "against the lean path, 3 each, median (min–max), `bench.loopback.measure(CLIENTS"
        '["botvisor"], Workload(...))` run from outside the tree with the tree first on '
        "`sys.path`: client CPU per update at 1,000 bots × 1 chat × 3 messages 1.68 "
        "(1.55–1.78) → 1.12 (1.03–1.14) ms; at 100 bots × 2 chats × 5 messages 0.97 "
        "(0.93–1.01) → 0.68 (0.68–0.78) ms, that is 1,031 → 1,471 updates per CPU-second; "
        "idle CPU per bot-second at 1,000 bots, 30 s windows of 10 s polls, 58 (57–61) → "
        "46 (45–47) µs; RSS per bot at 1,000 bots 49.7 → 42.8 KiB, at 100 bots 78.3 → 66.9 "
        "KiB; `python -m bench.memory --bots 2000` (tracemalloc, in process, the simulator's "
        "transport) 34.9 (34.9–35.5) → 31.0 KiB a bot. The same requests sent on httpx's "
        "transport (`AsyncHTTPTransport`, httpx's Request and Response kept) measured 1.28 "
        "and 0.80 ms per update: httpcore directly is the cheaper of the two. Against aiogram "
        "3 with one shared session (100 bots × 2 chats × 5 messages, 5 interleaved rounds of "
        "main, the lean path and aiogram): updates per CPU-second botvisor ÷ aiogram 0.81 "
        "(0.74–0.91)× on main, 1.03 (0.93–1.12)× on the lean path, short of 1.5×. What is "
        "left (cProfile of the client over a 100-bot run of 4,000 updates, start-up "
        "included, time waiting in epoll left out): about a quarter Trio's scheduler, a "
        "quarter httpcore and h11 (two socket writes a request, header validation, a "
        "context manager around every step), an eighth botvisor's own code."
    ),
    "echo": (
        "**Webhook echo.** The 1,000 dormant webhook bots woken at once each open a "
        "connection of their own for their one reply (a pool per lease; only up to "
        "`SPARE_CLIENTS` idle pools are kept for the next wake), where the polling bots' "
        "connections are open already. Both got cheaper with the pools per lease; before "
        "them the ratio was under 1 because one shared pool made every polling request pay "
        "O(n²) (the HTTP pool note). What would close it: woken webhook bots' replies "
        "sharing warm connections in a bounded pool of their own (their requests are short, "
        "unlike long polls, so such a pool stays small), measured against that cost."
    ),
    "pipeline": (
        "**Pipeline overhead.** The pipeline profile shows where each call's time goes; an "
        "uncontended call should take its tokens without awaiting (`try_acquire` on every "
        "limiter) and pass through Trio's scheduler once, not once per limiter, since each "
        "pass costs ~10 µs here."
    ),
}


def notes(results: dict[str, Any]) -> str:
    """Why each missed target was missed, and what would close the gap."""
    verdicts = {
        what: _check(value, limit, at_most=at_most)
        for what, _u, value, limit, at_most in _targets(results)
    }
    missed = {what for what, verdict in verdicts.items() if verdict == "**missed**"}
    out = []
    if any("started" in w for w in missed):
        out.append(_GAPS["startup"])
    if any("RSS" in w for w in missed):
        out.append(_GAPS["memory"])
    if any("idle CPU" in w for w in missed):
        idle = [
            (v, w)
            for w, _u, v, _l, _a in _targets(results)
            if "idle CPU" in w and w in missed and v is not None
        ]
        value, where = max(idle)
        out.append(_GAPS["idle"].format(per_poll=value * 10 / 1000, where=where))
    if any("CPU per handled update" in w for w in missed):
        out.append(_GAPS["cpu"])
        out.append(_GAPS["http_pool"])
    if out:
        # The start-up, memory, idle and CPU notes all refer to it.
        out.append(_GAPS["lean_path"])
    if any("pipeline" in w for w in missed):
        out.append(_GAPS["pipeline"])
    if any(w.startswith("echo") for w in missed):
        out.append(_GAPS["echo"])
    peers = _get(results, "peers", "clients") or []
    ours = _botvisor_http(results)
    if ours is not None:
        for peer in peers:
            if peer is ours:
                continue
            mine, theirs = (
                _median(ours.get("rss_per_bot_kib")),
                _median(peer.get("rss_per_bot_kib")),
            )
            if mine is not None and theirs is not None and mine > theirs:
                out.append(
                    f"**Against {peer['client']}**: {mine / theirs:.1f}× lighter per bot than "
                    "botvisor on this workload. All its bots share one aiohttp session and one "
                    "dispatcher: no per-bot HTTP client, no per-bot task tree, no per-bot "
                    "breaker, limiters or health windows. The memory note above says what would "
                    "make botvisor's bots lighter; the price of sharing is isolation (one "
                    "tenant's slow calls then take connections from the others)."
                )
            a, b = _median(ours.get("updates_per_cpu_s")), _median(peer.get("updates_per_cpu_s"))
            if a is not None and b is not None and a < b:
                out.append(
                    f"**Against {peer['client']}**: it handles {b / a:.2f}× the updates per "
                    "CPU-second on this workload. The difference is the work botvisor does "
                    "that it does not: a durable SQLite inbox (every update committed before "
                    "it is confirmed, marked done after), per-chat ordering, the limiters and "
                    "breaker on every call, and health bookkeeping; the CPU note above says "
                    "what would make that cheaper."
                )
    peer_net = _median(_get(results, "pipeline", "peer", "net_us"))
    our_net = _median(_get(results, "pipeline", "ours", "net_us"))
    if peer_net is not None and our_net is not None and our_net > peer_net:
        out.append(
            f"**Against tenacity + pybreaker + aiolimiter**: {our_net / peer_net:.2f}× cheaper "
            "per call than our pipeline. asyncio's uncontended `AsyncLimiter` and pybreaker's "
            "`calling()` do not yield to the event loop at all, while each of our limiters "
            "does; the pipeline note above is the fix."
        )
    if not out:
        out.append("Every target of this run was met.")
    return "\n\n".join(out) + "\n"
