"""BotApiClient: request shape, error mapping for every category, and no token anywhere."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest

from actors.botapi import (
    BotApiClient,
    BotApiError,
    ErrorCategory,
    MalformedResponseError,
    TelegramError,
    TransportError,
    make_http_client,
    shared_ssl_context,
)
from actors.config import TelegramConfig
from actors.secrets import BotToken
from tests.actors.conftest import BOT_ID, TELEGRAM

SECRET = f"{BOT_ID}:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TOKEN = BotToken(SECRET)

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


@asynccontextmanager
async def mock_client(
    handler: Handler, telegram: TelegramConfig = TELEGRAM
) -> AsyncIterator[BotApiClient]:
    transport = httpx.MockTransport(handler)
    async with make_http_client(transport=transport, ssl_context=None, telegram=telegram) as http:
        yield BotApiClient(http, token=TOKEN, telegram=telegram)


def answer(status: int, body: Any = None, *, text: str | None = None, **headers: str) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


def raising(error: type[httpx.TransportError]) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        # Like httpx's own messages can, this one names the URL, token included.
        raise error(f"failed talking to {request.url}", request=request)

    return handler


def assert_no_token(error: BaseException) -> None:
    """Neither the error nor anything chained to it, nor its traceback, shows the secret."""
    rendered = "".join(traceback.format_exception(error))
    assert SECRET not in rendered
    assert SECRET not in str(error) and SECRET not in repr(error)
    seen: BaseException | None = error
    while seen is not None:
        assert SECRET not in str(seen)
        seen = seen.__cause__ or seen.__context__


async def test_call_posts_json_to_the_token_url_and_returns_the_result() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "result": {"message_id": 5}})

    async with mock_client(handler) as client:
        result = await client.send_message(42, "hi", reply_markup=None, parse_mode="HTML")

    assert result == {"message_id": 5}
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"https://api.telegram.org/bot{SECRET}/sendMessage"
    # None-valued parameters are left out rather than sent as null.
    assert json.loads(request.content) == {"chat_id": 42, "text": "hi", "parse_mode": "HTML"}
    assert request.extensions["timeout"]["read"] == TELEGRAM.request_timeout
    assert request.extensions["timeout"]["connect"] == TELEGRAM.connect_timeout


async def test_get_updates_reads_for_the_poll_timeout_plus_the_margin() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "result": [{"update_id": 9}]})

    telegram = TelegramConfig(poll_http_margin=7.5)
    async with mock_client(handler, telegram) as client:
        updates = await client.get_updates(offset=None, timeout=25, allowed_updates=["message"])
        await client.call("getChat", {"chat_id": 1}, timeout=3)

    assert updates == [{"update_id": 9}]
    assert seen[0].extensions["timeout"]["read"] == 32.5
    assert json.loads(seen[0].content) == {
        "timeout": 25,
        "limit": 100,
        "allowed_updates": ["message"],
    }
    assert seen[1].extensions["timeout"]["read"] == 3


async def test_repeated_calls_go_each_to_its_own_url_with_its_own_timeout() -> None:
    # The client keeps a method's URL and a read timeout's Timeout for its next calls, up to
    # a bound: every call, the first, the repeated and those past the bound, is addressed and
    # timed as its own, and each poll sends its own offset.
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "result": []})

    telegram = TelegramConfig(poll_http_margin=5)
    methods = [f"method{i}" for i in range(20)]
    async with mock_client(handler, telegram) as client:
        for offset in (None, 7, 8):
            await client.get_updates(offset=offset, timeout=10, allowed_updates=["message"])
        for round_ in range(2):
            for i, method in enumerate(methods):
                await client.call(method, {"n": round_}, timeout=1 + i)
        await client.call("sendMessage", {"chat_id": 1, "text": "x"})

    polls, calls, (send,) = seen[:3], seen[3:-1], seen[-1:]
    for request, offset in zip(polls, (None, 7, 8), strict=True):
        assert str(request.url) == f"https://api.telegram.org/bot{SECRET}/getUpdates"
        assert request.extensions["timeout"]["read"] == 15
        assert json.loads(request.content).get("offset") == offset
        assert json.loads(request.content)["allowed_updates"] == ["message"]
    assert [str(r.url).rsplit("/", 1)[1] for r in calls] == methods * 2
    assert [r.extensions["timeout"]["read"] for r in calls] == [1 + i for i in range(20)] * 2
    assert [json.loads(r.content)["n"] for r in calls] == [0] * 20 + [1] * 20
    assert str(send.url) == f"https://api.telegram.org/bot{SECRET}/sendMessage"
    assert send.extensions["timeout"] == {
        "connect": TELEGRAM.connect_timeout,
        "read": TELEGRAM.request_timeout,
        "write": TELEGRAM.request_timeout,
        "pool": TELEGRAM.connect_timeout,
    }
    assert SECRET not in repr(client)


def ok_false(code: int | None, description: str, **parameters: int) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "description": description}
    if code is not None:
        body["error_code"] = code
    if parameters:
        body["parameters"] = parameters
    return body


TRANSIENT = ErrorCategory.TRANSIENT_NETWORK
TELEGRAM_ERRORS = [
    # (status, body, category, retry_after, migrate_to_chat_id)
    (429, ok_false(429, "Too Many Requests: retry after 7", retry_after=7),
     ErrorCategory.RATE_LIMIT, 7.0, None),
    (401, ok_false(401, "Unauthorized"), ErrorCategory.PERMANENT, None, None),
    # A 404 on sendMessage is the request's error; only getMe/getUpdates 404s are the token's.
    (404, ok_false(404, "Not Found"), ErrorCategory.CHAT, None, None),
    (400, ok_false(400, "Bad Request: chat not found"), ErrorCategory.CHAT, None, None),
    (400, ok_false(400, "Bad Request: group chat was upgraded to a supergroup chat",
                   migrate_to_chat_id=-1001234567890),
     ErrorCategory.CHAT, None, -1001234567890),
    (403, ok_false(403, "Forbidden: bot was blocked by the user"),
     ErrorCategory.CHAT, None, None),
    (409, ok_false(409, "Conflict: terminated by other getUpdates request"),
     TRANSIENT, None, None),
    (500, ok_false(500, "Internal Server Error"), TRANSIENT, None, None),
    (420, ok_false(420, "FLOOD_WAIT"), ErrorCategory.UNKNOWN, None, None),
    # No error_code in the body: the HTTP status stands in for it.
    (502, ok_false(None, "Bad Gateway"), TRANSIENT, None, None),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "category", "retry_after", "migrate"), TELEGRAM_ERRORS)
async def test_ok_false_becomes_a_telegram_error_of_its_category(
    status: int,
    body: dict[str, Any],
    category: ErrorCategory,
    retry_after: float | None,
    migrate: int | None,
) -> None:
    async with mock_client(answer(status, body)) as client:
        with pytest.raises(TelegramError) as caught:
            await client.call("sendMessage", {"chat_id": 1, "text": "x"})
    error = caught.value
    assert error.category is category
    assert error.error_code == status
    assert error.method == "sendMessage"
    assert error.retry_after == retry_after
    assert error.migrate_to_chat_id == migrate
    assert body["description"] in str(error)
    assert_no_token(error)


async def test_a_gateway_page_is_categorized_by_its_http_status() -> None:
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    async with mock_client(answer(502, text=page)) as client:
        with pytest.raises(TelegramError) as caught:
            await client.get_me()
    assert caught.value.error_code == 502
    assert caught.value.category is ErrorCategory.TRANSIENT_NETWORK
    assert "not Bot API JSON" in str(caught.value)


async def test_a_plain_429_keeps_the_retry_after_header() -> None:
    async with mock_client(answer(429, text="slow down", **{"Retry-After": "3"})) as client:
        with pytest.raises(TelegramError) as caught:
            await client.get_me()
    assert caught.value.category is ErrorCategory.RATE_LIMIT
    assert caught.value.retry_after == 3.0


@pytest.mark.parametrize(
    "handler",
    [
        answer(200, text="<html>captive portal</html>"),
        answer(200, {"result": {"id": 1}}),
        answer(200, {"ok": True}),
        answer(200, [1, 2]),
        answer(200, {"ok": "yes", "result": 1}),
    ],
    ids=["html", "no-ok", "no-result", "array", "ok-not-bool"],
)
async def test_a_200_that_is_not_a_bot_api_response_is_malformed(handler: Handler) -> None:
    async with mock_client(handler) as client:
        with pytest.raises(MalformedResponseError) as caught:
            await client.call("getMe")
    assert caught.value.category is ErrorCategory.UNKNOWN
    assert caught.value.status_code == 200
    assert "not a Bot API response" in str(caught.value)


async def test_typed_helpers_refuse_results_of_the_wrong_shape() -> None:
    async with mock_client(answer(200, {"ok": True, "result": [1]})) as client:
        with pytest.raises(MalformedResponseError, match="getMe answered ok"):
            await client.get_me()
    async with mock_client(answer(200, {"ok": True, "result": {"update_id": 1}})) as client:
        with pytest.raises(MalformedResponseError, match="not a list of updates"):
            await client.get_updates(offset=1, timeout=0)


@pytest.mark.parametrize(
    ("error", "request_sent"),
    [
        (httpx.ConnectError, False),
        (httpx.ConnectTimeout, False),
        (httpx.PoolTimeout, False),
        (httpx.ReadTimeout, True),
        (httpx.WriteTimeout, True),
        (httpx.RemoteProtocolError, True),
        (httpx.ReadError, True),
        (httpx.WriteError, True),
    ],
)
async def test_transport_failures_say_whether_the_request_may_have_been_sent(
    error: type[httpx.TransportError], request_sent: bool
) -> None:
    async with mock_client(raising(error)) as client:
        with pytest.raises(TransportError) as caught:
            await client.send_message(1, "x")
    assert caught.value.request_sent is request_sent
    assert caught.value.category is ErrorCategory.TRANSIENT_NETWORK
    assert error.__name__ in str(caught.value)
    # The URL in httpx's message is kept, with the token redacted to its public id.
    assert f"bot{BOT_ID}:…/sendMessage" in str(caught.value)
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert_no_token(caught.value)


async def test_statistics_count_calls_and_failures() -> None:
    outcomes = iter([200, 500, 200])

    async def handler(request: httpx.Request) -> httpx.Response:
        status = next(outcomes)
        if status == 200:
            return httpx.Response(200, json={"ok": True, "result": True})
        return httpx.Response(status, json={"ok": False, "error_code": status, "description": "x"})

    async with mock_client(handler) as client:
        await client.call("a")
        with pytest.raises(BotApiError):
            await client.call("b")
        await client.call("c")
        stats = client.statistics()
    assert (stats.calls, stats.succeeded, stats.failed, stats.in_flight) == (3, 2, 1, 0)


async def test_repr_of_the_client_shows_only_the_bot_id() -> None:
    async with mock_client(answer(200, {"ok": True, "result": True})) as client:
        assert SECRET not in repr(client)
        assert f"{BOT_ID}:…" in repr(client)
        assert client.bot_id == BOT_ID


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every record of every logger, at DEBUG, unfiltered."""
    collect = _Collect()
    root = logging.getLogger()
    level = root.level
    root.addHandler(collect)
    root.setLevel(logging.DEBUG)
    try:
        yield collect.lines
    finally:
        root.removeHandler(collect)
        root.setLevel(level)


async def test_a_call_logs_no_request_line_and_so_no_token_even_unfiltered() -> None:
    # httpx.AsyncClient logged every request's URL, token and all, at INFO; the lean client
    # below it logs nothing, so there is no line to leak even before the RedactingFilter.
    async with mock_client(answer(200, {"ok": True, "result": True})) as client:
        with captured_logs() as lines:
            await client.call("getMe")
    assert not any(SECRET in line or "getMe" in line for line in lines)


def test_every_http_client_shares_the_one_ssl_context() -> None:
    context = shared_ssl_context()
    clients = [
        make_http_client(ssl_context=context, telegram=TELEGRAM, max_connections=2)
        for _ in range(3)
    ]
    for http in clients:
        pool = http._pool
        assert pool is not None
        assert pool._ssl_context is context
        assert pool._max_connections == 2


def test_max_connections_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        make_http_client(ssl_context=None, telegram=TELEGRAM, max_connections=0)
