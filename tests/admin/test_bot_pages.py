"""``GET /admin/bots`` in pages, filtered and searched (what the dashboard's bot list asks)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from tests.admin.helpers import admin_fleet


async def test_bots_come_in_pages_that_follow_the_cursor_and_cover_every_bot_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [5, 1, 12, 3, 21]) as admin:
        seen: list[int] = []
        cursor: int | None = None
        pages = 0
        while True:
            params = {"limit": "2", **({"cursor": str(cursor)} if cursor is not None else {})}
            body = (await admin.http.get("/admin/bots", params=params)).json()
            pages += 1
            seen += [bot["user_id"] for bot in body["bots"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert (seen, pages) == ([1, 3, 5, 12, 21], 3)
        first = (await admin.http.get("/admin/bots", params={"limit": "2"})).json()
        assert (first["count"], first["matching"]) == (2, 5)
        # Without a limit, every bot, as before.
        assert (await admin.http.get("/admin/bots")).json()["count"] == 5


async def test_bots_are_filtered_by_breaker_and_mode_and_searched_by_user_id(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1, 12, 121, 7]) as admin:
        admin.fleet.handle.fleet.get(12).pipeline.breaker.force_open()
        opened = (await admin.http.get("/admin/bots", params={"breaker": "forced_open"})).json()
        assert [b["user_id"] for b in opened["bots"]] == [12]
        found = (await admin.http.get("/admin/bots", params={"q": "12"})).json()
        assert [b["user_id"] for b in found["bots"]] == [12, 121]
        webhook = (await admin.http.get("/admin/bots", params={"mode": "webhook"})).json()
        assert webhook["bots"] == []
        polling = (await admin.http.get("/admin/bots", params={"mode": "polling"})).json()
        assert polling["count"] == 4
        by_status = {
            status: [
                b["user_id"]
                for b in (await admin.http.get("/admin/bots", params={"status": status})).json()[
                    "bots"
                ]
            ]
            for status in ("healthy", "degraded", "unhealthy", "suspended")
        }
        # The forced-open bot is unhealthy; each bot is under its own status exactly once.
        assert 12 in by_status["unhealthy"]
        assert sorted(uid for ids in by_status.values() for uid in ids) == [1, 7, 12, 121]


async def test_bad_page_and_filter_values_are_422s_naming_the_parameter(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        for params, name in [
            ({"limit": "0"}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"cursor": "-1"}, "cursor"),
            ({"status": "fine"}, "status"),
            ({"breaker": "ajar"}, "breaker"),
            ({"mode": "carrier-pigeon"}, "mode"),
            ({"q": "abc"}, "q"),
        ]:
            response = await admin.http.get("/admin/bots", params=params)
            assert response.status_code == 422, params
            assert name in response.json()["error"]["message"], response.text
