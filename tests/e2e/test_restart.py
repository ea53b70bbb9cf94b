"""Restart: the real daemon stopped with SIGTERM and started again resumes where it was.

Per-bot totals, status and history are the same after the restart as before it, and nothing
is written twice: no user message answered twice, no health row stored twice.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import trio

from actors.simulator import FaultProfile, SimulatedBotApi, serve_sim
from tests.e2e.durable import (
    ADMIN_ENV,
    admin_client,
    duplicate_snapshots,
    integrity,
    kill_if_running,
    query,
    write_durable_config,
)
from tests.e2e.process import DaemonProcess

BOTS = 3  # answering bots
REVOKED = 1004  # a fourth bot, whose token Telegram revoked: SUSPENDED in both runs
CHATS = 2
MESSAGES = 3
# What must survive a restart (the bot_health_metrics columns the API shows).
PERSISTED = (
    "status",
    "circuit_state",
    "total_requests",
    "successful_requests",
    "failed_requests",
    "avg_response_time_ms",
    "rate_limited_count",
    "last_success_at",
    "last_failure_at",
    "last_error",
    "handled_updates",
    "replies_sent",
    "dead_letters",
    "ambiguous_sends",
    "handler_errors",
)
SUMMARY = (
    "total_bots",
    "by_status",
    "total_requests",
    "successful_requests",
    "failed_requests",
    "handled_updates",
    "replies_sent",
    "dead_letters",
)


def persisted(body: dict[str, Any]) -> dict[str, Any]:
    return {key: body[key] for key in PERSISTED}


async def bots_state(url: str, user_ids: list[int]) -> dict[int, dict[str, Any]]:
    async with admin_client(url) as admin:
        return {
            uid: (await admin.get(f"/admin/system/bot-health/{uid}")).raise_for_status().json()
            for uid in user_ids
        }


async def histories(url: str, user_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    async with admin_client(url) as admin:
        return {
            uid: (await admin.get(f"/admin/system/bot-health/history/{uid}?hours=1"))
            .raise_for_status()
            .json()["rows"]
            for uid in user_ids
        }


async def summary(url: str) -> dict[str, Any]:
    async with admin_client(url) as admin:
        body = (await admin.get("/admin/system/bot-health/summary")).raise_for_status().json()
    return {key: body[key] for key in SUMMARY}


async def settled_summary(url: str, expected_total: int) -> dict[str, Any]:
    """The fleet summary once every bot's latest report reached it (reports are periodic)."""
    with trio.fail_after(30):
        # Polling over HTTP: another process has no event to wait on.
        while (found := await summary(url))["total_requests"] != expected_total:  # noqa: ASYNC110
            await trio.sleep(0.05)
    return found


async def wait_suspended(url: str, user_id: int) -> None:
    with trio.fail_after(30):
        while (await bots_state(url, [user_id]))[user_id]["status"] != "suspended":  # noqa: ASYNC110
            await trio.sleep(0.05)


async def wait_handled(url: str, expected: dict[int, int]) -> None:
    """Until every bot has handled (replied and marked done) what it was sent."""
    with trio.fail_after(30):
        while True:
            state = await bots_state(url, list(expected))
            if all(state[uid]["handled_updates"] >= n for uid, n in expected.items()):
                return
            await trio.sleep(0.05)


async def test_sigterm_and_restart_keep_totals_status_and_history(tmp_path: Path) -> None:
    rng = random.Random(21)
    api = SimulatedBotApi(rng=random.Random(22))
    # A little latency, so the response-time average restored is a real one.
    api.set_faults(FaultProfile(latency=0.002, latency_jitter=0.002))
    tokens = {1001 + i: SimulatedBotApi.make_token(6_300_000_001 + i, rng) for i in range(BOTS)}
    answering = dict(tokens)
    tokens[REVOKED] = SimulatedBotApi.make_token(6_300_000_999, rng)
    for token in tokens.values():
        api.add_bot(token)
    api.revoke(tokens[REVOKED])
    user_ids = sorted(tokens)
    db = tmp_path / "restart.db"

    config_path = tmp_path / "botvisor.toml"
    first = DaemonProcess(config_path, env=ADMIN_ENV)
    second = DaemonProcess(config_path, env=ADMIN_ENV)
    async with trio.open_nursery() as nursery:
        try:
            api_url = await nursery.start(serve_sim, api)
            # Long polls (50 s) never finish during the test: every call counted is a reply or
            # the first poll, so the totals cannot move between the readings compared.
            write_durable_config(
                config_path, api_base=api_url, db_path=db, bots=tokens, poll_timeout=50
            )

            url = await first.start(nursery)
            for n in range(MESSAGES):
                for token in answering.values():
                    for chat in range(CHATS):
                        api.send_user_message(token, 500 + chat, f"first run m{n} c{chat}")
            await wait_handled(url, dict.fromkeys(answering, CHATS * MESSAGES))
            await wait_suspended(url, REVOKED)
            async with admin_client(url) as admin:
                for _ in range(2):
                    written = (await admin.post("/admin/system/bot-health/persist-now")).json()
                    assert written == {"rows_written": BOTS + 1}
            before = await bots_state(url, user_ids)
            history_before = await histories(url, user_ids)
            summary_before = await settled_summary(
                url, sum(state["total_requests"] for state in before.values())
            )
            assert summary_before["total_bots"] == BOTS + 1
            assert summary_before["by_status"]["suspended"] == 1
            first.send_signal(signal.SIGTERM)
            assert await first.wait() == 0, first.text

            # On the way out: one final snapshot per bot, equal to what the API showed.
            stored = {
                uid: query(
                    db,
                    "SELECT recorded_at, total_requests, status FROM bot_health_metrics "
                    "WHERE user_id = ? ORDER BY recorded_at",
                    (uid,),
                )
                for uid in user_ids
            }
            for uid in user_ids:
                assert len(stored[uid]) == 3
                assert stored[uid][-1][1:] == (before[uid]["total_requests"], before[uid]["status"])
            assert query(db, "SELECT COUNT(*) FROM inbox WHERE done_at IS NULL") == [(0,)]

            url = await second.start(nursery)
            after = await bots_state(url, user_ids)
            for uid in user_ids:
                assert persisted(after[uid]) == persisted(before[uid])
            for uid in answering:
                assert after[uid]["successful_requests"] > 0
            assert after[REVOKED]["status"] == "suspended"
            assert after[REVOKED]["suspended_reason"] == before[REVOKED]["suspended_reason"]
            assert after[REVOKED]["failed_requests"] > 0
            assert "Unauthorized" in after[REVOKED]["last_error"]
            assert await summary(url) == summary_before
            history_after = await histories(url, user_ids)
            for uid in user_ids:
                # The same rows as before, plus the final snapshot of the first run.
                assert history_after[uid][:2] == history_before[uid]
                assert [r["recorded_at"] for r in history_after[uid]] == [r[0] for r in stored[uid]]

            # The second run handles new messages, and nothing of the first run again.
            for token in answering.values():
                api.send_user_message(token, 500, "second run")
            await wait_handled(url, {uid: CHATS * MESSAGES + 1 for uid in answering})
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0, second.text
            nursery.cancel_scope.cancel()
        finally:
            kill_if_running(first, second)

    report = api.report()
    assert report.user_messages == BOTS * (CHATS * MESSAGES + 1)
    assert report.answered == report.user_messages
    assert report.replies == report.user_messages, report.summary()
    assert report.duplicates == 0
    assert duplicate_snapshots(db) == []
    assert query(db, "SELECT COUNT(*) FROM bot_health_metrics") == [((BOTS + 1) * 4,)]
    assert integrity(db) == ["ok"]
    for daemon in (first, second):
        assert "Traceback" not in daemon.text
