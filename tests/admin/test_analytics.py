"""``/admin/analytics``: what a tenant's bot received and sent, read back through the API,
agrees with what the simulated Telegram saw."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import trio
import trio.testing

from actors.simulator import SimulatedBotApi
from admin.analytics import CSV_COLUMNS
from supervisor.cli import build_parser
from supervisor.remote import usage_command
from tests import payloads
from tests.admin.helpers import ADMIN_TOKEN, admin_fleet, served
from tests.harness import running_fleet


async def test_usage_counts_what_the_simulator_saw_by_type_and_in_csv(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1, 2]) as admin:
        token1, token2 = admin.fleet.tokens[1], admin.fleet.tokens[2]
        for n in range(5):
            admin.api.send_user_message(token1, 111 + n % 2, f"question {n}")
        admin.api.send_update(token1, payloads.edited_message(chat_id=111))
        admin.api.send_update(token1, payloads.inline_query(user_id=333))
        admin.api.send_update(token1, payloads.my_chat_member(chat_id=-4001, user_id=222))
        admin.api.send_user_message(token2, 999, "hello")
        await trio.sleep(30)
        report = admin.api.report()

        answer = await admin.http.get("/admin/analytics/usage?user_id=1&bucket=day")
        assert answer.status_code == 200, answer.text
        totals = answer.json()["totals"]
        assert totals["updates_by_type"] == {
            "message": 5,
            "edited_message": 1,
            "inline_query": 1,
            "my_chat_member": 1,
        }
        assert totals["updates"] == 8
        # Echo answers the edited message too: six replies.
        assert totals["sends"] == report.bot(admin.fleet.bot_id(1)).replies == 6
        assert totals["api_calls_by_method"]["sendMessage"] == {"ok": 6}
        assert totals["api_calls_by_method"]["getUpdates"]["ok"] >= 1
        # Chats 111, 112 and the group; users 111, 112, 333 and 222.
        assert (totals["distinct_chats"], totals["distinct_users"]) == (3, 4)
        assert totals["replies_timed"] == 6
        assert totals["reply_latency_p95_ms"] is not None

        fleet = (await admin.http.get("/admin/analytics/usage?bucket=month")).json()
        assert fleet["user_id"] is None
        assert fleet["totals"]["updates"] == 9
        assert fleet["totals"]["sends"] == report.replies == 7

        top = (await admin.http.get("/admin/analytics/top?metric=updates")).json()
        assert [(t["user_id"], t["value"]) for t in top["tenants"]] == [(1, 8), (2, 1)]

        sheet = await admin.http.get("/admin/analytics/usage.csv?bucket=day")
        assert sheet.status_code == 200
        assert sheet.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(sheet.text)))
        assert list(rows[0]) == list(CSV_COLUMNS)
        assert [(r["user_id"], r["updates"], r["sends"]) for r in rows] == [
            ("1", "8", "6"),
            ("2", "1", "1"),
        ]
        assert rows[0]["updates_my_chat_member"] == "1"
        assert rows[0]["start"].endswith("T00:00:00Z")


async def test_bad_ranges_are_422_naming_what_to_change(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        backwards = await admin.http.get(
            "/admin/analytics/usage?from=2027-01-02T00:00:00Z&to=2027-01-01T00:00:00Z"
        )
        assert backwards.status_code == 422
        assert "from must be before to" in backwards.json()["error"]["message"]
        too_old = await admin.http.get(
            "/admin/analytics/usage.csv?bucket=hour&from=2020-01-01T00:00:00Z"
        )
        assert too_old.status_code == 422
        message = too_old.json()["error"]["message"]
        assert "35 days" in message and "bucket=day" in message
        naive = await admin.http.get("/admin/analytics/usage?from=2027-01-01T00:00:00")
        assert naive.status_code == 422
        assert "from" in naive.json()["error"]["message"]
        assert (await admin.http.get("/admin/analytics/top?limit=0")).status_code == 422


async def test_botvisor_usage_prints_a_table_and_csv_from_a_served_daemon(
    tmp_path: Path,
) -> None:
    api = SimulatedBotApi(rng=random.Random(3))
    with trio.fail_after(60):
        async with running_fleet(tmp_path / "c.db", [1], api=api, configure=served()) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            for n in range(3):
                api.send_user_message(fleet.tokens[1], 111, f"hello {n}")
            while api.report().answered < 3:  # noqa: ASYNC110
                await trio.sleep(0.05)
            await fleet.handle.store.flush()
            env = {"BOTVISOR_ADMIN_TOKEN": ADMIN_TOKEN}

            def run(*argv: str) -> tuple[int, str]:
                out = io.StringIO()
                args = build_parser().parse_args(["usage", "--url", url, *argv])
                return usage_command(args, env=env, out=out), out.getvalue()

            code, table = await trio.to_thread.run_sync(run, "--days", "2")
            assert code == 0
            header, *_days, total = table.splitlines()[1:]
            assert header.split()[:3] == ["day", "updates", "sends"]
            assert total.split()[:3] == ["total", "3", "3"]
            code, sheet = await trio.to_thread.run_sync(run, "--user-id", "1", "--csv")
            assert code == 0
            (row,) = list(csv.DictReader(io.StringIO(sheet)))
            assert (row["user_id"], row["updates_message"], row["sends"]) == ("1", "3", "3")
            code, _ = await trio.to_thread.run_sync(run, "--days", "0")
            assert code == 2
