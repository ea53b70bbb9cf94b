"""A POST-only HTTP client for the Bot API, one level below ``httpx.AsyncClient``.

A Bot API call is one POST of JSON (or, for an upload, of multipart/form-data) to a URL the
caller has already built, answered by a JSON body read whole. ``httpx.AsyncClient`` does much
more on every request, and a fleet's profile showed what it costs: merging the client's
headers, cookies and base URL into each request (``build_request``, ~8% of an idle 1,000-bot
fleet's CPU over loopback), extracting cookies from each response (~5%), the auth, redirect
and event-hook machinery around ``send``, httpx's Request and Response models around
httpcore's, and ~4 KiB of per-client state. :class:`HttpClient` builds the request itself
(the Host header and httpcore's URL parsed once per URL, fixed header bytes) and hands it
straight to httpcore's ``AsyncConnectionPool``, which keeps what matters: the connection
bound and reuse, each request's connect/read/write/pool timeouts, TLS with the shared context
and its certificate checks. httpcore's errors are mapped to httpx's as httpx maps them, so
callers classify one family of errors. Measured (interleaved A/B over loopback, docs in
bench/notes.py, "the lean request path"): client CPU per update 1.68 → 1.12 ms at 1,000 bots
and 0.97 → 0.68 ms at 100; the same requests on httpx's ``AsyncHTTPTransport`` cost 1.28 and
0.80 ms, so the network path skips httpx's models too.

An injected httpx transport (``SimulatedTransport``, ``httpx.MockTransport``) gets an
``httpx.Request`` built the same way: tests and in-process benchmarks keep their seam.

Not kept, on purpose: cookies (the Bot API sets none, and a jar would be per-bot state),
redirects (never followed, as before: a 3xx is not a Bot API answer), compression (no
``Accept-Encoding`` is sent, so a server does not compress; on the network path a compressed
answer would not be decoded and counts as a non-JSON body). Proxies are not configurable (the
environment is not read: ``trust_env`` was off already).

The request URL holds the bot token: nothing here logs or formats it, httpcore's errors carry
no URL, and :class:`~actors.botapi.client.BotApiClient` redacts every error it raises anyway.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpcore
import httpx

__all__ = ["HttpAnswer", "HttpClient", "UploadFiles", "dumps"]

# Files of a multipart/form-data POST: field name -> (file name, content, content type).
UploadFiles = Mapping[str, tuple[str, bytes, str]]

# Host headers and request targets a client keeps (a bot's few methods, one host).
_KEPT = 32

_USER_AGENT = b"botvisor"

# Headers of every request but Host and the body's: the same bytes each time, never parsed.
_COMMON = ((b"Accept", b"*/*"), (b"Connection", b"keep-alive"), (b"User-Agent", _USER_AGENT))
_JSON_TYPE = (b"Content-Type", b"application/json")

# httpcore's errors as httpx's, the most specific first (what httpx's transport does), so
# the caller classifies one family of errors whichever path a request took.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, as httpx's ``json=`` encodes it (NaN refused)."""
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What a Bot API call needs of an HTTP response, its body read whole."""

    status: int
    content: bytes
    reason: str  # the status line's reason phrase ("" when the server sent none)
    retry_after: str | None  # the Retry-After header, as sent


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpx.URL
    host: tuple[bytes, bytes]
    core: httpcore.URL | None  # with a pool


def _mapped(exc: Exception) -> httpx.TransportError | None:
    for core, ours in _ERRORS:
        if isinstance(exc, core):
            return ours(_detail(exc))
    return None


def _detail(exc: BaseException) -> str:
    """The first message down ``exc``'s chain: a TLS failure reaches httpcore as Trio's
    empty BrokenResourceError, raised from the ``ssl`` error that says what was wrong."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            break
        if str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return ""


class HttpClient:
    """POSTs prebuilt requests through httpcore's connection pool (``pool``, the network)
    or an httpx transport (``transport``: a test's, the simulator's); ``async with`` it
    (leaving closes the pool or the transport)."""

    __slots__ = ("_closed", "_pool", "_targets", "_transport")

    def __init__(
        self,
        *,
        pool: httpcore.AsyncConnectionPool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if (pool is None) == (transport is None):
            raise ValueError("an HttpClient sends through a pool or a transport: give one")
        self._pool = pool
        self._transport = transport
        self._closed = False
        # A request URL parsed once: its Host header and httpx's or httpcore's URL. They hold
        # the token: never formatted.
        self._targets: dict[str, _Target] = {}

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        files: UploadFiles | None = None,
        timeout: httpx.Timeout,  # noqa: ASYNC109 - per-phase HTTP timeouts, not a deadline
    ) -> HttpAnswer:
        """POST ``content`` (JSON already encoded), ``json`` (encoded here) or, with
        ``files``, ``data`` and ``files`` as multipart/form-data; the answer read whole.
        Failures are httpx's ``TransportError`` family, whichever path the request took."""
        if self._closed:
            raise RuntimeError("the HTTP client is closed: no request can be sent")
        extensions: dict[str, Any] = {"timeout": timeout.as_dict()}
        target = self._target(url)
        if files is None:
            body = dumps(json) if content is None else content
            headers = [
                target.host,
                *_COMMON,
                _JSON_TYPE,
                (b"Content-Length", b"%d" % len(body)),
            ]
            if target.core is not None:
                return await self._send_core(target.core, headers, body, extensions)
            request = httpx.Request(
                "POST",
                target.url,
                headers=headers,
                stream=httpx.ByteStream(body),
                extensions=extensions,
            )
            request.read()  # the body as request.content, as httpx's own requests have it
        else:
            request = httpx.Request(
                "POST",
                target.url,
                headers=[target.host, *_COMMON],
                data=data,
                files=files,
                extensions=extensions,
            )
            if target.core is not None:
                return await self._send_core(
                    target.core, request.headers.raw, request.read(), extensions
                )
        return await self._send_httpx(request)

    async def _send_core(
        self,
        url: httpcore.URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        extensions: dict[str, Any],
    ) -> HttpAnswer:
        assert self._pool is not None
        request = httpcore.Request(
            b"POST", url, headers=headers, content=body, extensions=extensions
        )
        error: httpx.TransportError | None = None
        try:
            response = await self._pool.handle_async_request(request)
            try:
                answer = await response.aread()
            finally:
                await response.aclose()
        except Exception as exc:
            error = _mapped(exc)
            if error is None:
                raise
        if error is not None:
            raise error  # outside the except block: httpcore's exception is not chained
        retry_after = None
        for name, value in response.headers:
            if name.lower() == b"retry-after":
                retry_after = value.decode("latin-1")
                break
        reason = response.extensions.get("reason_phrase", b"")
        return HttpAnswer(
            response.status,
            answer,
            reason.decode("latin-1") if isinstance(reason, bytes) else "",
            retry_after,
        )

    async def _send_httpx(self, request: httpx.Request) -> HttpAnswer:
        assert self._transport is not None
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return HttpAnswer(
            response.status_code,
            response.content,
            response.reason_phrase,
            response.headers.get("retry-after"),
        )

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parsed = httpx.URL(url)
            core = None
            if self._pool is not None:
                core = httpcore.URL(
                    scheme=parsed.raw_scheme,
                    host=parsed.raw_host,
                    port=parsed.port,
                    target=parsed.raw_path,
                )
            target = _Target(parsed, (b"Host", parsed.netloc), core)
            if len(self._targets) < _KEPT:
                self._targets[url] = target
        return target

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._pool is not None:
                await self._pool.aclose()
            if self._transport is not None:
                await self._transport.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
