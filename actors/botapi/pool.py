"""The fleet's HTTP connections: small pools passed from lease to lease, each bot's share bounded.

Every bot used to open its own HTTP client (its own pool of ``BOT_CONNECTIONS``) for each
incarnation: a webhook bot woken for one update built a client and opened new TCP connections
for its one reply. One client for the whole fleet then reused connections across bots, but
cost 7-10 ms of CPU per update at 100 bots over loopback HTTP (1 ms before): httpcore's pool
walks all of its connections, and for each idle one all of them again, under its lock on
every request start and every response close, so one pool of hundreds of long-poll
connections costs O(n²) a request.

:class:`FleetHttpPool` keeps the reuse without the cost. It holds a list of sub-pools, each an
:class:`~actors.botapi.http.HttpClient` (one httpcore connection pool) serving at most
``per_client`` leases at once (one lease per bot incarnation, one per fleet call such as a token
check), so none holds more than ``per_client`` × ``per_bot`` connections however large the fleet
(the daemon's ``LEASES_PER_CLIENT`` is 1: by measurement every bit of sharing inside one
httpcore pool costs CPU). A sub-pool's client is built on its first lease and kept, idle
connections and all, when its leases end (up to ``spare`` idle sub-pools; one more is closed); a
new lease goes to the lowest-numbered open sub-pool with room, so a bot's next incarnation (a
webhook bot woken again) or the next fleet call finds connections already open instead of
opening new ones. The fleet pool closes every client when it is left.

Isolation is explicit: each :meth:`FleetHttpPool.lease` admits at most ``per_bot`` requests at
once through its own ``trio.CapacityLimiter``, and a sub-pool's connection bound is the sum of
its leases' shares, so a tenant whose calls hang holds at most ``per_bot`` connections and the
others' calls, in its sub-pool and elsewhere, go on. Open sockets are bounded by ``per_bot`` ×
``per_client`` × open sub-pools, that is ``per_bot`` × (the leases held, rounded up to whole
sub-pools, + ``spare``), which is what ``supervisor.fdlimit`` estimates.

The request URL holds the bot token: the clients keep no per-request record (no log line, no
cookie jar: a Bot API sets no cookies), and
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

from actors.botapi.http import HttpAnswer, HttpClient, UploadFiles

__all__ = [
    "LEASES_PER_CLIENT",
    "SPARE_CLIENTS",
    "BotHttp",
    "FleetHttpPool",
    "HttpClientFactory",
    "HttpPoolStatistics",
    "HttpPoster",
    "UploadFiles",
]

# Leases one sub-pool serves at once. httpcore's work per request grows with the square of a
# pool's connections, and measurably from the smallest sharing on: client CPU per update at 100
# bots over loopback HTTP (echo, 2 chats x 5 messages a bot, interleaved runs) was 1.03 ms with
# 1 lease a client, 1.08 with 2, 1.3 with 4, 1.6 with 8, 2.0 with 16, and 8.2 with one client
# for the fleet (measured with an httpx.AsyncClient per sub-pool, ~5 KiB each; the HttpClient
# that replaced it made a bot ~4 KiB lighter by tracemalloc). A client per lease still reuses
# connections across incarnations: a lease ending leaves its client, idle connections and
# all, to the next (up to SPARE_CLIENTS idle ones).
LEASES_PER_CLIENT = 1

# Idle sub-pools kept open for the next lease; beyond them a sub-pool whose last lease ends is
# closed, its connections with it, and built again when needed. Enough for the webhook bots
# awake at a time and the fleet's calls to find connections open, few enough that their idle
# sockets (at most BOT_CONNECTIONS each) fit in supervisor.fdlimit's FIXED_FILES, and that a
# burst of woken bots leaves neither sockets nor clients behind.
SPARE_CLIENTS = 8

# Builds one sub-pool's client given the connections it must allow (its leases' shares in all).
HttpClientFactory = Callable[[int], HttpClient]


class HttpPoster(Protocol):
    """What :class:`~actors.botapi.client.BotApiClient` needs of HTTP: one POST, of JSON
    (``json``, or ``content`` already encoded) or, for the few calls that upload a file
    (setWebhook's certificate), of multipart/form-data (``data`` and ``files``), answered
    by a response read whole. :class:`~actors.botapi.http.HttpClient` is one."""

    # httpx's own parameters; timeout: per-phase HTTP timeouts, not a deadline on the call.
    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        files: UploadFiles | None = None,
        timeout: httpx.Timeout,  # noqa: ASYNC109
    ) -> HttpAnswer: ...


class BotHttp:
    """One lease of a sub-pool: POSTs through its client, at most ``limit`` at once."""

    __slots__ = ("_http", "_limiter")

    def __init__(self, http: HttpClient, limit: int) -> None:
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
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        files: UploadFiles | None = None,
        timeout: httpx.Timeout,  # noqa: ASYNC109
    ) -> HttpAnswer:
        async with self._limiter:
            return await self._http.post(
                url, json=json, content=content, data=data, files=files, timeout=timeout
            )


@dataclass(frozen=True)
class HttpPoolStatistics:
    """What :meth:`FleetHttpPool.statistics` reports."""

    clients: int  # sub-pools with an open client (held by leases, or idle and kept warm)
    idle: int  # of them, those no lease holds now (never above spare)
    leases: int  # leases held now
    busiest: int  # the most leases one sub-pool holds now (never above per_client)


class _SubPool:
    __slots__ = ("client", "index", "leases")

    def __init__(self, index: int, client: HttpClient) -> None:
        self.index = index
        self.client: HttpClient | None = client  # None: closed, rebuilt on next lease
        self.leases = 0


class FleetHttpPool:
    """The daemon's HTTP clients; bots lease bounded shares of them (see the module).

    ``async with`` it: leaving closes every client it built."""

    __slots__ = (
        "_closed",
        "_idle",
        "_new_client",
        "_per_bot",
        "_per_client",
        "_room",
        "_spare",
        "_subpools",
    )

    def __init__(
        self,
        new_client: HttpClientFactory,
        *,
        per_bot: int,
        per_client: int = LEASES_PER_CLIENT,
        spare: int = SPARE_CLIENTS,
    ) -> None:
        if per_bot < 1:
            raise ValueError(f"per_bot must be >= 1, got {per_bot!r}")
        if per_client < 1:
            raise ValueError(f"per_client must be >= 1, got {per_client!r}")
        if spare < 0:
            raise ValueError(f"spare must be >= 0, got {spare!r}")
        self._new_client = new_client
        self._per_bot = per_bot
        self._per_client = per_client
        self._spare = spare
        self._subpools: list[_SubPool] = []
        # Sub-pools with room for a lease, as (closed, index): open ones first, then the
        # lowest-numbered. Entries go stale (the sub-pool filled up, or was closed or opened
        # again) and are dropped when they reach the top; every sub-pool with room has a
        # valid entry.
        self._room: list[tuple[bool, int]] = []
        self._idle = 0  # open sub-pools that no lease holds
        self._closed = False

    @property
    def connections_per_client(self) -> int:
        """The most connections one sub-pool's client holds: its leases' shares in all."""
        return self._per_bot * self._per_client

    def statistics(self) -> HttpPoolStatistics:
        return HttpPoolStatistics(
            clients=sum(sub.client is not None for sub in self._subpools),
            idle=self._idle,
            leases=sum(sub.leases for sub in self._subpools),
            busiest=max((sub.leases for sub in self._subpools), default=0),
        )

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[BotHttp]:
        """A bounded share of one sub-pool for one bot incarnation or one fleet call; the
        sub-pool's client stays open when it ends (up to ``spare`` idle ones)."""
        sub, client = self._take()
        try:
            yield BotHttp(client, self._per_bot)
        finally:
            closing = self._give_back(sub)
            if closing is not None:
                with trio.CancelScope(shield=True):
                    await closing.aclose()

    def _take(self) -> tuple[_SubPool, HttpClient]:
        if self._closed:
            raise RuntimeError("the fleet's HTTP pool is closed: no new lease can be taken")
        room = self._room
        while room:
            closed, index = room[0]
            sub = self._subpools[index]
            if sub.leases < self._per_client and (sub.client is None) == closed:
                break
            heapq.heappop(room)  # stale
        else:
            sub = _SubPool(len(self._subpools), self._new_client(self.connections_per_client))
            self._subpools.append(sub)
            heapq.heappush(room, (False, sub.index))
            self._idle += 1  # counted as idle until the lease below takes it
        client = sub.client
        if client is None:
            client = sub.client = self._new_client(self.connections_per_client)
            # Its closed entry is the top, and its open one will be: no open one had room.
            heapq.heapreplace(room, (False, sub.index))
        elif sub.leases == 0:
            self._idle -= 1
        sub.leases += 1
        if sub.leases == self._per_client:
            heapq.heappop(room)  # sub's own entry, at the top
        return sub, client

    def _give_back(self, sub: _SubPool) -> HttpClient | None:
        """Return ``sub``'s room; its client when it is to be closed (one idle sub-pool more
        than ``spare``), for the caller to close."""
        was_full = sub.leases == self._per_client
        sub.leases -= 1
        if sub.leases == 0:
            if self._idle >= self._spare:
                client, sub.client = sub.client, None
                heapq.heappush(self._room, (True, sub.index))
                return client
            self._idle += 1
        if was_full:
            heapq.heappush(self._room, (False, sub.index))
        return None

    async def aclose(self) -> None:
        """Close every open client; later leases are refused."""
        self._closed = True
        with trio.CancelScope(shield=True):
            for sub in self._subpools:
                if sub.client is not None:
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
