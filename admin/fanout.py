"""The fleet gateway's calls to the shards: one request to one shard, bounded by the per-shard
timeout, and the same request to every shard at once (``admin.gateway``).

A shard that does not answer in time, cannot be reached or answers with a server error is a
:class:`ShardFailure` with a short reason (``timeout after 2 s``, ``connection refused``,
``HTTP 503``): never the transport's exception text, never a URL (which could carry a
credential), never the token.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from actors import jump_hash

__all__ = [
    "FORWARDED_HEADERS",
    "ShardFailure",
    "ShardReply",
    "Shards",
    "connection_refused",
    "failure_of",
]

# Headers of a shard's answer that the gateway passes on to its client.
FORWARDED_HEADERS = ("content-type", "retry-after", "location", "allow")
# A shard answer with one of these is the shard's failure, not the request's: a fleet read
# counts the shard as failed. (401 and 403 mean the gateway's token is not the shard's.)
_SHARD_FAULTS = frozenset({401, 403, 429})


@dataclass(frozen=True)
class ShardReply:
    """What a shard answered."""

    shard: int
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def failed(self) -> bool:
        """A server error, or a refusal of the gateway itself: the shard's fault."""
        return self.status >= 500 or self.status in _SHARD_FAULTS


@dataclass(frozen=True)
class ShardFailure:
    """A shard that did not answer: ``reason`` is short and safe to show."""

    shard: int
    reason: str
    timed_out: bool = False

    def record(self) -> dict[str, object]:
        return {"shard": self.shard, "error": self.reason}


def failure_of(shard: int, reply: ShardReply) -> ShardFailure:
    """A failed answer as the failure a fleet read reports."""
    if reply.status in (401, 403):
        return ShardFailure(shard, f"HTTP {reply.status}: the shard refused the gateway's token")
    return ShardFailure(shard, f"HTTP {reply.status}")


def connection_refused(exc: BaseException | None, depth: int = 0) -> bool:
    """Whether a connection refusal is in ``exc``, its causes or its groups (Trio reports a
    failed connect as "all attempts to connect ... failed", the refusals inside)."""
    if exc is None or depth > 8:
        return False
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return True
    if isinstance(exc, BaseExceptionGroup) and any(
        connection_refused(inner, depth + 1) for inner in exc.exceptions
    ):
        return True
    return connection_refused(exc.__cause__ or exc.__context__, depth + 1)


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc).lower()
    if isinstance(exc, httpx.ConnectError):
        if "refused" in text or connection_refused(exc):
            return "connection refused"
        if "name" in text or "resolve" in text or "known" in text:
            return "cannot resolve the shard's host"
        return "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "connection lost"
    return f"request failed ({type(exc).__name__})"


def _seconds(value: float) -> str:
    return f"{value:g} s"


class Shards:
    """The shards' admin APIs: ``urls[i]`` is shard ``i`` of ``len(urls)``; a bot's owner is
    the jump hash of its user_id over that count, as each shard computes it."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        http: httpx.AsyncClient,
        timeout: float,
        token: str | None,
        write_timeout: float | None = None,
    ) -> None:
        if not urls:
            raise ValueError("a gateway needs at least one shard")
        self._urls = [url.rstrip("/") for url in urls]
        self._http = http
        self.timeout = timeout
        # Writes (POST, DELETE) may wait on Telegram (an add or a resume calls getMe): their
        # own, longer bound.
        self.write_timeout = timeout if write_timeout is None else write_timeout
        self._token = token

    @property
    def count(self) -> int:
        return len(self._urls)

    def owner(self, user_id: int) -> int:
        return jump_hash(user_id, self.count)

    async def call(
        self,
        shard: int,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ShardReply | ShardFailure:
        """One request to ``shard``, given up after the timeout (``write_timeout`` for any
        method but GET). ``headers`` are the
        client's to pass on (content type, forwarded-for); the gateway's token is added."""
        sent = dict(headers or {})
        if self._token is not None:
            sent["authorization"] = f"Bearer {self._token}"
        url = self._urls[shard] + path + (f"?{query.decode('latin-1')}" if query else "")
        timeout = self.timeout if method == "GET" else self.write_timeout
        with trio.move_on_after(timeout):
            try:
                response = await self._http.request(method, url, content=body, headers=sent)
            except httpx.HTTPError as exc:
                return ShardFailure(shard, _reason(exc))
            kept = {k: v for k, v in response.headers.items() if k.lower() in FORWARDED_HEADERS}
            return ShardReply(shard, response.status_code, response.content, kept)
        return ShardFailure(shard, f"timeout after {_seconds(timeout)}", timed_out=True)

    async def fan_out(
        self,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[ShardReply | ShardFailure]:
        """The same request to every shard concurrently; the answers in shard order, each
        within the timeout (so the whole within about one timeout)."""
        answers: list[ShardReply | ShardFailure | None] = [None] * self.count

        async def one(index: int) -> None:
            answers[index] = await self.call(
                index, method, path, query=query, body=body, headers=headers
            )

        async with trio.open_nursery() as nursery:
            for index in range(self.count):
                nursery.start_soon(one, index)
        return [answer for answer in answers if answer is not None]
