"""The /admin/system endpoints 1–8 and 11 against a running in-process fleet.

The daemon runs on the simulated Bot API (tests/harness.py, MockClock); the admin app is built
from the daemon's own components and driven in process over ASGI. Every check is something an
operator reads or does: which bots are unwell and why, what a breaker is doing, resetting it,
retry numbers, a snapshot on demand.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from actors import BreakerState
from actors.simulator import FaultProfile, SimulatedBotApi
from tests.harness import EPOCH, Fleet, admin_client, running_fleet

ADMIN_TOKEN = "system-endpoints-admin-token-0123456789"
BASE = "/admin/system"

# The fields of one bot's health, as endpoints 2 and 3 show it.
BOT_HEALTH_KEYS = {
    "user_id",
    "status",
    "actor_state",
    "supervisor_state",
    "suspended_reason",
    "total_requests",
    "successful_requests",
    "failed_requests",
    "error_rate",
    "avg_response_time_ms",
    "consecutive_failures",
    "polling_status",
    "call_status",
    "polls",
    "poll_failures",
    "poll_consecutive_failures",
    "last_poll_at",
    "rate_limited_count",
    "chat_errors",
    "last_success_at",
    "last_failure_at",
    "last_error",
    "webhook_registration_error",
    "circuit_state",
    "handled_updates",
    "replies_sent",
    "dead_letters",
    "ambiguous_sends",
    "handler_errors",
}
BREAKER_KEYS = {
    "user_id",
    "state",
    "consecutive_failures",
    "poll_consecutive_failures",
    "opened_by_polls",
    "failure_count",
    "success_count",
    "rejected_count",
    "opened_at",
    "half_open_at",
    "transitions",
    "probe_in_flight",
    "window_calls",
    "window_failures",
    "generation",
}
RETRY_KEYS = {
    "calls",
    "attempts",
    "retries",
    "retries_by_category",
    "recovered",
    "exhausted",
    "uncertain",
    "recovery_rate",
}


@dataclass
class Admin:
    fleet: Fleet
    http: httpx.AsyncClient

    @property
    def api(self) -> SimulatedBotApi:
        return self.fleet.api

    async def get(self, path: str) -> httpx.Response:
        return self._checked(await self.http.get(BASE + path))

    async def post(self, path: str) -> httpx.Response:
        return self._checked(await self.http.post(BASE + path))

    def _checked(self, response: httpx.Response) -> httpx.Response:
        # Whatever an endpoint answers, no bot token may be in it.
        for token in self.fleet.tokens.values():
            assert token not in response.text
            assert token.split(":")[1] not in response.text
        assert response.headers["content-type"].startswith("application/json")
        return response


def admin_over(fleet: Fleet) -> httpx.AsyncClient:
    """An authorized in-process client of an admin app built from the daemon's parts."""
    return admin_client(fleet, ADMIN_TOKEN)


@asynccontextmanager
async def troubled_fleet(tmp_path: Path) -> AsyncIterator[Admin]:
    """Four bots that answered one message each; then bot 3's token is revoked and every call
    of bot 2 fails with a 500 until its breaker opens, with a reply parked. Bots 1 and 4 stay
    healthy."""
    api = SimulatedBotApi(rng=random.Random(21))
    api.set_faults(FaultProfile(latency=0.05))
    async with running_fleet(tmp_path / "admin.db", [1, 2, 3, 4], api=api) as fleet:
        for uid in (1, 2, 3, 4):
            api.send_user_message(fleet.tokens[uid], 10 + uid, f"hi {uid}")
        await trio.sleep(5)
        api.revoke(fleet.tokens[3])
        api.set_faults(FaultProfile(error_rate_5xx=1.0, latency=0.05), token=fleet.tokens[2])
        # The long poll in progress was answered before the faults; the reply is not.
        api.send_user_message(fleet.tokens[2], 12, "still there?")
        await trio.sleep(20)  # breaker of bot 2 open; every bot has reported since
        assert fleet.handle.fleet.get(2).statistics().breaker.state is BreakerState.OPEN
        async with admin_over(fleet) as http:
            yield Admin(fleet, http)


async def test_bot_health_summary_counts_the_fleet_by_status(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with troubled_fleet(tmp_path) as admin:
        response = await admin.get("/bot-health/summary")
        now = trio.current_time()

    assert response.status_code == 200
    body = response.json()
    assert body["generated_at"] == EPOCH + now
    assert body["total_bots"] == 4
    assert body["by_status"] == {"healthy": 2, "degraded": 0, "unhealthy": 1, "suspended": 1}
    # The breakers too, read in the same pass (the dashboard draws both from this answer).
    assert body["by_breaker"] == {
        "closed": 3,
        "open": 1,
        "half_open": 0,
        "disabled": 0,
        "forced_open": 0,
    }
    assert body["handled_updates"] == 4
    assert body["replies_sent"] == 4
    assert body["dead_letters"] == 0
    assert body["failed_requests"] > 0
    assert body["total_requests"] >= body["successful_requests"] + body["failed_requests"]
    assert body["error_rate"] == pytest.approx(body["failed_requests"] / body["total_requests"])
    assert body["avg_response_time_ms"] > 0


async def test_unhealthy_lists_exactly_the_bots_that_are_not_healthy_and_why(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with troubled_fleet(tmp_path) as admin:
        response = await admin.get("/bot-health/unhealthy")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    by_id = {bot["user_id"]: bot for bot in body["bots"]}
    assert set(by_id) == {2, 3}
    for bot in body["bots"]:
        assert set(bot) == BOT_HEALTH_KEYS
    failing, revoked = by_id[2], by_id[3]
    assert failing["status"] == "unhealthy"
    assert failing["circuit_state"] == "open"
    # Every request fails: the polls' run or the calls' run reached the threshold.
    assert max(failing["consecutive_failures"], failing["poll_consecutive_failures"]) >= 5
    assert "500" in failing["last_error"]
    assert failing["suspended_reason"] is None
    assert revoked["status"] == "suspended"
    assert revoked["actor_state"] == "suspended"
    assert "Unauthorized" in revoked["suspended_reason"]


async def test_one_bots_health_matches_its_statistics(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with troubled_fleet(tmp_path) as admin:
        response = await admin.get("/bot-health/1")
        stats = admin.fleet.handle.fleet.get(1).statistics()

    assert response.status_code == 200
    body = response.json()
    assert set(body) == BOT_HEALTH_KEYS
    assert body["user_id"] == 1
    assert body["status"] == "healthy"
    assert body["actor_state"] == "running"
    assert body["circuit_state"] == "closed"
    assert body["handled_updates"] == body["replies_sent"] == 1
    assert body["total_requests"] == stats.health.total_requests
    assert body["successful_requests"] == stats.health.successful_requests
    assert body["failed_requests"] == 0
    assert body["last_error"] is None
    # The simulated API answers in 50 ms; only the reply was timed (long polls are not).
    assert body["avg_response_time_ms"] == pytest.approx(50.0)
    assert body["last_success_at"] == stats.health.last_success_at
    assert body["last_success_at"] > EPOCH


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/bot-health/{}"),
        ("GET", "/circuit-breakers/{}"),
        ("POST", "/circuit-breakers/{}/reset"),
    ],
)
async def test_an_unknown_bot_is_a_404_and_a_malformed_id_a_422(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, method: str, path: str
) -> None:
    async with running_fleet(tmp_path / "x.db", [1]) as fleet, admin_over(fleet) as http:
        unknown = await http.request(method, BASE + path.format(999))
        malformed = await http.request(method, BASE + path.format("abc"))
        negative = await http.request(method, BASE + path.format("-5"))

    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": {"code": "not_found", "message": "no bot with user_id 999 is registered"}
    }
    assert malformed.status_code == 422
    error = malformed.json()["error"]
    assert error["code"] == "invalid_request"
    assert "user_id must be a whole number" in error["message"]
    assert "'abc'" in error["message"]
    assert negative.status_code == 422
    assert negative.json()["error"]["code"] == "invalid_request"


async def test_breaker_summary_and_detail_show_the_open_breaker(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with troubled_fleet(tmp_path) as admin:
        summary = await admin.get("/circuit-breakers/summary")
        detail = await admin.get("/circuit-breakers/2")
        closed = await admin.get("/circuit-breakers/1")
        opened_at = admin.fleet.handle.fleet.get(2).statistics().breaker.opened_at
        assert opened_at is not None

    assert summary.status_code == detail.status_code == closed.status_code == 200
    body = summary.json()
    assert body["total"] == 4
    assert body["by_state"] == {
        "closed": 3,
        "open": 1,
        "half_open": 0,
        "disabled": 0,
        "forced_open": 0,
    }
    assert [b["user_id"] for b in body["not_closed"]] == [2]
    assert set(body["not_closed"][0]) == BREAKER_KEYS

    breaker = detail.json()
    assert set(breaker) == BREAKER_KEYS
    assert breaker == body["not_closed"][0]
    assert breaker["state"] == "open"
    assert max(breaker["consecutive_failures"], breaker["poll_consecutive_failures"]) >= 5
    assert breaker["failure_count"] >= 5
    # Wall-clock times, like every other time the API shows.
    assert breaker["opened_at"] == pytest.approx(EPOCH + opened_at, abs=1e-6)
    assert breaker["half_open_at"] == pytest.approx(EPOCH + opened_at + 60, abs=1e-6)
    assert breaker["transitions"] == 1

    assert closed.json()["state"] == "closed"
    assert closed.json()["half_open_at"] is None
    assert closed.json()["failure_count"] == 0


async def test_resetting_an_open_breaker_lets_the_bot_work_again_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with troubled_fleet(tmp_path) as admin:
        api, fleet = admin.api, admin.fleet
        bot = fleet.handle.fleet.get(2)
        opened_at = bot.statistics().breaker.opened_at
        assert opened_at is not None
        # Telegram is fine again and a user writes; the breaker would wait out its 60 s.
        api.set_faults(FaultProfile(latency=0.05), token=fleet.tokens[2])
        api.send_user_message(fleet.tokens[2], 12, "are you back?")
        await trio.sleep(1)
        assert api.report().bot(fleet.bot_id(2)).answered == 1  # only the first message
        reset_at = trio.current_time()
        reset = await admin.post("/circuit-breakers/2/reset")
        after = await admin.get("/circuit-breakers/2")
        await trio.sleep(2)
        report = api.report().bot(fleet.bot_id(2))
        health = await admin.get("/bot-health/2")

    assert reset_at < opened_at + 60
    assert reset.status_code == 200
    assert reset.json()["user_id"] == 2
    assert reset.json()["state"] == "closed"
    assert reset.json()["consecutive_failures"] == 0
    assert reset.json()["half_open_at"] is None
    assert after.json()["state"] == "closed"
    # The reset woke the bot: the parked reply and the waiting message were answered in order
    # within two seconds (a private chat takes one message a second), not after the 60 s.
    assert report.answered == 3
    assert report.out_of_order == report.duplicates == 0
    assert health.json()["circuit_state"] == "closed"


async def test_retry_statistics_add_up_and_reset_to_zero(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with troubled_fleet(tmp_path) as admin:
        before = await admin.get("/retry-statistics")
        reset = await admin.post("/retry-statistics/reset")
        after = await admin.get("/retry-statistics")

    assert before.status_code == reset.status_code == after.status_code == 200
    body = before.json()
    assert set(body) == {"overall", "bots"}
    assert set(body["overall"]) == RETRY_KEYS
    assert [b["user_id"] for b in body["bots"]] == [1, 2, 3, 4]
    for bot in body["bots"]:
        assert set(bot) == RETRY_KEYS | {"user_id"}
    per_bot = {b["user_id"]: b for b in body["bots"]}
    overall = body["overall"]
    for key in ("calls", "attempts", "retries", "recovered", "exhausted", "uncertain"):
        assert overall[key] == sum(b[key] for b in body["bots"]), key
    # Bot 2's 500s were retried as transient network errors, and gave up; bot 3's 401 was not
    # retried at all.
    assert per_bot[2]["retries_by_category"]["transient_network"] > 0
    assert per_bot[2]["exhausted"] > 0
    assert per_bot[3]["retries"] == 0
    assert overall["retries"] == sum(overall["retries_by_category"].values())
    assert 0.0 <= overall["recovery_rate"] < 1.0

    assert reset.json() == {"reset": 4}
    zero = after.json()["overall"]
    assert zero["calls"] == zero["retries"] == zero["exhausted"] == zero["recovered"] == 0
    assert set(zero["retries_by_category"].values()) == {0}
    assert zero["recovery_rate"] == 1.0
    assert all(b["retries"] == 0 for b in after.json()["bots"])


async def test_persist_now_writes_one_snapshot_row_per_bot(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with troubled_fleet(tmp_path) as admin:
        store = admin.fleet.handle.store
        rows_before = await store.snapshot_count()
        response = await admin.post("/bot-health/persist-now")
        rows_after = await store.snapshot_count()
        latest = await store.latest_snapshots()
        now = trio.current_time()

    assert response.status_code == 200
    assert response.json() == {"rows_written": 4}
    assert rows_after == rows_before + 4
    assert {uid: row.status for uid, row in latest.items()} == {
        1: "healthy",
        2: "unhealthy",
        3: "suspended",
        4: "healthy",
    }
    assert {row.recorded_at for row in latest.values()} == {EPOCH + now}
    assert latest[2].circuit_state == "open"


async def test_a_long_history_is_cut_to_its_newest_rows_and_says_so(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import admin.app
    from storage import StorageConfig

    monkeypatch.setattr(admin.app, "HISTORY_ROW_LIMIT", 3)
    async with (
        running_fleet(
            tmp_path / "h.db",
            [1],
            storage=StorageConfig(path=str(tmp_path / "h.db"), persist_interval=60),
        ) as fleet,
        admin_over(fleet) as http,
    ):
        await trio.sleep(60 * 5 + 1)  # five periodic snapshots
        page = (await http.get(f"{BASE}/bot-health/history/1?hours=1")).json()
        assert page["truncated"] is True
        assert page["count"] == 3
        times = [row["recorded_at"] for row in page["rows"]]
        assert times == [EPOCH + 180, EPOCH + 240, EPOCH + 300]
        whole = (await http.get(f"{BASE}/bot-health/unhealthy-history?hours=1")).json()
        assert whole["truncated"] is False
