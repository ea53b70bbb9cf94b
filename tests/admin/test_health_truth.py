"""One health truth: the summary, the unhealthy list, the per-bot record and /metrics read
one pull of the bots, so they never contradict each other."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import trio
import trio.testing

from actors import BreakerChanged
from actors.simulator import FaultProfile, SimulatedBotApi
from tests.admin.helpers import AdminFleet, admin_fleet

BASE = "/admin/system/bot-health"


async def _reads(admin: AdminFleet, user_id: int) -> tuple[dict[str, Any], ...]:
    summary = (await admin.http.get(f"{BASE}/summary")).json()
    unhealthy = (await admin.http.get(f"{BASE}/unhealthy")).json()
    one = (await admin.http.get(f"{BASE}/{user_id}")).json()
    return summary, unhealthy, one


def _counts(unhealthy: dict[str, Any]) -> dict[str, int]:
    counts = {"degraded": 0, "unhealthy": 0, "suspended": 0}
    for bot in unhealthy["bots"]:
        counts[bot["status"]] += 1
    return counts


async def test_right_after_a_breaker_opens_the_summary_agrees_with_unhealthy_and_the_bot(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(5))
    api.set_faults(FaultProfile(latency=0.05))
    async with admin_fleet(tmp_path / "h.db", [1, 2, 3], api=api) as admin:
        fleet = admin.fleet
        for uid in (1, 2, 3):
            api.send_user_message(fleet.tokens[uid], 10 + uid, f"hi {uid}")
        await trio.sleep(5)
        subscription = fleet.handle.metrics.subscribe(2)
        api.set_faults(FaultProfile(error_rate_5xx=1.0, latency=0.05), token=fleet.tokens[2])
        api.send_user_message(fleet.tokens[2], 12, "still there?")
        seen: list[dict[str, object]] = []
        async for event in subscription.receive:
            if isinstance(event, BreakerChanged) and event.state == "open":
                break
            seen.append(event.to_json())
        opened_at = trio.current_time()
        at = 1_800_000_000.0 + opened_at
        # The event stream says what changed and why, at the instant it did: the breaker,
        # then the status it brought.
        following = await subscription.receive.receive()
        # The failures before it made the bot degraded (no single reason: the call rate).
        assert [(e["type"], e["previous"], e["status"], e["reason"]) for e in seen] == [
            ("status", "healthy", "degraded", "")
        ]
        assert (event.to_json(), following.to_json()) == (
            {
                "type": "breaker",
                "user_id": 2,
                "at": at,
                "previous": "closed",
                "state": "open",
                "reason": "5 consecutive failed polls",
            },
            {
                "type": "status",
                "user_id": 2,
                "at": at,
                "previous": "degraded",
                "status": "unhealthy",
                "reason": "breaker open",
            },
        )
        summary, unhealthy, one = await _reads(admin, 2)
        assert trio.current_time() == opened_at  # all three in the instant it opened

    assert summary["by_status"] == {"healthy": 2, "degraded": 0, "unhealthy": 1, "suspended": 0}
    assert {k: v for k, v in summary["by_status"].items() if k != "healthy"} == _counts(unhealthy)
    assert [bot["user_id"] for bot in unhealthy["bots"]] == [2]
    assert unhealthy["bots"][0] == one
    assert (one["status"], one["circuit_state"]) == ("unhealthy", "open")


async def test_an_operators_change_shows_in_every_read_of_the_same_instant(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "h.db", [1, 2]) as admin:
        await trio.sleep(5)
        before = await _reads(admin, 2)
        admin.fleet.handle.fleet.get(2).pipeline.breaker.force_open()
        forced = await _reads(admin, 2)
        reset = await admin.http.post("/admin/system/circuit-breakers/2/reset")
        assert reset.status_code == 200
        after = await _reads(admin, 2)
        assert trio.current_time() == 5  # no read waited for time to pass

    for summary, unhealthy, one in (before, after):
        assert summary["by_status"]["healthy"] == 2
        assert unhealthy["count"] == 0
        assert (one["status"], one["circuit_state"]) == ("healthy", "closed")
    summary, unhealthy, one = forced
    assert summary["by_status"]["unhealthy"] == 1
    assert unhealthy["bots"] == [one]
    assert (one["status"], one["circuit_state"]) == ("unhealthy", "forced_open")


async def test_reads_in_one_instant_share_one_pull_and_a_later_read_pulls_afresh(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(8))
    async with admin_fleet(tmp_path / "h.db", [1, 2], api=api) as admin:
        health = admin.fleet.handle.metrics.health
        await trio.sleep(5)
        pulls = health.pulls
        first, _, _ = await _reads(admin, 1)
        scraped = await admin.http.get("/metrics")
        assert scraped.status_code == 200
        again, _, _ = await _reads(admin, 1)
        # One status pull for the reads; /metrics needs every bot's details: one full pull,
        # which the reads after it reuse.
        assert health.pulls == pulls + 2
        assert again == first
        api.send_user_message(admin.fleet.tokens[1], 7, "news")
        await trio.sleep(5)
        later, _, _ = await _reads(admin, 1)
        assert health.pulls == pulls + 3

    assert later["handled_updates"] == first["handled_updates"] + 1


async def test_the_summarys_breaker_counts_agree_with_the_breaker_summary_in_either_pull(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "h.db", [1, 2, 3, 4]) as admin:
        await trio.sleep(5)
        fleet = admin.fleet.handle.fleet
        fleet.get(2).pipeline.breaker.force_open()  # the bot is UNHEALTHY: read in full
        fleet.get(3).pipeline.breaker.disable()  # still HEALTHY: counted from its sample
        status_pull = (await admin.http.get(f"{BASE}/summary")).json()
        breakers = (await admin.http.get("/admin/system/circuit-breakers/summary")).json()
        assert (await admin.http.get("/metrics")).status_code == 200
        # In the same instant, the summary now comes from /metrics' full pull.
        full_pull = (await admin.http.get(f"{BASE}/summary")).json()
        assert trio.current_time() == 5

    expected = {"closed": 2, "open": 0, "half_open": 0, "disabled": 1, "forced_open": 1}
    assert status_pull["by_breaker"] == breakers["by_state"] == expected
    assert full_pull["by_breaker"] == expected
    assert status_pull["by_status"]["unhealthy"] == full_pull["by_status"]["unhealthy"] == 1
    assert sum(status_pull["by_breaker"].values()) == status_pull["total_bots"] == 4
    assert [b["user_id"] for b in breakers["not_closed"]] == [2, 3]
    assert [b["state"] for b in breakers["not_closed"]] == ["forced_open", "disabled"]
