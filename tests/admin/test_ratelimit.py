"""IP rate limiting on Trio time: 429 with a correct Retry-After, per address, bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import TokenBucketCore
from admin import AdminConfig, ClientBuckets, IpRateLimit, client_address
from supervisor import ConfigError, parse_config
from tests.admin.helpers import AUTH, admin_fleet, client


async def test_an_address_past_its_limit_waits_exactly_retry_after_and_others_are_unaffected(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1], ip_rate_limit=(3, 60.0)) as admin:
        start = trio.current_time()
        async with client(admin.app, "198.51.100.7", **AUTH) as flooder:
            for _ in range(3):
                assert (await flooder.get("/admin/bots")).status_code == 200
            refused = await flooder.get("/admin/bots")
            assert refused.status_code == 429
            # 3 per minute: one request's allowance comes back every 20 s.
            assert refused.headers["retry-after"] == "20"
            assert refused.json()["error"]["code"] == "rate_limited"
            # Unauthenticated requests count too: token guessing is limited.
            async with client(admin.app, "198.51.100.7") as guesser:
                assert (await guesser.get("/admin/bots")).status_code == 429

            async with client(admin.app, "198.51.100.8", **AUTH) as neighbour:
                for _ in range(3):
                    assert (await neighbour.get("/admin/bots")).status_code == 200

            await trio.sleep_until(start + 19.5)
            almost = await flooder.get("/healthz")
            assert almost.status_code == 429
            assert almost.headers["retry-after"] == "1"
            await trio.sleep_until(start + 20)
            assert (await flooder.get("/admin/bots")).status_code == 200
            assert (await flooder.get("/admin/bots")).status_code == 429

        stats = admin.app.state.rate_limiter.statistics()
        assert stats.allowed == 7
        assert stats.limited == 4


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(
        tmp_path / "a.db", [1], ip_rate_limit=(1, 60.0), trusted_proxies=("10.0.0.0/8",)
    ) as admin:
        async with client(admin.app, "10.1.2.3", **AUTH) as proxy:
            # Two clients behind the proxy each get their own allowance.
            for address in ("203.0.113.1", "203.0.113.2"):
                ok = await proxy.get("/healthz", headers={"X-Forwarded-For": address})
                assert ok.status_code == 200
            # A client cannot escape by claiming another address: the proxy appends the
            # address it saw, and that is the one counted.
            spoofed = await proxy.get(
                "/healthz", headers={"X-Forwarded-For": "192.0.2.99, 203.0.113.1"}
            )
            assert spoofed.status_code == 429
        async with client(admin.app, "203.0.113.50", **AUTH) as direct:
            assert (await direct.get("/healthz")).status_code == 200
            # Not a trusted proxy: its X-Forwarded-For is ignored.
            faked = await direct.get("/healthz", headers={"X-Forwarded-For": "203.0.113.77"})
            assert faked.status_code == 429


def scope(address: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    return {"type": "http", "client": (address, 1), "headers": headers, "path": "/"}


def test_client_address_reads_forwarded_for_from_the_right() -> None:
    import ipaddress

    trusted = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))
    assert client_address(scope("192.0.2.1", "1.1.1.1")) == "192.0.2.1"
    assert client_address(scope("192.0.2.1", "1.1.1.1"), trusted) == "192.0.2.1"
    assert client_address(scope("10.0.0.1", "1.1.1.1, 2.2.2.2"), trusted) == "2.2.2.2"
    # Chained trusted proxies are skipped.
    assert client_address(scope("127.0.0.1", "1.1.1.1, 2.2.2.2, 10.9.9.9"), trusted) == "2.2.2.2"
    # Behind a trusted proxy with no header: the proxy itself.
    assert client_address(scope("10.0.0.1"), trusted) == "10.0.0.1"
    assert client_address({"type": "http", "headers": []}) == "unknown"


async def test_a_flood_of_100_000_addresses_leaves_memory_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answered = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal answered
        answered += 1

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    buckets = ClientBuckets(120, 60.0, max_clients=10_000)
    limiter = IpRateLimit(app, buckets=buckets)

    async def flood(prefix: str) -> None:
        for i in range(100_000):
            address = f"{prefix}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            await limiter({"type": "http", "client": (address, 1), "headers": []}, receive, send)

    tracemalloc.start()
    try:
        await flood("10")
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    stats = buckets.statistics()
    assert answered == 100_000  # every new address has its allowance
    assert stats.clients == 10_000
    assert stats.evicted_full == 90_000
    # 10,000 buckets (~1.7 MB) are held however large the flood: 100,000 would take ~17 MB.
    assert held < 4_000_000

    # Idle buckets are full again after a minute: they are forgotten.
    await trio.sleep(60)
    await limiter({"type": "http", "client": ("192.0.2.1", 1), "headers": []}, receive, send)
    stats = buckets.statistics()
    assert stats.clients == 1
    assert stats.evicted_idle == 10_000


async def test_forgetting_an_idle_bucket_forgives_nothing_it_had_not_refilled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buckets = ClientBuckets(2, 10.0)
    assert buckets.acquire("a") == 0.0
    assert buckets.acquire("a") == 0.0
    assert buckets.acquire("a") == pytest.approx(5.0)
    await trio.sleep(9.9)
    # Still held (not yet full), so still limited by what it used.
    assert buckets.acquire("a") == 0.0
    assert buckets.acquire("a") > 0
    assert buckets.statistics().clients == 1


async def test_an_address_gets_its_tokens_back_exactly_when_the_shared_bucket_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The admin limit is the pipeline's token bucket, not a second formula: the same requests
    # at the same times are admitted, and refused with the same wait, to the last bit.
    buckets = ClientBuckets(3, 60.0)
    reference = TokenBucketCore(3 / 60.0, 3)
    waits = []
    for at in (0, 0, 0, 0, 7.5, 19.9, 20, 20, 33, 40, 41, 100, 100.5, 100.5, 100.5, 100.5):
        await trio.sleep_until(at)
        wait = buckets.acquire("192.0.2.1")
        assert wait == reference.try_take(trio.current_time())
        waits.append(wait)
    assert waits[3:5] == [20.0, 12.5]
    stats = buckets.statistics()
    assert (stats.allowed, stats.limited) == (8, 8)


def test_the_rate_limit_setting_is_validated() -> None:
    assert AdminConfig(ip_rate_limit="120/minute").rate_limit == (120, 60.0)
    assert AdminConfig(ip_rate_limit="5/second").rate_limit == (5, 1.0)
    assert AdminConfig(ip_rate_limit="off").rate_limit is None
    for bad in ("120", "0/minute", "ten/minute", "5/day", "-1/second"):
        with pytest.raises(ValueError, match=r"ip_rate_limit"):
            AdminConfig(ip_rate_limit=bad)
        # In a file, the message names the key as the file spells it.
        with pytest.raises(ConfigError, match=r"admin\.ip_rate_limit must be"):
            parse_config({"admin": {"ip_rate_limit": bad}}, {})
    with pytest.raises(ValueError, match=r"trusted_proxies"):
        AdminConfig(trusted_proxies=("not-an-address",))
    assert AdminConfig(trusted_proxies=["10.0.0.0/8"]).trusted_proxies == ("10.0.0.0/8",)  # type: ignore[arg-type]
