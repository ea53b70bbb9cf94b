"""A Bot API client: every call one POST through a bot's HTTP share, every failure mapped to a
category.

Building the HTTP client is separate from the Bot API client so the daemon can share one
``ssl.SSLContext`` between all bots (building one costs ~834 KiB and ~25 ms). The daemon
builds small HTTP clients for the fleet and hands each bot a bounded share of one
(:class:`~actors.botapi.pool.FleetHttpPool`), so a slow tenant cannot exhaust another's
connections. The HTTP client is :class:`~actors.botapi.http.HttpClient`, a POST-only client
on httpcore's connection pool, below ``httpx.AsyncClient`` (what that saves, measured: see
that module).

Every failure is a :class:`~actors.botapi.errors.BotApiError`. httpx's exceptions carry the
request, whose URL contains the token, so they are never chained, formatted or logged without
:func:`~actors.secrets.redact`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from actors.botapi.errors import (
    BotApiError,
    MalformedResponseError,
    TelegramError,
    TransportError,
)
from actors.botapi.http import HttpAnswer, HttpClient, UploadFiles, dumps
from actors.botapi.pool import HttpPoster
from actors.config import TelegramConfig
from actors.secrets import BotToken, redact
from actors.text import may_hold_surrogates, valid_data

__all__ = [
    "BOT_CONNECTIONS",
    "KEEPALIVE_EXPIRY",
    "BotApiClient",
    "ClientStatistics",
    "make_http_client",
    "shared_ssl_context",
]

# Failures before the request could have reached the server: always safe to retry.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)


# Request URLs and timeouts a client keeps for its next calls: more than a bot's usual methods
# and timeouts, and a bound on a handler that names methods or timeouts of its own.
_KEPT_PER_CLIENT = 16

# Seconds an idle connection is kept open for the next request: below the 5 s after which
# common servers (Hypercorn, uvicorn; nginx's 75 s is longer) close an idle keep-alive
# connection. At httpx's 5 s a send could go out on a connection the server was closing at
# that moment: no answer ("Server disconnected without sending a response"), an ambiguous
# send, counted as sent and never retried, so the user got no reply. Measured with 700 bots
# against `botvisor sim-server` (Hypercorn, 5 s): 2 ambiguous sends in 2 of 3 runs at 5.0,
# none in 3 runs at 4.0 (nor with the server's keep-alive raised to 75 s).
KEEPALIVE_EXPIRY = 4.0

# Each bot's share of the fleet's pool: its long poll and up to three calls at once. This
# bounds the sockets, and so the open files, one bot can hold.
BOT_CONNECTIONS = 4


def shared_ssl_context() -> ssl.SSLContext:
    """A TLS context verifying against certifi's roots, to be built once per daemon.

    Pass it to every :func:`make_http_client`. The environment (``SSL_CERT_FILE``) is not
    read here: only the CLI reads the environment.
    """
    return httpx.create_ssl_context(trust_env=False)


def make_http_client(
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    ssl_context: ssl.SSLContext | None,
    telegram: TelegramConfig,
    max_connections: int | None = BOT_CONNECTIONS,
    max_keepalive_connections: int | None = None,
) -> HttpClient:
    """One bot's HTTP client: its own small pool, the daemon's shared TLS context.

    ``transport`` replaces the network (``SimulatedTransport``, ``httpx.MockTransport``).
    Without it, requests go to httpcore's connection pool directly; with no ``ssl_context``
    either, httpcore builds a TLS context (certifi's roots) for every TLS connection, which
    is what a daemon of thousands of bots must avoid. The caller owns the
    client and closes it (``async with``). ``telegram`` is the configuration the client is
    for (its timeouts travel with each request, see :class:`BotApiClient`).
    """
    del telegram  # kept in the signature: every caller names the config the client serves
    if max_connections is not None and max_connections < 1:
        raise ValueError(f"max_connections must be >= 1 or None, got {max_connections!r}")
    if max_keepalive_connections is None:
        max_keepalive_connections = max_connections
    if transport is not None:
        return HttpClient(transport=transport)
    return HttpClient(
        pool=httpcore.AsyncConnectionPool(
            # None: httpcore builds a TLS context verifying against certifi's roots for each
            # TLS connection (none for http://).
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )
    )


@dataclass(frozen=True)
class ClientStatistics:
    """Counters of one :class:`BotApiClient` since it was built."""

    calls: int  # calls started
    succeeded: int
    failed: int  # raised a BotApiError
    in_flight: int


class BotApiClient:
    """Calls the Bot API as one bot: ``POST {api_base}/bot{token}/{method}`` with JSON.

    It makes exactly one HTTP request per call: retries, limits and the breaker belong to the
    request pipeline around it. Every failure raises a :class:`BotApiError` whose message,
    ``repr`` and exception chain contain no token.
    """

    __slots__ = (
        "_calls",
        "_failed",
        "_http",
        "_in_flight",
        "_poll_rest",
        "_poll_shape",
        "_succeeded",
        "_telegram",
        "_timeouts",
        "_token",
        "_urls",
    )

    def __init__(self, http: HttpPoster, *, token: BotToken, telegram: TelegramConfig) -> None:
        self._http = http
        self._token = token
        self._telegram = telegram
        self._calls = 0
        self._succeeded = 0
        self._failed = 0
        self._in_flight = 0
        # Built on a method's first call and reused (the HTTP client parses each URL once,
        # by this string), and a bot calls few methods (its poll every 10 s above all). They
        # hold the token: never formatted, like the token itself.
        self._urls: dict[str, str] = {}
        # By read timeout: the poll's and the calls' default, so two in all as a rule.
        self._timeouts: dict[float, httpx.Timeout] = {}
        # getUpdates' parameters but the offset, as JSON, and what they were built from.
        self._poll_shape: tuple[int, int, tuple[str, ...] | None] | None = None
        self._poll_rest = b"{}"

    def __repr__(self) -> str:
        return f"<BotApiClient bot={self._token.redacted} api_base={self._telegram.api_base!r}>"

    @property
    def bot_id(self) -> int:
        return self._token.bot_id

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            calls=self._calls,
            succeeded=self._succeeded,
            failed=self._failed,
            in_flight=self._in_flight,
        )

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        # The Bot API's own parameter name; an HTTP read timeout, not a deadline on the call.
        timeout: float | None = None,  # noqa: ASYNC109
        files: UploadFiles | None = None,
    ) -> Any:
        """Call ``method`` and return the response's ``result``.

        Parameters whose value is None are left out. ``timeout`` is the HTTP read timeout in
        seconds (default ``telegram.request_timeout``). With ``files`` (InputFile parameters:
        name -> (file name, content, content type)) the call is sent as multipart/form-data,
        the other parameters as form fields (JSON-serialized unless they are strings), as the
        Bot API takes uploads.
        """
        payload = {k: v for k, v in params.items() if v is not None} if params else {}
        read_timeout = self._telegram.request_timeout if timeout is None else timeout
        return await self._counted(method, read_timeout, payload, None, files)

    async def _counted(
        self,
        method: str,
        read_timeout: float,
        payload: dict[str, Any],
        content: bytes | None,
        files: UploadFiles | None,
    ) -> Any:
        self._calls += 1
        self._in_flight += 1
        try:
            result = await self._call(method, payload, read_timeout, files, content)
        except BotApiError:
            self._failed += 1
            raise
        finally:
            self._in_flight -= 1
        self._succeeded += 1
        return result

    async def get_me(self) -> dict[str, Any]:
        """The bot's own user: validates the token (401 when it is bad or revoked)."""
        return _expect_object("getMe", await self.call("getMe"))

    async def get_updates(
        self,
        *,
        offset: int | None,
        timeout: int,  # noqa: ASYNC109 - getUpdates' long-poll seconds, sent to the server
        allowed_updates: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Long-poll for updates; ``offset`` confirms every update below it.

        The HTTP read timeout is ``timeout + telegram.poll_http_margin``, so an idle poll ends
        with the server's empty answer, not with a client timeout.
        """
        # Only the offset changes from one poll to the next: the rest is encoded once.
        shape = (timeout, limit, None if allowed_updates is None else tuple(allowed_updates))
        if self._poll_shape != shape:
            fixed: dict[str, Any] = {"timeout": timeout, "limit": limit}
            if allowed_updates is not None:
                fixed["allowed_updates"] = list(allowed_updates)
            self._poll_shape, self._poll_rest = shape, dumps(fixed)
        rest = self._poll_rest
        content = rest if offset is None else b'{"offset":%d,%s' % (offset, rest[1:])
        result = await self._counted(
            "getUpdates", timeout + self._telegram.poll_http_margin, {}, content, None
        )
        if not isinstance(result, list) or not all(isinstance(u, dict) for u in result):
            raise MalformedResponseError(
                "getUpdates answered ok, but its result is not a list of updates",
                method="getUpdates",
                status_code=200,
            )
        return result

    async def send_message(self, chat_id: int | str, text: str, **params: Any) -> dict[str, Any]:
        """Send ``text`` to ``chat_id``; returns the sent Message."""
        result = await self.call("sendMessage", {"chat_id": chat_id, "text": text, **params})
        return _expect_object("sendMessage", result)

    async def set_webhook(
        self,
        *,
        url: str,
        secret_token: str,
        max_connections: int,
        allowed_updates: Sequence[str],
        drop_pending_updates: bool = False,
        certificate: bytes | None = None,
    ) -> bool:
        """Tell Telegram to push the bot's updates to ``url`` with ``secret_token`` in each
        delivery's header; pending updates are kept unless ``drop_pending_updates``.

        ``certificate`` (PEM) is a self-signed certificate of the listener, uploaded so that
        Telegram trusts it; the call is multipart/form-data then, as the Bot API requires."""
        result = await self.call(
            "setWebhook",
            {
                "url": url,
                "secret_token": secret_token,
                "max_connections": max_connections,
                "allowed_updates": list(allowed_updates),
                "drop_pending_updates": drop_pending_updates,
            },
            files=None
            if certificate is None
            else {"certificate": ("certificate.pem", certificate, "application/x-pem-file")},
        )
        return bool(result)

    async def delete_webhook(self, *, drop_pending_updates: bool = False) -> bool:
        """Remove the bot's webhook (getUpdates works again); pending updates are kept
        unless ``drop_pending_updates``."""
        result = await self.call("deleteWebhook", {"drop_pending_updates": drop_pending_updates})
        return bool(result)

    async def get_webhook_info(self) -> dict[str, Any]:
        """The bot's WebhookInfo: ``url`` ("" when none), ``pending_update_count``,
        ``last_error_date`` and ``last_error_message`` when a delivery failed."""
        return _expect_object("getWebhookInfo", await self.call("getWebhookInfo"))

    async def _call(
        self,
        method: str,
        payload: dict[str, Any],
        read_timeout: float,
        files: UploadFiles | None = None,
        content: bytes | None = None,
    ) -> Any:
        timeout = self._timeouts.get(read_timeout)
        if timeout is None:
            timeout = self._timeout(read_timeout)
            if len(self._timeouts) < _KEPT_PER_CLIENT:
                self._timeouts[read_timeout] = timeout
        url = self._urls.get(method)
        if url is None:
            url = f"{self._telegram.api_base.rstrip('/')}/bot{self._token.reveal()}/{method}"
            if len(self._urls) < _KEPT_PER_CLIENT:
                self._urls[method] = url
        error: BotApiError | None = None
        try:
            if files is not None:
                response = await self._http.post(
                    url, data=_form_fields(payload), files=files, timeout=timeout
                )
            elif content is not None:
                response = await self._http.post(url, content=content, timeout=timeout)
            else:
                response = await self._http.post(url, json=payload, timeout=timeout)
        except httpx.RequestError as exc:
            # Built here, raised below, outside the except block: raising inside would chain
            # httpx's exception, whose request URL holds the token, as __context__.
            error = _transport_error(method, exc)
        if error is not None:
            raise error
        return _result(method, response)

    def _timeout(self, read_timeout: float) -> httpx.Timeout:
        telegram = self._telegram
        return httpx.Timeout(
            connect=telegram.connect_timeout,
            read=read_timeout,
            write=telegram.request_timeout,
            pool=telegram.connect_timeout,
        )


def _form_fields(payload: Mapping[str, Any]) -> dict[str, str]:
    """Parameters as multipart form fields: strings as they are, anything else (numbers,
    booleans, lists) JSON-serialized, which is how the Bot API reads a form's values."""
    return {
        key: value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for key, value in payload.items()
    }


def _transport_error(method: str, exc: httpx.RequestError) -> TransportError:
    sent = not isinstance(exc, _NOT_SENT)
    kind = type(exc).__name__
    detail = redact(str(exc)) or "no detail"
    if sent:
        what = "the request may have reached the Bot API, but no answer came"
    else:
        what = "the request never reached the Bot API"
    return TransportError(f"{method}: {what} ({kind}: {detail})", method=method, request_sent=sent)


def _result(method: str, response: HttpAnswer) -> Any:
    status = response.status
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        body = None
    if may_hold_surrogates(response.content):
        # A lone surrogate would fail later in SQLite or a response: replaced, see actors.text.
        body = valid_data(body)
    if isinstance(body, dict) and isinstance(body.get("ok"), bool):
        if body["ok"] and "result" in body:
            return body["result"]
        if not body["ok"]:
            if not isinstance(body.get("error_code"), int):
                body = {**body, "error_code": status if status >= 400 else 0}
            raise TelegramError.from_response(method, body)
    if status >= 400:
        # A gateway's error page: categorize by the HTTP status, as Telegram's own would be.
        retry_after = response.retry_after
        raise TelegramError(
            method=method,
            error_code=status,
            description=f"{response.reason or 'HTTP error'} (the body was not Bot API JSON)",
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    raise MalformedResponseError(
        f"{method}: the server answered HTTP {status} with a body that is not a Bot API "
        "response (expected a JSON object with a boolean 'ok')",
        method=method,
        status_code=status,
    )


def _expect_object(method: str, result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise MalformedResponseError(
            f"{method} answered ok, but its result is not an object",
            method=method,
            status_code=200,
        )
    return result
