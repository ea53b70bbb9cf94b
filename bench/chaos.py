"""Chaos scenarios: the real daemon on the simulated Bot API, in process, on a MockClock.

Each named scenario of ``supervisor.demo.SCENARIOS`` (the same profiles ``botvisor demo
--faults NAME`` runs) is applied for a fault window in the middle of a run; a fault-free run
with the same seed is the baseline. Simulated users write to every tenant throughout:

    0 ─ warm-up ─ fault starts ─ fault window ─ fault ends ─ users go on ─ users stop ─ drain

Reported per scenario: the share of user messages answered (all tenants, and the healthy
ones: every tenant but the revoked or flooding one), duplicates, replies dead-lettered, the
time to recover (from the fault's end until every message sent before it was answered), and
the healthy tenants' reply latency during the fault window (median and p95) against the
baseline's in the same window. The clock is simulated: minutes of faults take seconds.
"""

from __future__ import annotations

import math
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing

from actors import BotActor, BotStatus, BreakerState
from actors.simulator import OutageMode, SimulatedBotApi
from bench.common import fmt, table
from bench.inproc import make_api, start_fleet, wait_all_polling
from storage import run_inline
from supervisor.clock import anchored_wall_clock
from supervisor.demo import SCENARIOS, Scenario

__all__ = ["CHAOS_SCENARIOS", "Timeline", "markdown", "run", "run_scenario"]

# The scenarios the issue names, in its order (``none`` is the baseline).
CHAOS_SCENARIOS = (
    "transient-5",
    "transient-20",
    "transient-50",
    "429-storm",
    "outage-10min",
    "revoked",
    "flood",
)
EPOCH = 1_800_000_000.0
FIRST_CHAT = 20_000
_TEXT = re.compile(r"chaos (\d+)\.")


@dataclass(frozen=True)
class Timeline:
    """The simulated run's shape, in seconds; users write ``chats`` chats every ``period``."""

    bots: int = 10
    chats: int = 3
    period: float = 2.0  # seconds between a chat's messages, on average
    warmup: float = 60.0
    fault: float = 300.0  # an outage scenario lasts its own length (600 s for outage-10min)
    after: float = 60.0  # users keep writing this long after the fault ends
    drain: float = 1_200.0  # at most this long for the last replies (deadline is 900 s)


def _fault_length(scenario: Scenario, timeline: Timeline) -> float:
    if scenario.outage is not None and scenario.outage[1] > 0:
        return scenario.outage[1]
    return timeline.fault


class _Users:
    """Every chat writes a message every ``period`` seconds on average; sending times kept."""

    def __init__(self, api: SimulatedBotApi, rng: random.Random) -> None:
        self.api = api
        self.rng = rng
        self.sent_at: dict[int, float] = {}
        self.tenant_of: dict[int, int] = {}
        self.next_id = 0

    async def chat(
        self, tenant: int, token: str, chat_id: int, period: float, until: float
    ) -> None:
        await trio.sleep(self.rng.uniform(0, period))
        while (now := trio.current_time()) < until:
            self.next_id += 1
            self.sent_at[self.next_id] = now
            self.tenant_of[self.next_id] = tenant
            try:
                self.api.send_user_message(token, chat_id, f"chaos {self.next_id}.")
            except LookupError:
                return
            await trio.sleep(self.rng.expovariate(1.0 / period))


async def _scenario(name: str, timeline: Timeline, seed: int, db: Path) -> dict[str, Any]:
    scenario = SCENARIOS[name]
    api, tokens = make_api(timeline.bots, seed, record=True)
    rng = random.Random(seed)
    users = _Users(api, rng)
    fault_start = timeline.warmup
    fault_end = fault_start + _fault_length(scenario, timeline)
    users_stop = fault_end + timeline.after
    affected = 0 if (scenario.revoke_one or scenario.flood_factor > 1) else None
    async with (
        start_fleet(
            api,
            tokens,
            db,
            poll_timeout=30,
            store_offload=run_inline,
            wall_clock=anchored_wall_clock(EPOCH),
        ) as fleet,
        trio.open_nursery() as nursery,
    ):
        await wait_all_polling(api, timeline.bots)
        origin = trio.current_time()
        fault_start += origin
        fault_end += origin
        users_stop += origin
        for tenant, token in enumerate(tokens):
            for c in range(timeline.chats):
                nursery.start_soon(
                    users.chat, tenant, token, FIRST_CHAT + c, timeline.period, users_stop
                )
        await trio.sleep_until(fault_start)
        if scenario.outage is not None:
            api.outage(fault_end, mode=OutageMode.MIXED)
        api.set_faults(scenario.faults)
        if scenario.revoke_one:
            api.revoke(tokens[0])
        if scenario.flood_factor > 1:
            # "Writes 20 times more": 19 more chats' worth of users, each at the usual pace.
            extra = round(timeline.chats * (scenario.flood_factor - 1))
            for c in range(extra):
                nursery.start_soon(
                    users.chat, 0, tokens[0], FIRST_CHAT + 1_000 + c, timeline.period, fault_end
                )
        await trio.sleep_until(fault_end)
        api.set_faults(None)
        await trio.sleep_until(users_stop)
        deadline = users_stop + timeline.drain
        # Polling the report: the simulator has no "all answered" event.
        # A revoked tenant's messages are never answered; a flooding one's backlog is drained.
        lost = 0 if scenario.revoke_one else None
        while trio.current_time() < deadline and _unanswered(api, lost):  # noqa: ASYNC110
            await trio.sleep(5.0)
        actors = fleet.handle.fleet.actors()
        dead_letters = sum(a.statistics().dead_letters for a in actors)
        troubled = sum(1 for a in actors if _troubled(a))
        ended = trio.current_time()
    report = api.report()
    first_reply = _first_replies(api)
    return _figures(
        name,
        users,
        first_reply,
        report_total=(report.user_messages, report.answered, report.duplicates),
        affected=affected,
        fault=(fault_start, fault_end),
        dead_letters=dead_letters,
        troubled=troubled,
        simulated=ended - origin,
    )


def _unanswered(api: SimulatedBotApi, affected: int | None) -> int:
    report = api.report()
    skip = report.bots[affected].bot_id if affected is not None else None
    return sum(len(b.unanswered) for b in report.bots if b.bot_id != skip)


def _troubled(actor: BotActor) -> bool:
    """Suspended, or its breaker is not closed (the health status lags: a 300 s window)."""
    stats = actor.statistics()
    return stats.status is BotStatus.SUSPENDED or stats.breaker.state is not BreakerState.CLOSED


def _first_replies(api: SimulatedBotApi) -> dict[int, float]:
    first: dict[int, float] = {}
    for bot in api.bots:
        for message in bot.replies:
            match = _TEXT.search(message.text)
            if match:
                n = int(match.group(1))
                if n not in first or message.time < first[n]:
                    first[n] = message.time
    return first


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def _figures(
    name: str,
    users: _Users,
    first_reply: dict[int, float],
    *,
    report_total: tuple[int, int, int],
    affected: int | None,
    fault: tuple[float, float],
    dead_letters: int,
    troubled: int,
    simulated: float,
) -> dict[str, Any]:
    fault_start, fault_end = fault
    healthy = [n for n, tenant in users.tenant_of.items() if tenant != affected]
    answered_healthy = [n for n in healthy if n in first_reply]
    in_window = [
        first_reply[n] - users.sent_at[n]
        for n in answered_healthy
        if fault_start <= users.sent_at[n] < fault_end
    ]
    before_end = [n for n in healthy if users.sent_at[n] < fault_end]
    if all(n in first_reply for n in before_end):
        last = max((first_reply[n] for n in before_end), default=fault_end)
        recovery: float | None = max(0.0, last - fault_end)
    else:
        recovery = None  # some never answered
    messages, answered, duplicates = report_total
    return {
        "scenario": name,
        "messages": messages,
        "answered_share": answered / messages if messages else 1.0,
        "healthy_messages": len(healthy),
        "healthy_answered_share": len(answered_healthy) / len(healthy) if healthy else 1.0,
        "duplicates": duplicates,
        "dead_letters": dead_letters,
        "recovery_s": recovery,
        "latency_p50_s": _percentile(in_window, 0.5),
        "latency_p95_s": _percentile(in_window, 0.95),
        "troubled_at_end": troubled,
        "simulated_s": simulated,
    }


def run_scenario(name: str, timeline: Timeline | None = None, *, seed: int = 1) -> dict[str, Any]:
    """One scenario on a fresh MockClock, a fresh database and a fresh simulated API."""
    timeline = timeline or Timeline()
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-") as tmp:
        wall = time.perf_counter()
        result = trio.run(
            _scenario,
            name,
            timeline,
            seed,
            Path(tmp) / "chaos.db",
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
    result["real_s"] = time.perf_counter() - wall
    return result


def run(
    quick: bool = False,
    *,
    timeline: Timeline | None = None,
    names: tuple[str, ...] = CHAOS_SCENARIOS,
    seeds: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The baseline and every scenario, for each seed; figures are medians over seeds."""
    timeline = timeline or (Timeline(fault=180.0) if quick else Timeline())
    seeds = seeds or ((1,) if quick else (1, 2, 3))
    rows = []
    for name in ("none", *names):
        samples = [run_scenario(name, timeline, seed=seed) for seed in seeds]
        rows.append(_combine(samples))
    return {
        "benchmark": "chaos",
        "timeline": timeline.__dict__,
        "seeds": list(seeds),
        "scenarios": rows,
    }


def _combine(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": samples[0]["scenario"]}
    for key, value in samples[0].items():
        if key == "scenario":
            continue
        values = [s[key] for s in samples]
        if any(v is None for v in values):
            out[key] = None if all(v is None for v in values) else values
        elif isinstance(value, (int, float)):
            ordered = sorted(values)
            out[key] = {
                "median": ordered[len(ordered) // 2],
                "min": ordered[0],
                "max": ordered[-1],
                "runs": len(values),
            }
    return out


def _pct(value: Any) -> str:
    if not isinstance(value, dict):
        return "–"
    if value["runs"] <= 1 or value["min"] == value["max"]:
        return f"{value['median']:.2%}"
    return f"{value['median']:.2%} ({value['min']:.2%}–{value['max']:.2%})"


def _seconds(value: Any) -> str:
    if value is None:
        return "never (some messages unanswered)"
    if isinstance(value, list):
        return "not in every run"
    return fmt(value, 1, " s")


def _why(rows: list[dict[str, Any]]) -> str:
    """Why the slow scenarios are slow: the rules that make them so, not a defect."""
    names = {r["scenario"] for r in rows}
    notes = []
    if "429-storm" in names:
        notes.append(
            "In the 429 storm every 429 closes the whole bot's flood gate for its "
            "retry_after (Telegram's rule), so with 30% of calls answered 429 a bot's gate is "
            "closed most of the time and it sends less than its users write: the backlog "
            "grows for the whole storm and drains after it."
        )
    if "transient-50" in names:
        notes.append(
            "At 50% faults, five failures in a row are common, so the breakers keep opening "
            "(60 s each) and replies wait parked until a half-open probe succeeds."
        )
    return (" ".join(notes) + "\n") if notes else ""


def markdown(results: dict[str, Any]) -> str:
    t = results["timeline"]
    rows = []
    baseline = results["scenarios"][0]
    base_p50 = baseline.get("latency_p50_s")
    base_p95 = baseline.get("latency_p95_s")
    for r in results["scenarios"]:
        name = r["scenario"]
        scenario = SCENARIOS[name]
        latency = "–"
        if isinstance(r.get("latency_p50_s"), dict) and isinstance(r.get("latency_p95_s"), dict):
            latency = (
                f"p50 {fmt(r['latency_p50_s'], 2, ' s')}, p95 {fmt(r['latency_p95_s'], 2, ' s')}"
            )
            if isinstance(base_p95, dict) and name != "none" and base_p95["median"] > 0:
                latency += f" (p95 ×{r['latency_p95_s']['median'] / base_p95['median']:.1f})"
        rows.append(
            [
                f"`{name}`: {scenario.description}",
                _pct(r["answered_share"]),
                _pct(r["healthy_answered_share"]),
                fmt(r["duplicates"], 0),
                fmt(r["dead_letters"], 0),
                "–" if name == "none" else _seconds(r.get("recovery_s")),
                latency,
                fmt(r["troubled_at_end"], 0),
                fmt(r["real_s"], 1, " s"),
            ]
        )
    base = (
        f"p50 {fmt(base_p50, 2, ' s')}, p95 {fmt(base_p95, 2, ' s')}"
        if isinstance(base_p50, dict) and isinstance(base_p95, dict)
        else "–"
    )
    return "\n".join(
        [
            "### Chaos scenarios (in process, MockClock)",
            "",
            f"{t['bots']} tenants × {t['chats']} private chats, each chat writing every "
            f"{t['period']:g} s on average (~{t['bots'] * t['chats'] / t['period']:.0f} "
            f"messages/s, the global limit is 25/s); {t['warmup']:g} s warm-up, then the fault for "
            f"{t['fault']:g} s (an outage for its own length), users go on {t['after']:g} s after "
            f"it ends, then up to {t['drain']:g} s to drain. Default settings (global 25 rps, "
            "delivery deadline 900 s). Seeds: "
            f"{', '.join(str(s) for s in results['seeds'])} (medians, min–max). "
            "*Healthy tenants*: all but the revoked or flooding one. *Recovery*: from the "
            "fault's end until every message sent before it was answered. *Latency*: healthy "
            f"tenants' messages sent during the fault window; baseline {base}. After an "
            "outage the parked replies drain at the global limit (25/s) less the users' "
            "ongoing traffic, so recovery takes about backlog ÷ (25 − load) seconds.",
            "",
            _why(results["scenarios"]),
            table(
                [
                    "scenario",
                    "answered (all tenants)",
                    "answered (healthy tenants)",
                    "duplicates",
                    "dead letters",
                    "recovery after the fault",
                    "healthy tenants' reply latency in the fault window",
                    "bots suspended or with a breaker not closed at the end",
                    "real time",
                ],
                rows,
            ),
        ]
    )
