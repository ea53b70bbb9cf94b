"""A POST-only HTTP client for the Bot API, one level below ``httpx.AsyncClient``.

A Bot API call is one POST of JSON (or, for an upload, of multipart/form-data) to a URL the
caller has already built, answered by a JSON body read whole. ``httpx.AsyncClient`` does much
more on every request, and a fleet's profile showed what it costs: merging the client's
headers, cookies and base URL into each request (``build_request``, ~8% of an idle 1,000-bot
fleet's CPU over loopback), extracting cookies from each response (~5%), the auth and redirect
machinery around ``send``, and ~5 KiB of per-client state. :class:`HttpClient` builds the
request itself, with headers prepared once, and hands it straight to an httpx transport: the
network one (``httpx.AsyncHTTPTransport``, that is httpcore's connection pool, with the
daemon's shared TLS context) or one a test or the simulator injects. The transport keeps what
matters: connection bounds and reuse, the connect/read/write/pool timeouts of each request
(``request.extensions["timeout"]``), TLS with certificate checks, the mapping of httpcore's
errors to httpx's.

Not kept, on purpose: cookies (the Bot API sets none, and a jar would be per-bot state),
redirects (never followed, as before: a 3xx is not a Bot API answer), compression (no
``Accept-Encoding`` is sent; a compressed answer is still decoded by its ``Content-Encoding``).
Proxies are not configurable (the environment is not read: ``trust_env`` was off already).

Like httpx's, the exceptions raised here carry the request, whose URL holds the bot token:
:class:`~actors.botapi.client.BotApiClient` turns them into redacted errors.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

__all__ = ["HttpClient", "UploadFiles", "dumps"]

# Files of a multipart/form-data POST: field name -> (file name, content, content type).
UploadFiles = Mapping[str, tuple[str, bytes, str]]

# Host headers a client keeps (one, the api_base's, as a rule).
_KEPT_HOSTS = 8

_USER_AGENT = b"botvisor"

# Headers of every request but Host and the body's: the same bytes each time, never parsed.
_COMMON = ((b"Accept", b"*/*"), (b"Connection", b"keep-alive"), (b"User-Agent", _USER_AGENT))
_JSON_TYPE = (b"Content-Type", b"application/json")


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, as httpx's ``json=`` encodes it (NaN refused)."""
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class HttpClient:
    """POSTs prebuilt requests through one httpx transport; ``async with`` it (leaving closes
    the transport, as leaving an ``httpx.AsyncClient`` does)."""

    __slots__ = ("_closed", "_hosts", "_transport")

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport
        self._closed = False
        # The Host header by (scheme, host, port): one entry as a rule (the api_base).
        self._hosts: dict[tuple[bytes, bytes, int | None], tuple[bytes, bytes]] = {}

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def post(
        self,
        url: httpx.URL,
        *,
        json: Any = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        files: UploadFiles | None = None,
        timeout: httpx.Timeout,  # noqa: ASYNC109 - per-phase HTTP timeouts, not a deadline
    ) -> httpx.Response:
        """POST ``content`` (JSON already encoded), ``json`` (encoded here) or, with
        ``files``, ``data`` and ``files`` as multipart/form-data; the answer read whole."""
        if self._closed:
            raise RuntimeError("the HTTP client is closed: no request can be sent")
        extensions = {"timeout": timeout.as_dict()}
        if files is None:
            body = dumps(json) if content is None else content
            request = httpx.Request(
                "POST",
                url,
                headers=[
                    self._host(url),
                    *_COMMON,
                    _JSON_TYPE,
                    (b"Content-Length", b"%d" % len(body)),
                ],
                stream=httpx.ByteStream(body),
                extensions=extensions,
            )
            request.read()  # the body as request.content, as httpx's own requests have it
        else:
            request = httpx.Request(
                "POST",
                url,
                headers=[self._host(url), *_COMMON],
                data=data,
                files=files,
                extensions=extensions,
            )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _host(self, url: httpx.URL) -> tuple[bytes, bytes]:
        key = (url.raw_scheme, url.raw_host, url.port)
        header = self._hosts.get(key)
        if header is None:
            header = (b"Host", url.netloc)
            if len(self._hosts) < _KEPT_HOSTS:
                self._hosts[key] = header
        return header

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
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
