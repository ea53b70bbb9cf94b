"""One HTTP connection pool for the fleet, with each bot's share of it bounded.

Every bot used to open its own ``httpx.AsyncClient`` (its own pool of ``BOT_CONNECTIONS``) for
each incarnation: a webhook bot woken for one update built a client and opened new TCP
connections for its one reply. :class:`FleetHttpPool` holds one client for the daemon, so
connections to a Bot API host are reused by every bot. Isolation is explicit instead of a side
effect of separate pools: each :meth:`FleetHttpPool.lease` (one per bot incarnation, one per
fleet call such as a token check) admits at most ``per_bot`` requests at once through its own
``trio.CapacityLimiter``, so a tenant whose calls hang holds at most ``per_bot`` connections and
the others' calls go on. The pool has no global connection bound of its own (a global bound
would let hanging tenants exhaust it for everyone): open sockets are bounded by ``per_bot`` ×
leases, which is what ``supervisor.fdlimit`` estimates.

The request URL holds the bot token: the shared client keeps no per-request record (no event
hooks, no cookies are sent back to a Bot API, which sets none), and
:class:`~actors.botapi.client.BotApiClient` never lets httpx's exceptions, which carry the URL,
out unredacted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import httpx
import trio

__all__ = ["BotHttp", "FleetHttpPool", "HttpPoster", "UploadFiles"]

# Files of a multipart/form-data POST: field name -> (file name, content, content type).
UploadFiles = Mapping[str, tuple[str, bytes, str]]


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
    """One lease of the fleet's pool: POSTs through the shared client, at most ``limit`` at
    once."""

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


class FleetHttpPool:
    """The daemon's one HTTP client; bots lease bounded shares of it (see the module)."""

    __slots__ = ("_http", "_per_bot")

    def __init__(self, http: httpx.AsyncClient, *, per_bot: int) -> None:
        if per_bot < 1:
            raise ValueError(f"per_bot must be >= 1, got {per_bot!r}")
        self._http = http
        self._per_bot = per_bot

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[BotHttp]:
        """A bounded share of the pool for one bot incarnation or one fleet call; the shared
        client stays open when it ends (the daemon closes it)."""
        yield BotHttp(self._http, self._per_bot)
