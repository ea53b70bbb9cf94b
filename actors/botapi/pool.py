"""The fleet's HTTP connections: small pools passed from lease to lease, each bot's share bounded.

Every bot used to open its own ``httpx.AsyncClient`` (its own pool of ``BOT_CONNECTIONS``) for
each incarnation: a webhook bot woken for one update built a client and opened new TCP
connections for its one reply. One client for the whole fleet then reused connections across
bots, but cost 8-15 ms of CPU per update at 100 bots over loopback HTTP (1 ms before): httpcore's
pool walks all of its connections, and for each idle one all of them again, under its lock on
every request start and every response close, so one pool of hundreds of long-poll connections
costs O(n²) a request.

:class:`FleetHttpPool` keeps the reuse without the cost. It holds a list of sub-pools, each an
``httpx.AsyncClient`` serving at most ``per_client`` leases at once (one lease per bot
incarnation, one per fleet call such as a token check), so none holds more than ``per_client`` ×
``per_bot`` connections however large the fleet (the daemon's ``LEASES_PER_CLIENT`` is 1: by
measurement every bit of sharing inside one httpcore pool costs CPU). A sub-pool's client is
built on its first lease and kept, idle connections and all, when its leases end; a new lease
goes to the lowest-numbered sub-pool with room, so a bot's next incarnation (a webhook bot
woken again) or the next fleet call finds connections already open instead of opening new
ones. The fleet pool closes every client when it is left.

Isolation is explicit: each :meth:`FleetHttpPool.lease` admits at most ``per_bot`` requests at
once through its own ``trio.CapacityLimiter``, and a sub-pool's connection bound is the sum of
its leases' shares, so a tenant whose calls hang holds at most ``per_bot`` connections and the
others' calls, in its sub-pool and elsewhere, go on. Open sockets are bounded by ``per_bot`` ×
``per_client`` × sub-pools, that is ``per_bot`` × the most leases held at once (rounded up to a
whole sub-pool), which is what ``supervisor.fdlimit`` estimates.

The request URL holds the bot token: the clients keep no per-request record (no event hooks,
no cookies are sent back to a Bot API, which sets none), and
:class:`~actors.botapi.client.BotApiClient` never lets httpx's exceptions, which carry the URL,
out unredacted.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import httpx
import trio

__all__ = [
    "LEASES_PER_CLIENT",
    "BotHttp",
    "FleetHttpPool",
    "HttpClientFactory",
    "HttpPoolStatistics",
    "HttpPoster",
    "UploadFiles",
]

# Files of a multipart/form-data POST: field name -> (file name, content, content type).
UploadFiles = Mapping[str, tuple[str, bytes, str]]

# Leases one sub-pool serves at once. httpcore's work per request grows with the square of a
# pool's connections, and measurably from the smallest sharing on: client CPU per update at 100
# bots over loopback HTTP (echo, 2 chats x 5 messages a bot, interleaved runs) was 1.03 ms with
# 1 lease a client, 1.08 with 2, 1.3 with 4, 1.6 with 8, 2.0 with 16, and 8.2 with one client
# for the fleet. A client per lease costs ~5 KiB (tracemalloc; 1.8 KiB more RSS per bot than 2
# a client over HTTP) and still reuses connections across incarnations: a lease ending leaves
# its client, idle connections and all, to the next.
LEASES_PER_CLIENT = 1

# Builds one sub-pool's client given the connections it must allow (its leases' shares in all).
HttpClientFactory = Callable[[int], httpx.AsyncClient]


class HttpPoster(Protocol):
    """What :class:`~actors.botapi.client.BotApiClient` needs of HTTP: one POST, of JSON
    (``json``) or, for the few calls that upload a file (setWebhook's certificate), of
    multipart/form-data (``data`` and ``files``). ``httpx.AsyncClient`` is one."""

    # httpx's own parameters; timeout: per-phase HTTP timeouts, not a deadline on the call.
    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: UploadFiles | None = None,
        timeout: httpx.Timeout,  # noqa: ASYNC109
    ) -> httpx.Response: ...


class BotHttp:
    """One lease of a sub-pool: POSTs through its client, at most ``limit`` at once."""

    __slots__ = ("_http", "_limiter")

    def __init__(self, http: httpx.AsyncClient, limit: int) -> None:
        self._http = http
        self._limiter = trio.CapacityLimiter(limit)

    @property
    def in_flight(self) -> int:
        """Requests of this lease holding a connection now."""
        return int(self._limiter.borrowed_tokens)

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: UploadFiles | None = None,
        timeout: httpx.Timeout,  # noqa: ASYNC109
    ) -> httpx.Response:
        async with self._limiter:
            if files is None:
                return await self._http.post(url, json=json, timeout=timeout)
            return await self._http.post(url, data=data, files=files, timeout=timeout)


@dataclass(frozen=True)
class HttpPoolStatistics:
    """What :meth:`FleetHttpPool.statistics` reports."""

    clients: int  # sub-pools whose client has been built (and is open until the pool closes)
    leases: int  # leases held now
    busiest: int  # the most leases one sub-pool holds now (never above per_client)


class _SubPool:
    __slots__ = ("client", "index", "leases")

    def __init__(self, index: int, client: httpx.AsyncClient) -> None:
        self.index = index
        self.client = client
        self.leases = 0


class FleetHttpPool:
    """The daemon's HTTP clients; bots lease bounded shares of them (see the module).

    ``async with`` it: leaving closes every client it built."""

    __slots__ = ("_closed", "_new_client", "_per_bot", "_per_client", "_room", "_subpools")

    def __init__(
        self,
        new_client: HttpClientFactory,
        *,
        per_bot: int,
        per_client: int = LEASES_PER_CLIENT,
    ) -> None:
        if per_bot < 1:
            raise ValueError(f"per_bot must be >= 1, got {per_bot!r}")
        if per_client < 1:
            raise ValueError(f"per_client must be >= 1, got {per_client!r}")
        self._new_client = new_client
        self._per_bot = per_bot
        self._per_client = per_client
        self._subpools: list[_SubPool] = []
        # Indices of the sub-pools with room for a lease, lowest first: a sub-pool is in it
        # exactly when it holds fewer than per_client leases.
        self._room: list[int] = []
        self._closed = False

    @property
    def connections_per_client(self) -> int:
        """The most connections one sub-pool's client holds: its leases' shares in all."""
        return self._per_bot * self._per_client

    def statistics(self) -> HttpPoolStatistics:
        return HttpPoolStatistics(
            clients=len(self._subpools),
            leases=sum(sub.leases for sub in self._subpools),
            busiest=max((sub.leases for sub in self._subpools), default=0),
        )

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[BotHttp]:
        """A bounded share of one sub-pool for one bot incarnation or one fleet call; the
        sub-pool's client stays open when it ends (the fleet pool closes it)."""
        sub = self._take()
        try:
            yield BotHttp(sub.client, self._per_bot)
        finally:
            self._give_back(sub)

    def _take(self) -> _SubPool:
        if self._closed:
            raise RuntimeError("the fleet's HTTP pool is closed: no new lease can be taken")
        if self._room:
            sub = self._subpools[self._room[0]]
        else:
            sub = _SubPool(len(self._subpools), self._new_client(self.connections_per_client))
            self._subpools.append(sub)
            heapq.heappush(self._room, sub.index)
        sub.leases += 1
        if sub.leases == self._per_client:
            heapq.heappop(self._room)  # sub is the lowest with room, so the heap's top
        return sub

    def _give_back(self, sub: _SubPool) -> None:
        if sub.leases == self._per_client:
            heapq.heappush(self._room, sub.index)
        sub.leases -= 1

    async def aclose(self) -> None:
        """Close every client built; later leases are refused."""
        self._closed = True
        with trio.CancelScope(shield=True):
            for sub in self._subpools:
                await sub.client.aclose()

    async def __aenter__(self) -> FleetHttpPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
