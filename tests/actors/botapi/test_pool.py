"""The fleet's shared HTTP pool: a tenant whose calls hang does not delay the others."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from actors.botapi import BotApiClient, FleetHttpPool, make_http_client
from actors.config import TelegramConfig
from actors.secrets import BotToken

TELEGRAM = TelegramConfig(api_base="https://api.telegram.org")
SLOW = "111111:" + "A" * 35
FAST = "222222:" + "B" * 35


async def test_a_hanging_tenant_holds_at_most_its_share_and_others_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if "/bot111111:" in request.url.path:
            await trio.sleep_forever()
        return httpx.Response(200, json={"ok": True, "result": {"id": 1}})

    transport = httpx.MockTransport(handler)
    async with make_http_client(
        transport=transport, ssl_context=None, telegram=TELEGRAM, max_connections=None
    ) as http:
        pool = FleetHttpPool(http, per_bot=2)
        async with pool.lease() as slow_http, pool.lease() as fast_http, trio.open_nursery() as n:
            slow = BotApiClient(slow_http, token=BotToken(SLOW), telegram=TELEGRAM)
            fast = BotApiClient(fast_http, token=BotToken(FAST), telegram=TELEGRAM)
            for _ in range(5):
                n.start_soon(slow.call, "getMe")
            await trio.testing.wait_all_tasks_blocked()
            assert slow_http.in_flight == 2  # the other three wait for its own share
            start = trio.current_time()
            assert await fast.get_me() == {"id": 1}
            assert trio.current_time() == start
            assert fast_http.in_flight == 0
            n.cancel_scope.cancel()


def test_a_share_must_admit_a_request() -> None:
    with pytest.raises(ValueError, match="per_bot must be >= 1"):
        FleetHttpPool(httpx.AsyncClient(), per_bot=0)
