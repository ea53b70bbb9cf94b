"""The fleet's HTTP pools: a tenant whose calls hang does not delay the others; leases are
spread over sub-pools of bounded size, built on first use and closed with the fleet pool."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from actors.botapi import (
    BotApiClient,
    BotHttp,
    FleetHttpPool,
    HttpClient,
    HttpPoolStatistics,
    make_http_client,
)
from actors.config import TelegramConfig
from actors.secrets import BotToken
from tests.actors.botapi.raw_server import HangingServer, serve

TELEGRAM = TelegramConfig(api_base="https://api.telegram.org")
SLOW = "111111:" + "A" * 35
FAST = "222222:" + "B" * 35


class Clients:
    """A client factory that records what it built and the connection bound it was asked
    for; each client's transport answers a call with the client's number, and hangs the
    calls of the slow tenant."""

    def __init__(self) -> None:
        self.built: list[tuple[int, HttpClient]] = []

    def __call__(self, connections: int) -> HttpClient:
        number = len(self.built)

        async def handler(request: httpx.Request) -> httpx.Response:
            if "/bot111111:" in request.url.path:
                await trio.sleep_forever()
            return httpx.Response(200, json={"ok": True, "result": {"id": number}})

        client = make_http_client(
            transport=httpx.MockTransport(handler),
            ssl_context=None,
            telegram=TELEGRAM,
            max_connections=connections,
        )
        self.built.append((connections, client))
        return client


async def served_by(http: BotHttp) -> int:
    """The number of the client that carried a call made through ``http``."""
    result = await BotApiClient(http, token=BotToken(FAST), telegram=TELEGRAM).get_me()
    return int(result["id"])


async def test_a_hanging_tenant_holds_at_most_its_share_and_others_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Both tenants lease from the same sub-pool: its bound is their shares together, so the
    # slow tenant's hanging calls still leave the fast one its own.
    clients = Clients()
    async with (
        FleetHttpPool(clients, per_bot=2, per_client=2) as pool,
        pool.lease() as slow_http,
        pool.lease() as fast_http,
        trio.open_nursery() as n,
    ):
        assert len(clients.built) == 1
        slow = BotApiClient(slow_http, token=BotToken(SLOW), telegram=TELEGRAM)
        fast = BotApiClient(fast_http, token=BotToken(FAST), telegram=TELEGRAM)
        for _ in range(5):
            n.start_soon(slow.call, "getMe")
        await trio.testing.wait_all_tasks_blocked()
        assert slow_http.in_flight == 2  # the other three wait for its own share
        start = trio.current_time()
        assert await fast.get_me() == {"id": 0}
        assert trio.current_time() == start
        assert fast_http.in_flight == 0
        n.cancel_scope.cancel()


async def test_over_real_connections_a_hanging_tenant_leaves_its_sub_pool_to_the_others() -> None:
    # Real sockets and httpcore's real pool (a MockTransport has no pool to exhaust): the
    # sub-pool's connection bound must leave room for every lease's share, not only one.
    server = HangingServer()
    server.expect_slow = 2
    async with trio.open_nursery() as nursery:
        telegram, new_client = await serve(nursery, server)

        async with (
            FleetHttpPool(new_client, per_bot=2, per_client=2) as pool,
            pool.lease() as slow_http,
            pool.lease() as fast_http,
            trio.open_nursery() as calls,
        ):
            slow = BotApiClient(slow_http, token=BotToken(SLOW), telegram=telegram)
            fast = BotApiClient(fast_http, token=BotToken(FAST), telegram=telegram)
            for _ in range(5):
                calls.start_soon(slow.call, "getMe")
            with trio.fail_after(10):  # readiness, not a timed assertion
                await server.slow_seen.wait()
            with trio.fail_after(10):
                for _ in range(3):  # more calls than one share holds, one after another
                    assert await fast.get_me() == {"id": 1}
            assert pool.statistics().clients == 1  # both tenants in one sub-pool
            assert server.slow_connections == 2  # its share, however many calls it makes
            assert slow_http.in_flight == 2
            calls.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_the_next_lease_reuses_the_connection_the_last_one_left_open() -> None:
    # A webhook bot woken for one update, then again: the second reply does not connect anew.
    server = HangingServer()
    async with trio.open_nursery() as nursery:
        telegram, new_client = await serve(nursery, server)

        async with FleetHttpPool(new_client, per_bot=4, per_client=1) as pool:
            for _ in range(3):
                async with pool.lease() as http:
                    bot = BotApiClient(http, token=BotToken(FAST), telegram=telegram)
                    assert await bot.get_me() == {"id": 1}
            assert server.connections == 1
            assert pool.statistics().clients == 1
        nursery.cancel_scope.cancel()


async def test_leases_fill_bounded_sub_pools_lowest_first_and_all_close_on_exit() -> None:
    clients = Clients()
    async with FleetHttpPool(clients, per_bot=4, per_client=3) as pool:
        async with (
            pool.lease() as first,
            pool.lease(),
            pool.lease() as third,
            pool.lease() as fourth,
            pool.lease() as fifth,
        ):
            # Five leases of three a sub-pool: two clients, each allowing its leases' shares.
            assert [bound for bound, _ in clients.built] == [12, 12]
            assert pool.statistics() == HttpPoolStatistics(clients=2, idle=0, leases=5, busiest=3)
            assert [await served_by(http) for http in (first, third, fourth, fifth)] == [0, 0, 1, 1]
        assert pool.statistics() == HttpPoolStatistics(clients=2, idle=2, leases=0, busiest=0)
        assert not any(client.is_closed for _, client in clients.built)
    assert all(client.is_closed for _, client in clients.built)
    with pytest.raises(RuntimeError, match="HTTP pool is closed"):
        async with pool.lease():
            pass  # pragma: no cover


async def test_a_new_incarnation_lands_where_the_idle_connections_are() -> None:
    # A webhook bot woken again, or a restarted bot: its lease goes back to the lowest
    # sub-pool with room, whose connections its last incarnation left idle, not to a new one.
    clients = Clients()
    async with FleetHttpPool(clients, per_bot=4, per_client=2) as pool:
        async with pool.lease(), pool.lease(), pool.lease() as third:
            assert await served_by(third) == 1
        async with pool.lease() as again:
            assert await served_by(again) == 0
        async with pool.lease() as first, pool.lease(), pool.lease() as third_again:
            assert await served_by(first) == 0
            assert await served_by(third_again) == 1
        assert len(clients.built) == 2


async def test_a_lease_given_back_on_an_error_frees_its_room() -> None:
    clients = Clients()
    async with FleetHttpPool(clients, per_bot=1, per_client=1) as pool:
        with pytest.raises(KeyError):
            async with pool.lease():
                raise KeyError("a bot crashed")
        async with pool.lease() as again:
            assert await served_by(again) == 0
        assert pool.statistics().clients == 1


async def test_idle_sub_pools_beyond_the_spare_ones_are_closed_and_built_again() -> None:
    # A burst of woken bots must not leave its sockets and clients open once it is over.
    clients = Clients()
    async with FleetHttpPool(clients, per_bot=4, per_client=1, spare=1) as pool:
        async with pool.lease(), pool.lease() as second, pool.lease():
            assert await served_by(second) == 1
        # The first lease to end (the last taken) kept its sub-pool warm; the next two closed
        # theirs.
        assert [client.is_closed for _, client in clients.built] == [True, True, False]
        assert pool.statistics() == HttpPoolStatistics(clients=1, idle=1, leases=0, busiest=0)
        async with pool.lease() as warm:
            assert await served_by(warm) == 2  # the warm one before any lower closed one
            async with pool.lease() as rebuilt, pool.lease() as other:
                assert (await served_by(rebuilt), await served_by(other)) == (3, 4)
                assert pool.statistics() == HttpPoolStatistics(
                    clients=3, idle=0, leases=3, busiest=1
                )
        assert sum(not client.is_closed for _, client in clients.built) == 1
    assert all(client.is_closed for _, client in clients.built)


async def test_with_no_spare_a_sub_pool_closes_with_its_last_lease() -> None:
    clients = Clients()
    async with FleetHttpPool(clients, per_bot=4, per_client=2, spare=0) as pool:
        async with pool.lease() as first:
            async with pool.lease():
                pass
            assert not clients.built[0][1].is_closed  # one lease still holds it
            assert await served_by(first) == 0
        assert clients.built[0][1].is_closed
        async with pool.lease() as again:
            assert await served_by(again) == 1
        assert pool.statistics() == HttpPoolStatistics(clients=0, idle=0, leases=0, busiest=0)


def test_a_share_must_admit_a_request_and_a_sub_pool_a_lease() -> None:
    with pytest.raises(ValueError, match="per_bot must be >= 1"):
        FleetHttpPool(Clients(), per_bot=0)
    with pytest.raises(ValueError, match="per_client must be >= 1"):
        FleetHttpPool(Clients(), per_bot=1, per_client=0)
    with pytest.raises(ValueError, match="spare must be >= 0"):
        FleetHttpPool(Clients(), per_bot=1, spare=-1)
