"""The fleet gateway over fake shards (``httpx.MockTransport``, deterministic): routing to the
owner, the 421 followed once, fleet reads fanned out and merged with one shard's paging
contract, a hung shard named after its timeout (MockClock), every shard failed a 502."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors import jump_hash
from admin import GatewayConfig, create_gateway_app
from admin.merge import (
    merge_health_summaries,
    merge_retry_statistics,
    merge_top,
    merge_unhealthy_history,
    merge_usage,
    merge_usage_csv,
)

TOKEN = "gateway-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHARDS = 3


def _bot(user_id: int, shard: int) -> dict[str, Any]:
    return {"user_id": user_id, "status": "healthy", "held_by": shard}


@dataclass
class FakeShard:
    """One shard's admin API, as much of it as the gateway reads: its bots, paged like
    ``admin.bots``; a mode that makes it hang, refuse connections or fail."""

    index: int
    bots: set[int]
    mode: str = "ok"
    seen: list[tuple[str, str, str, str | None, str | None]] = field(default_factory=list)
    moved: dict[int, int] = field(default_factory=dict)  # user_id -> the shard that has it now
    delay: float = 0.0  # seconds before it answers

    async def answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(
            (
                request.method,
                request.url.path,
                request.url.query.decode(),
                request.headers.get("authorization"),
                request.headers.get("x-forwarded-for"),
            )
        )
        if self.mode == "hang":
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        if self.mode == "refused":
            raise httpx.ConnectError("[Errno 111] Connection refused (secret internals)")
        if self.mode == "503":
            return httpx.Response(503, json={"error": {"code": "unavailable", "message": "x"}})
        if self.mode == "garbage":
            return httpx.Response(200, content=b"<html>a proxy's error page</html>")
        if self.mode == "401":
            return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "x"}})
        return self.route(request)

    def route(self, request: httpx.Request) -> httpx.Response:
        path, query = request.url.path, request.url.params
        if path == "/admin/bots" and request.method == "GET":
            return httpx.Response(200, json=self.page(query))
        if path == "/admin/bots" and request.method == "POST":
            user_id = int(json.loads(request.content)["user_id"])  # "1001" too, as pydantic
            return self.owned(user_id) or httpx.Response(201, json=_bot(user_id, self.index))
        if path == "/admin/system/bot-health/summary":
            return httpx.Response(200, json=self.summary())
        if path == "/admin/analytics/usage" and "user_id" not in query:
            return httpx.Response(422, json={"error": {"code": "invalid_request", "message": "q"}})
        ids = [int(part) for part in path.split("/") if part.isdigit()]
        if ids:
            user_id = ids[0]
            return self.owned(user_id) or httpx.Response(200, json=_bot(user_id, self.index))
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    def owned(self, user_id: int) -> httpx.Response | None:
        if user_id in self.bots:
            return None
        owner = self.moved.get(user_id, jump_hash(user_id, SHARDS))
        message = f"user_id {user_id} belongs to shard {owner}"
        return httpx.Response(
            421,
            json={"error": {"code": "misdirected", "message": message}, "owner_shard": owner},
        )

    def page(self, query: httpx.QueryParams) -> dict[str, Any]:
        cursor = int(query["cursor"]) if "cursor" in query else None
        limit = int(query["limit"]) if "limit" in query else None
        q = query.get("q")
        matching = sorted(
            u for u in self.bots if (cursor is None or u > cursor) and (q is None or q in str(u))
        )
        page = matching if limit is None else matching[:limit]
        more = len(page) < len(matching)
        return {
            "count": len(page),
            "matching": len(matching),
            "next_cursor": page[-1] if more else None,
            "bots": [_bot(u, self.index) for u in page],
        }

    def summary(self) -> dict[str, Any]:
        n = len(self.bots)
        return {
            "generated_at": 1000.0 + self.index,
            "total_bots": n,
            "by_status": {"healthy": n, "degraded": 0},
            "polling_by_status": {"healthy": n},
            "calls_by_status": {"healthy": n},
            "by_breaker": {"closed": n, "open": 0},
            "total_requests": 10 * n,
            "successful_requests": 9 * n,
            "failed_requests": n,
            "error_rate": 0.1,
            "avg_response_time_ms": 10.0 * (self.index + 1),
            "handled_updates": 5 * n,
            "replies_sent": 4 * n,
            "dead_letters": 0,
        }


@dataclass
class Gateway:
    shards: list[FakeShard]
    http: httpx.AsyncClient

    def asked(self) -> list[int]:
        """The shards that were sent a request."""
        return [shard.index for shard in self.shards if shard.seen]

    def forget(self) -> None:
        for shard in self.shards:
            shard.seen.clear()


def fleet_of(user_ids: Iterable[int]) -> list[FakeShard]:
    shards = [FakeShard(i, set()) for i in range(SHARDS)]
    for user_id in user_ids:
        shards[jump_hash(user_id, SHARDS)].bots.add(user_id)
    return shards


@asynccontextmanager
async def gateway(shards: list[FakeShard], **options: Any) -> AsyncIterator[Gateway]:
    async def handler(request: httpx.Request) -> httpx.Response:
        index = int(request.url.host.removeprefix("shard-"))
        return await shards[index].answer(request)

    config = GatewayConfig(
        shard_urls=tuple(f"http://shard-{i}:8080" for i in range(len(shards))),
        token=TOKEN,
        **options,
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as to_shards:
        app = create_gateway_app(config, to_shards)
        transport = httpx.ASGITransport(app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway.test", headers=AUTH
        ) as http:
            yield Gateway(shards, http)


USERS = range(1001, 1061)


async def test_paging_through_the_gateway_lists_every_bot_once_in_order() -> None:
    async with gateway(fleet_of(USERS)) as gw:
        for limit in (1, 2, 7, 50, 1000):
            seen: list[int] = []
            params: dict[str, Any] = {"limit": limit}
            while True:
                answer = (await gw.http.get("/admin/bots", params=params)).json()
                assert answer["matching"] == len(USERS) - len(seen)
                assert answer["count"] == len(answer["bots"]) <= limit
                assert answer["shards"] == {"total": SHARDS, "ok": SHARDS, "failed": []}
                seen += [bot["user_id"] for bot in answer["bots"]]
                if answer["next_cursor"] is None:
                    break
                assert answer["next_cursor"] == seen[-1]
                params = {"limit": limit, "cursor": answer["next_cursor"]}
            assert seen == list(USERS), limit
        # Without a limit: every bot in one answer; filters go to every shard as given.
        everything = (await gw.http.get("/admin/bots")).json()
        assert [b["user_id"] for b in everything["bots"]] == list(USERS)
        assert everything["next_cursor"] is None
        found = (await gw.http.get("/admin/bots", params={"q": "104"})).json()
        assert [b["user_id"] for b in found["bots"]] == list(range(1040, 1050))


async def test_a_per_bot_request_goes_to_its_owner_only_with_the_gateways_token() -> None:
    async with gateway(fleet_of(USERS)) as gw:
        for user_id in (1001, 1002, 1003, 1030):
            gw.forget()
            # What a client claims in X-Forwarded-For is not passed on: the gateway trusts
            # no proxy here, so the shard is told the address it saw.
            answer = await gw.http.get(
                f"/admin/system/bot-health/{user_id}", headers={"X-Forwarded-For": "10.9.9.9"}
            )
            assert answer.status_code == 200
            owner = jump_hash(user_id, SHARDS)
            assert answer.json()["held_by"] == owner
            assert gw.asked() == [owner]
            ((method, path, _, auth, forwarded),) = gw.shards[owner].seen
            assert (method, path, auth) == (
                "GET",
                f"/admin/system/bot-health/{user_id}",
                AUTH["Authorization"],
            )
            assert forwarded == "203.0.113.7"
        # The routes under a bot go to its owner with the rest of the path as it was.
        for method, path in (
            ("GET", "/admin/bots/1030/dead-letters"),
            ("POST", "/admin/bots/1030/dead-letters/redrive"),
            ("POST", "/admin/system/circuit-breakers/1030/reset"),
            ("GET", "/admin/system/bot-health/history/1030"),
        ):
            gw.forget()
            answer = await gw.http.request(method, path, params={"limit": 5})
            assert answer.status_code == 200, (path, answer.text)
            assert gw.asked() == [jump_hash(1030, SHARDS)]
            assert gw.shards[jump_hash(1030, SHARDS)].seen[0][:3] == (method, path, "limit=5")
        gw.forget()
        added = await gw.http.post("/admin/bots", json={"user_id": 1007, "token": "1:x"})
        assert added.status_code == 201
        assert added.json()["held_by"] == jump_hash(1007, SHARDS)
        assert gw.asked() == [jump_hash(1007, SHARDS)]
        # A body without a whole-number user_id goes to shard 0, whose 421 is followed.
        gw.forget()
        (other,) = [u for u in USERS if jump_hash(u, SHARDS) != 0][:1]
        texts = await gw.http.post("/admin/bots", json={"user_id": str(other), "token": "1:x"})
        assert texts.status_code == 201
        assert [s.index for s in gw.shards if s.seen] == sorted({0, jump_hash(other, SHARDS)})
        # A path with a dot segment is routed nowhere (a client would resolve it elsewhere).
        gw.forget()
        dotted = await gw.http.get("/admin/bots/1001/dead-letters/%2E%2E/%2E%2E")
        assert dotted.status_code == 404
        assert gw.asked() == []


async def test_a_421_during_a_resize_is_followed_once_to_the_shard_it_names() -> None:
    shards = fleet_of(USERS)
    owner = jump_hash(1001, SHARDS)
    elsewhere = (owner + 1) % SHARDS
    # The bot has moved: its hash owner says so, and the shard it names has it.
    shards[owner].bots.discard(1001)
    shards[owner].moved[1001] = elsewhere
    shards[elsewhere].bots.add(1001)
    async with gateway(shards) as gw:
        answer = await gw.http.get("/admin/bots/1001")
        assert answer.status_code == 200
        assert answer.json()["held_by"] == elsewhere
        assert [len(s.seen) for s in shards if s.seen] == [1, 1]
        # A shard naming a shard that names another: followed once, then the 421 as it is.
        shards[elsewhere].bots.discard(1001)
        shards[elsewhere].moved[1001] = owner
        gw.forget()
        again = await gw.http.get("/admin/bots/1001")
        assert again.status_code == 421
        assert sum(len(s.seen) for s in shards) == 2


async def test_a_hung_shard_is_named_after_its_timeout_and_the_others_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shards = fleet_of(USERS)
    shards[1].mode = "hang"
    async with gateway(shards, shard_timeout=2.0) as gw:
        answer = await gw.http.get("/admin/bots")
        assert answer.status_code == 200
        body = answer.json()
        assert body["shards"] == {
            "total": 3,
            "ok": 2,
            "failed": [{"shard": 1, "error": "timeout after 2 s"}],
        }
        listed = [b["user_id"] for b in body["bots"]]
        assert listed == sorted(shards[0].bots | shards[2].bots)
        assert body["matching"] == len(listed)
        # The hung shard's bot: a 504 naming it; another shard's bot is unaffected.
        hung_bot = min(shards[1].bots)
        one = await gw.http.get(f"/admin/bots/{hung_bot}")
        assert one.status_code == 504
        assert one.json()["shard"] == 1
        assert "shard 1 did not answer (timeout after 2 s)" in one.json()["error"]["message"]
        ok_bot = min(shards[0].bots)
        assert (await gw.http.get(f"/admin/bots/{ok_bot}")).status_code == 200
        # Two hung shards: every shard is asked at once, so the answer comes after one
        # timeout, not one per hung shard.
        shards[2].mode = "hang"
        started = trio.current_time()
        both = (await gw.http.get("/admin/system/bot-health/summary")).json()
        assert trio.current_time() - started == pytest.approx(2.0)
        assert [f["shard"] for f in both["shards"]["failed"]] == [1, 2]
        assert both["total_bots"] == len(shards[0].bots)


async def test_a_write_may_take_longer_than_a_read_up_to_its_own_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shards = fleet_of(USERS)
    owner = shards[jump_hash(1001, SHARDS)]
    owner.delay = 5.0  # an add or a resume waiting for getMe
    async with gateway(shards, shard_timeout=2.0, write_timeout=10.0) as gw:
        read = await gw.http.get("/admin/bots/1001")
        assert read.status_code == 504
        assert "timeout after 2 s" in read.text
        suspended = await gw.http.post("/admin/bots/1001/suspend", json={"reason": "x"})
        assert suspended.status_code == 200
        owner.mode = "hang"
        started = trio.current_time()
        hung = await gw.http.post("/admin/bots/1001/resume")
        assert hung.status_code == 504
        assert "timeout after 10 s" in hung.text
        assert trio.current_time() - started == pytest.approx(10.0)


async def test_a_refused_or_failing_shard_is_named_with_a_short_reason_only() -> None:
    shards = fleet_of(USERS)
    shards[0].mode = "refused"
    shards[2].mode = "503"
    async with gateway(shards) as gw:
        answer = await gw.http.get("/admin/system/bot-health/summary")
        assert answer.status_code == 200
        body = answer.json()
        assert body["shards"]["failed"] == [
            {"shard": 0, "error": "connection refused"},
            {"shard": 2, "error": "HTTP 503"},
        ]
        assert body["total_bots"] == len(shards[1].bots)
        refused_bot = min(shards[0].bots)
        one = await gw.http.get(f"/admin/bots/{refused_bot}")
        assert one.status_code == 502
        assert one.json()["error"]["code"] == "shard_unavailable"
        assert "connection refused" in one.text
        assert "internals" not in answer.text + one.text
        assert TOKEN not in answer.text + one.text


async def test_a_shard_answering_no_json_is_a_failed_shard_not_a_failed_merge() -> None:
    shards = fleet_of(USERS)
    shards[2].mode = "garbage"
    async with gateway(shards) as gw:
        answer = await gw.http.get("/admin/bots")
        assert answer.status_code == 200
        assert answer.json()["shards"]["failed"] == [{"shard": 2, "error": "not a JSON object"}]
        assert answer.json()["matching"] == len(shards[0].bots) + len(shards[1].bots)


async def test_every_shard_failed_is_a_502_listing_each() -> None:
    shards = fleet_of(USERS)
    for shard, mode in zip(shards, ("refused", "503", "401"), strict=True):
        shard.mode = mode
    async with gateway(shards) as gw:
        answer = await gw.http.get("/admin/bots")
        assert answer.status_code == 502
        body = answer.json()
        assert body["error"]["code"] == "shards_unavailable"
        assert body["shards"]["ok"] == 0
        assert [f["shard"] for f in body["shards"]["failed"]] == [0, 1, 2]
        # A shard refusing the gateway's token is the gateway's problem, not the client's:
        # the dashboard must not be signed out by it.
        assert body["shards"]["failed"][2]["error"] == (
            "HTTP 401: the shard refused the gateway's token"
        )
        one = await gw.http.get(f"/admin/bots/{min(shards[2].bots)}")
        assert one.status_code == 502


async def test_the_gateway_checks_the_token_itself_and_asks_no_shard_without_it() -> None:
    async with gateway(fleet_of(USERS)) as gw:
        for headers in ({"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": ""}):
            answer = await gw.http.get("/admin/bots", headers=headers)
            assert answer.status_code == 401
        assert gw.asked() == []
        assert (await gw.http.get("/healthz", headers={"Authorization": ""})).status_code == 200


async def test_a_request_the_shards_refuse_is_relayed_and_metrics_are_not_proxied() -> None:
    async with gateway(fleet_of(USERS)) as gw:
        refused = await gw.http.get("/admin/analytics/usage", params={"bucket": "week"})
        assert refused.status_code == 422
        bad_id = await gw.http.get("/admin/bots/abc")
        assert bad_id.status_code == 422
        gw.forget()
        metrics = await gw.http.get("/metrics")
        assert metrics.status_code == 404
        assert "Prometheus scrapes each shard's /metrics" in metrics.json()["error"]["message"]
        assert gw.asked() == []


def test_a_summary_sums_counts_and_weighs_the_average_by_requests() -> None:
    shards = fleet_of(USERS)
    parts = [shard.summary() for shard in shards]
    merged = merge_health_summaries(parts)
    sizes = [len(s.bots) for s in shards]
    assert merged["total_bots"] == len(USERS)
    assert merged["by_status"] == {"healthy": len(USERS), "degraded": 0}
    assert merged["failed_requests"] == len(USERS)
    assert merged["error_rate"] == pytest.approx(0.1)
    weighted = sum(10.0 * (i + 1) * 10 * n for i, n in enumerate(sizes)) / (10 * len(USERS))
    assert merged["avg_response_time_ms"] == pytest.approx(weighted)
    assert merged["generated_at"] == 1002.0


def _bucket(start: str, latency: dict[str, int], updates: int) -> dict[str, Any]:
    return {
        "user_id": None,
        "bucket": "hour",
        "start": start,
        "updates": updates,
        "updates_by_type": {"message": updates},
        "api_calls": updates,
        "api_calls_by_method": {"sendMessage": {"ok": updates}},
        "sends": updates,
        "dead_letters": 0,
        "handler_errors": 0,
        "distinct_chats": 1,
        "distinct_users": 1,
        "replies_timed": sum(latency.values()),
        "reply_latency_p50_ms": None,
        "reply_latency_p95_ms": None,
        "reply_latency_buckets": latency,
        "webhook_accepted": 0,
        "webhook_rejected": 0,
    }


def test_usage_buckets_of_one_hour_merge_and_the_quantiles_come_from_the_summed_histogram() -> None:
    a = _bucket("2026-12-01T10:00:00Z", {"le_50": 9, "le_1000": 0}, 3)
    b = _bucket("2026-12-01T10:00:00Z", {"le_50": 0, "le_1000": 11}, 4)
    c = _bucket("2026-12-01T09:00:00Z", {}, 1)
    parts = [
        {"user_id": None, "bucket": "hour", "start": s, "end": e, "count": len(rows),
         "rows": rows, "totals": rows[0]}
        for s, e, rows in (("2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z", [a]),
                           ("2026-12-01T08:00:00Z", "2026-12-02T09:00:00Z", [c, b]))
    ]  # fmt: skip
    merged = merge_usage(parts)
    assert [r["start"] for r in merged["rows"]] == ["2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"]
    ten = merged["rows"][1]
    assert ten["updates"] == 7
    assert ten["api_calls_by_method"] == {"sendMessage": {"ok": 7}}
    assert ten["reply_latency_buckets"] == {"le_50": 9, "le_1000": 11}
    # 20 replies: the 10th (p50) is in le_1000 (9 are under 50 ms), so is the 19th (p95).
    assert (ten["reply_latency_p50_ms"], ten["reply_latency_p95_ms"]) == (1000, 1000)
    assert merged["start"] == "2026-12-01T08:00:00Z"
    assert list(merged["rows"][0]) == list(a)


def test_history_top_retries_and_csv_merge_in_a_stable_order() -> None:
    def rows(*pairs: tuple[float, int]) -> list[dict[str, Any]]:
        return [{"recorded_at": t, "user_id": u, "status": "unhealthy"} for t, u in pairs]

    history = merge_unhealthy_history(
        [
            {
                "hours": 24,
                "since": 10.0,
                "count": 2,
                "truncated": False,
                "rows": rows((1, 5), (3, 5)),
            },
            {
                "hours": 24,
                "since": 9.0,
                "count": 2,
                "truncated": False,
                "rows": rows((2, 4), (3, 4)),
            },
        ],
        limit=3,
    )
    assert [(r["recorded_at"], r["user_id"]) for r in history["rows"]] == [(2, 4), (3, 4), (3, 5)]
    assert history["truncated"] is True
    assert history["since"] == 9.0

    def tenants(*pairs: tuple[int, int]) -> list[dict[str, int]]:
        return [{"user_id": u, "value": v} for u, v in pairs]

    top = merge_top(
        [
            {"metric": "updates", "hours": 24, "since": "b", "tenants": tenants((9, 5))},
            {
                "metric": "updates",
                "hours": 24,
                "since": "a",
                "tenants": tenants((3, 5), (4, 7), (1, 1)),
            },
        ],
        limit=3,
    )
    assert [t["user_id"] for t in top["tenants"]] == [4, 3, 9]

    stats = {"calls": 2, "attempts": 3, "retries": 1, "retries_by_category": {"rate_limit": 1},
             "recovered": 1, "exhausted": 0, "uncertain": 0, "recovery_rate": 1.0}  # fmt: skip
    failed = {**stats, "recovered": 0, "exhausted": 3, "recovery_rate": 0.0}
    retry = merge_retry_statistics(
        [
            {"overall": stats, "bots": [{"user_id": 7}]},
            {"overall": failed, "bots": [{"user_id": 2}]},
        ]
    )
    assert retry["overall"]["recovery_rate"] == pytest.approx(0.25)
    assert retry["overall"]["retries_by_category"] == {"rate_limit": 2}
    assert [b["user_id"] for b in retry["bots"]] == [2, 7]

    header = "bucket,start,user_id,updates"
    csv = merge_usage_csv(
        [f"{header}\r\nhour,T1,5,1\r\nhour,T2,5,1\r\n", f"{header}\r\nhour,T1,4,2\r\n"]
    )
    assert csv == f"{header}\r\nhour,T1,4,2\r\nhour,T1,5,1\r\nhour,T2,5,1\r\n"
