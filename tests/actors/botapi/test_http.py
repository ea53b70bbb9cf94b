"""The network path below httpx.AsyncClient: BotApiClient over httpcore's pool on real sockets
of 127.0.0.1 — the request on the wire, timeouts, TLS with certificate checks, the error
categories of non-JSON answers, multipart uploads, and no token in any error."""

from __future__ import annotations

import json
import random
import socket
import ssl
from functools import partial
from pathlib import Path

import pytest
import trio

from actors.botapi import (
    KEEPALIVE_EXPIRY,
    BotApiClient,
    ErrorCategory,
    HttpClient,
    MalformedResponseError,
    TelegramError,
    TransportError,
    make_http_client,
)
from actors.config import TelegramConfig
from actors.secrets import BotToken
from actors.simulator import SimulatedBotApi, serve_sim
from tests.actors.botapi.raw_server import HangingServer, http_response, serve
from tests.certificates import needs_openssl, self_signed

SLOW = "111111:" + "A" * 35  # HangingServer never answers this bot
SECRET = "222222:" + "B" * 35


async def test_a_call_is_one_json_post_to_the_token_url_with_host_and_length() -> None:
    server = HangingServer()
    async with trio.open_nursery() as nursery:
        telegram, new_client = await serve(nursery, server)
        async with new_client(4) as http:
            bot = BotApiClient(http, token=BotToken(SECRET), telegram=telegram)
            assert await bot.call("sendMessage", {"chat_id": 5, "text": "héllo"}) == {"id": 1}
            # The canned answer is no list of updates: what matters here is what was sent.
            with pytest.raises(MalformedResponseError):
                await bot.get_updates(offset=7, timeout=0)
            with pytest.raises(MalformedResponseError):
                await bot.get_updates(offset=None, timeout=0, allowed_updates=["message"])
        nursery.cancel_scope.cancel()
    (head, body), (poll_head, poll_body), (_, first_poll) = server.requests
    request_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    assert request_line == f"POST /bot{SECRET}/sendMessage HTTP/1.1"
    port = telegram.api_base.rsplit(":", 1)[1]
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"chat_id": 5, "text": "héllo"}  # UTF-8, not \\u escapes
    assert "héllo".encode() in body
    assert b"cookie" not in head.lower()
    assert poll_head.startswith(f"POST /bot{SECRET}/getUpdates ".encode())
    assert json.loads(poll_body) == {"offset": 7, "timeout": 0, "limit": 100}
    assert json.loads(first_poll) == {"timeout": 0, "limit": 100, "allowed_updates": ["message"]}


@pytest.mark.parametrize(
    ("reply", "code", "category", "retry_after"),
    [
        (
            http_response(b"502 Bad Gateway", b"<html>bad gateway</html>", b"retry-after: 7"),
            502,
            ErrorCategory.TRANSIENT_NETWORK,
            7.0,
        ),
        (
            http_response(
                b"429 Too Many Requests",
                b'{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3",'
                b'"parameters":{"retry_after":3}}',
                b"content-type: application/json",
            ),
            429,
            ErrorCategory.RATE_LIMIT,
            3.0,
        ),
        (
            http_response(
                b"409 Conflict",
                b'{"ok":false,"error_code":409,"description":"Conflict: terminated by other '
                b'getUpdates request"}',
            ),
            409,
            ErrorCategory.TRANSIENT_NETWORK,
            None,
        ),
    ],
)
async def test_error_answers_over_the_wire_keep_their_category(
    reply: bytes, code: int, category: ErrorCategory, retry_after: float | None
) -> None:
    server = HangingServer(reply)
    async with trio.open_nursery() as nursery:
        telegram, new_client = await serve(nursery, server)
        async with new_client(4) as http:
            bot = BotApiClient(http, token=BotToken(SECRET), telegram=telegram)
            with pytest.raises(TelegramError) as caught:
                await bot.call("getMe")
        nursery.cancel_scope.cancel()
    assert caught.value.error_code == code
    assert caught.value.category is category
    assert caught.value.retry_after == retry_after
    if code == 502:
        assert "Bad Gateway (the body was not Bot API JSON)" in str(caught.value)


async def test_a_server_that_never_answers_ends_in_the_read_timeout_as_maybe_sent() -> None:
    # Real sockets, so the real clock: the shortest timeouts the config allows (0.1 s).
    server = HangingServer()
    fast = TelegramConfig(request_timeout=0.1, poll_http_margin=0.1)
    async with trio.open_nursery() as nursery:
        telegram, new_client = await serve(nursery, server, telegram=fast)
        async with new_client(4) as http:
            bot = BotApiClient(http, token=BotToken(SLOW), telegram=telegram)
            with pytest.raises(TransportError) as caught:
                await bot.call("sendMessage", {"chat_id": 1, "text": "x"})
            # The long poll's read timeout is its own (poll timeout + margin, 0.1 s here).
            with pytest.raises(TransportError) as polled:
                await bot.get_updates(offset=None, timeout=0)
        nursery.cancel_scope.cancel()
    assert server.slow_connections == 2
    for error in (caught.value, polled.value):
        assert error.request_sent is True
        assert "ReadTimeout" in str(error)
        assert error.__context__ is None and error.__cause__ is None
        assert_no_token_of(error, SLOW)


async def test_a_refused_connection_never_reached_the_api_and_names_no_token() -> None:
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    telegram = TelegramConfig(api_base=f"http://127.0.0.1:{port}")
    server = HangingServer()
    async with trio.open_nursery() as nursery:
        _, new_client = await serve(nursery, server)
        async with new_client(4) as http:
            bot = BotApiClient(http, token=BotToken(SECRET), telegram=telegram)
            with pytest.raises(TransportError) as caught:
                await bot.get_me()
        nursery.cancel_scope.cancel()
    assert caught.value.request_sent is False
    assert caught.value.category is ErrorCategory.TRANSIENT_NETWORK
    assert "ConnectError" in str(caught.value)
    assert_no_token_of(caught.value, SECRET)


def assert_no_token_of(error: BaseException, secret: str) -> None:
    seen: BaseException | None = error
    while seen is not None:
        assert secret not in str(seen) and secret not in repr(seen)
        seen = seen.__cause__ or seen.__context__


@needs_openssl
async def test_tls_checks_the_certificate_with_the_shared_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "api")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    server = HangingServer()
    async with trio.open_nursery() as nursery:
        # A client whose context trusts the certificate talks TLS to the server...
        telegram, new_client = await serve(nursery, server, tls=server_tls, client_tls=trusting)
        assert telegram.api_base.startswith("https://127.0.0.1:")
        async with new_client(4) as http:
            bot = BotApiClient(http, token=BotToken(SECRET), telegram=telegram)
            assert await bot.get_me() == {"id": 1}
        # ...one with the default roots refuses it before anything is sent.
        _, strict_client = await serve(nursery, server, tls=server_tls, client_tls=None)
        async with strict_client(4) as http:
            bot = BotApiClient(http, token=BotToken(SECRET), telegram=telegram)
            with pytest.raises(TransportError) as caught:
                await bot.get_me()
        nursery.cancel_scope.cancel()
    assert caught.value.request_sent is False
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert len(server.requests) == 1
    assert_no_token_of(caught.value, SECRET)


@needs_openssl
async def test_a_certificate_upload_goes_over_the_wire_as_multipart(tmp_path: Path) -> None:
    api = SimulatedBotApi(rng=random.Random(3), record=True)
    secret = SimulatedBotApi.make_token(7_700_000, random.Random(3))
    api.add_bot(secret)
    cert, _ = self_signed(tmp_path, "hook")
    pem = cert.read_bytes()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_sim, api))
        server = HangingServer()
        _, new_client = await serve(nursery, server)
        telegram = TelegramConfig(api_base=url)
        async with new_client(4) as http:
            bot = BotApiClient(http, token=BotToken(secret), telegram=telegram)
            assert await bot.set_webhook(
                url="https://bots.example.com/tg/7700000",
                secret_token="s3cret",
                max_connections=40,
                allowed_updates=["message"],
                certificate=pem,
            )
            info = await bot.get_webhook_info()
        nursery.cancel_scope.cancel()
    assert info["url"] == "https://bots.example.com/tg/7700000"
    assert info["has_custom_certificate"] is True


async def test_a_closed_client_sends_nothing_and_closing_twice_is_harmless() -> None:
    server = HangingServer()
    async with trio.open_nursery() as nursery:
        telegram, new_client = await serve(nursery, server)
        http = new_client(4)
        bot = BotApiClient(http, token=BotToken(SECRET), telegram=telegram)
        assert await bot.get_me() == {"id": 1}
        await http.aclose()
        await http.aclose()
        assert http.is_closed
        with pytest.raises(RuntimeError, match="HTTP client is closed"):
            await bot.get_me()
        nursery.cancel_scope.cancel()
    assert len(server.requests) == 1


def test_a_client_sends_through_exactly_one_of_a_pool_and_a_transport() -> None:
    with pytest.raises(ValueError, match="a pool or a transport: give one"):
        HttpClient()


async def test_idle_connections_are_given_up_before_a_five_second_server_closes_them() -> None:
    """Hypercorn and uvicorn close a keep-alive connection idle 5 s: a send on a connection
    kept as long may meet the close and get no answer, which counts as sent (lost reply)."""
    async with make_http_client(ssl_context=None, telegram=TelegramConfig()) as http:
        pool = http._pool
        assert pool is not None
        assert pool._keepalive_expiry == KEEPALIVE_EXPIRY < 5.0
