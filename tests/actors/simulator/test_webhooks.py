"""The simulated Bot API pushes webhooks as Telegram does, on a MockClock.

The receiver is a small ASGI app behind ``httpx.ASGITransport`` (which runs on Trio): it
records what arrives and answers as each test tells it.
"""

from __future__ import annotations

import itertools
import json
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from actors.botapi import BotApiClient, make_http_client, shared_ssl_context
from actors.config import TelegramConfig
from actors.secrets import BotToken
from actors.simulator import SIM_EPOCH, SimulatedBotApi, serve_sim
from actors.simulator.webhooks import CONFLICT_WEBHOOK, next_retry, queue_key
from tests import payloads

URL = "http://127.0.0.1:8443/tg/1"
Scope = MutableMapping[str, Any]
Answer = tuple[int, dict[str, str]]


@dataclass
class Delivery:
    time: float
    update: dict[str, Any]
    headers: dict[str, str]

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])


@dataclass
class Receiver:
    """An ASGI webhook receiver: ``answer(delivery)`` decides each answer (default 200)."""

    answer: Callable[[Delivery], Awaitable[Answer]] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http" and scope["method"] == "POST"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        delivery = Delivery(trio.current_time(), json.loads(body), headers)
        self.deliveries.append(delivery)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status, extra = (200, {}) if self.answer is None else await self.answer(delivery)
        finally:
            self.in_flight -= 1
        raw = [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b""})

    def ids(self) -> list[int]:
        return [d.update_id for d in self.deliveries]


@pytest.fixture
def api() -> SimulatedBotApi:
    return SimulatedBotApi(rng=random.Random(7))


@pytest.fixture
def token(api: SimulatedBotApi) -> str:
    secret = SimulatedBotApi.make_token(4242, random.Random(1))
    api.add_bot(secret)
    return secret


@asynccontextmanager
async def pushing(api: SimulatedBotApi, receiver: Receiver) -> AsyncIterator[None]:
    transport = httpx.ASGITransport(app=receiver)
    async with httpx.AsyncClient(transport=transport) as client, trio.open_nursery() as nursery:
        await nursery.start(api.push_webhooks, client)
        yield
        nursery.cancel_scope.cancel()


async def call(api: SimulatedBotApi, token: str, method: str, **params: Any) -> dict[str, Any]:
    _, body = await api.handle(token, method, params)
    return body


async def info(api: SimulatedBotApi, token: str) -> dict[str, Any]:
    body = await call(api, token, "getWebhookInfo")
    assert body["ok"] is True
    result: dict[str, Any] = body["result"]
    return result


# -- the methods ------------------------------------------------------------------------------


async def test_get_updates_while_a_webhook_is_set_answers_409(
    api: SimulatedBotApi, token: str
) -> None:
    assert await call(api, token, "setWebhook", url=URL) == {
        "ok": True,
        "result": True,
        "description": "Webhook was set",
    }
    assert await call(api, token, "getUpdates", timeout=0) == {
        "ok": False,
        "error_code": 409,
        "description": CONFLICT_WEBHOOK,
    }
    assert (await call(api, token, "setWebhook", url=URL))["description"] == (
        "Webhook is already set"
    )
    assert (await call(api, token, "deleteWebhook"))["description"] == "Webhook was deleted"
    assert (await call(api, token, "deleteWebhook"))["description"] == "Webhook is already deleted"
    assert (await call(api, token, "getUpdates", timeout=0))["ok"] is True


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"url": "ftp://example.com/hook"}, "Bad Request: invalid webhook URL specified"),
        ({"url": "https://"}, "Bad Request: invalid webhook URL specified"),
        ({"url": "https://example.com:99999/x"}, "Bad Request: invalid webhook URL specified"),
        (
            {"url": "http://example.com/hook"},
            "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
        ),
        (
            {"url": "https://example.com:8080/hook"},
            "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
        ),
        ({"url": URL, "secret_token": "x" * 257}, "Bad Request: secret token is too long"),
        (
            {"url": URL, "secret_token": "no spaces"},
            "Bad Request: secret token contains unallowed characters",
        ),
        (
            {"url": URL, "secret_token": "ünïcode"},
            "Bad Request: secret token contains unallowed characters",
        ),
        (
            {"url": URL, "max_connections": "many"},
            'Bad Request: field "max_connections" must be a valid Number',
        ),
        (
            {"url": URL, "ip_address": "300.1.1.1"},
            "Bad Request: bad webhook: invalid IP address specified",
        ),
        (
            {"url": URL, "allowed_updates": "[not json"},
            "Bad Request: can't parse allowed_updates JSON array",
        ),
        ({"url": URL, "allowed_updates": 5}, "Bad Request: allowed_updates must be an Array"),
    ],
)
async def test_set_webhook_refuses_what_telegram_refuses(
    api: SimulatedBotApi, token: str, params: dict[str, Any], description: str
) -> None:
    assert await call(api, token, "setWebhook", **params) == {
        "ok": False,
        "error_code": 400,
        "description": description,
    }
    assert (await info(api, token))["url"] == ""


@pytest.mark.parametrize(
    ("params", "shown"),
    [
        ({"url": "https://bots.example.com/tg/1"}, {"max_connections": 40}),
        (
            {"url": "https://bots.example.com:8443/tg/1", "max_connections": 0},
            {"max_connections": 1},
        ),
        ({"url": URL, "max_connections": 500}, {"max_connections": 100}),
        ({"url": URL, "max_connections": "7", "secret_token": "a" * 256}, {"max_connections": 7}),
        ({"url": URL, "ip_address": "10.0.0.7"}, {"ip_address": "10.0.0.7"}),
        # Text is no uploaded file: the Bot API reads a certificate only from an upload
        # (tests/actors/webhook/test_certificate.py uploads one).
        (
            {"url": URL, "certificate": "-----BEGIN CERTIFICATE-----"},
            {"has_custom_certificate": False},
        ),
        ({"url": URL, "secret_token": "A-z_0-9"}, {"url": URL}),
        ({"url": "http://localhost:5000/x"}, {"ip_address": "127.0.0.1"}),
    ],
)
async def test_set_webhook_accepts_and_get_webhook_info_shows_it(
    api: SimulatedBotApi, token: str, params: dict[str, Any], shown: dict[str, Any]
) -> None:
    assert (await call(api, token, "setWebhook", **params))["ok"] is True
    result = await info(api, token)
    assert result["url"] == params["url"]
    for key, value in shown.items():
        assert result[key] == value


async def test_get_webhook_info_has_telegrams_fields_and_no_absent_ones(
    api: SimulatedBotApi, token: str
) -> None:
    api.send_user_message(token, 777, "waiting")
    assert await info(api, token) == {
        "url": "",
        "has_custom_certificate": False,
        "pending_update_count": 1,
    }
    await call(
        api, token, "setWebhook", url=URL, allowed_updates=json.dumps(["message", "chat_member"])
    )
    assert await info(api, token) == {
        "url": URL,
        "has_custom_certificate": False,
        "pending_update_count": 1,
        "max_connections": 40,
        "ip_address": "127.0.0.1",
        "allowed_updates": ["message", "chat_member"],
    }
    # allowed_updates is the bot's kept setting: a type left out is never queued.
    api.send_update(token, payloads.callback_query())
    assert (await info(api, token))["pending_update_count"] == 1


async def test_an_empty_url_removes_the_webhook(api: SimulatedBotApi, token: str) -> None:
    await call(api, token, "setWebhook", url=URL)
    assert (await call(api, token, "setWebhook", url=""))["description"] == "Webhook was deleted"
    assert (await info(api, token))["url"] == ""


async def test_queue_keys_follow_telegram() -> None:
    api = SimulatedBotApi(rng=random.Random(1))
    secret = SimulatedBotApi.make_token(9, random.Random(2))
    bot = api.add_bot(secret)
    api.set_allowed_updates(
        secret, ["chat_member", "chat_join_request", "message", "callback_query"]
    )
    api.send_update(secret, payloads.chat_member(user_id=222))
    api.send_update(secret, payloads.chat_join_request(user_id=222))
    api.send_update(secret, payloads.group_message(chat_id=-4001, user_id=222))
    api.send_update(secret, payloads.callback_query(user_id=111))
    api.send_update(secret, payloads.poll())  # filtered out: not allowed
    member, join, message, query = (queue_key(u) for u in bot.pending)
    assert member == join == ("member", 222)
    assert message == ("chat", -4001)
    assert query == ("callback", 111)


def test_the_retry_schedule_doubles_up_to_a_random_60_to_120_seconds() -> None:
    rng = random.Random(3)
    delay, waits = 1, []
    for fails in range(12):
        delay, wait = next_retry(delay, fails, 0, rng)
        waits.append(wait)
    assert waits[:7] == [0, 2, 4, 8, 16, 32, 64]
    assert all(60 <= w <= 120 for w in waits[7:])
    assert next_retry(8, 3, 7200, rng) == (8, 3600)  # Retry-After replaces the wait, capped


# -- pushing ----------------------------------------------------------------------------------


async def test_each_update_is_posted_as_json_with_the_secret_header(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = Receiver()
    api.send_user_message(token, 777, "before the webhook")
    await call(api, token, "setWebhook", url=URL, secret_token="s3cr3t-_X")
    async with pushing(api, receiver):
        api.send_update(token, payloads.callback_query(chat_id=777, user_id=777))
        await trio.sleep(1)
    # Two queues (a chat, a user's queries): delivered in parallel, in either order.
    first, second = sorted(receiver.deliveries, key=lambda d: "message" not in d.update)
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-telegram-bot-api-secret-token"] == "s3cr3t-_X"
    assert first.update["message"]["text"] == "before the webhook"
    assert (
        second.update["callback_query"]["data"]
        == payloads.callback_query()["callback_query"]["data"]
    )
    assert (await info(api, token))["pending_update_count"] == 0
    report = api.report().bots[0]
    assert report.updates_confirmed == 2 and report.updates_pending == 0


async def test_no_secret_no_header(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = Receiver()
    await call(api, token, "setWebhook", url=URL)
    async with pushing(api, receiver):
        api.send_user_message(token, 777, "hi")
        await trio.sleep(1)
    assert "x-telegram-bot-api-secret-token" not in receiver.deliveries[0].headers


async def test_a_chats_order_holds_while_chats_are_delivered_in_parallel(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow(delivery: Delivery) -> Answer:
        # Each chat's answers take a different time, so chats overtake each other.
        chat = delivery.update["message"]["chat"]["id"]
        await trio.sleep(1 + chat % 7)
        return 200, {}

    receiver = Receiver(answer=slow)
    await call(api, token, "setWebhook", url=URL, max_connections=5)
    chats = range(1001, 1013)  # 12 chats, more than max_connections
    sent: dict[int, list[int]] = {chat: [] for chat in chats}
    for n in range(4):
        for chat in chats:
            sent[chat].append(api.send_user_message(token, chat, f"m{n}"))
    async with pushing(api, receiver):
        await trio.sleep(600)
    assert receiver.max_in_flight == 5
    for chat in chats:
        got = [
            d.update_id for d in receiver.deliveries if d.update["message"]["chat"]["id"] == chat
        ]
        assert got == sent[chat]
    # A chat's next update is sent only after its previous one was answered.
    by_chat: dict[int, list[float]] = {}
    for d in receiver.deliveries:
        by_chat.setdefault(d.update["message"]["chat"]["id"], []).append(d.time)
    for chat, times in by_chat.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= 1 + chat % 7 for g in gaps)
    report = api.report()
    assert report.bots[0].out_of_order == 0 and report.bots[0].updates_pending == 0


async def test_a_503_is_retried_on_the_doubling_schedule_and_kept_as_the_last_error(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    async def unavailable(delivery: Delivery) -> Answer:
        if trio.current_time() < 60:
            return 503, {}
        return 200, {}

    receiver = Receiver(answer=unavailable)
    await call(api, token, "setWebhook", url=URL)
    update_id = api.send_user_message(token, 777, "retry me")
    async with pushing(api, receiver):
        await trio.sleep(10)
        shown = await info(api, token)
        assert shown["pending_update_count"] == 1
        assert (
            shown["last_error_message"]
            == "Wrong response from the webhook: 503 Service Unavailable"
        )
        assert shown["last_error_date"] == int(SIM_EPOCH) + 6
        await trio.sleep(200)
    assert [d.time for d in receiver.deliveries] == [0, 0, 2, 6, 14, 30, 62]
    assert set(receiver.ids()) == {update_id}
    assert (await info(api, token))["pending_update_count"] == 0
    # The other queues are not held up by a failing one.


async def test_a_failing_chat_does_not_hold_up_the_others(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    async def refuse_one_chat(delivery: Delivery) -> Answer:
        chat = delivery.update["message"]["chat"]["id"]
        return (500, {}) if chat == 1 else (200, {})

    receiver = Receiver(answer=refuse_one_chat)
    await call(api, token, "setWebhook", url=URL)
    api.send_user_message(token, 1, "stuck")
    api.send_user_message(token, 1, "behind it")
    api.send_user_message(token, 2, "free")
    async with pushing(api, receiver):
        await trio.sleep(30)
    texts = [d.update["message"]["text"] for d in receiver.deliveries]
    assert "free" in texts and "behind it" not in texts
    assert (await info(api, token))["pending_update_count"] == 2


async def test_retry_after_of_a_429_is_honoured(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    answers = iter([(429, {"Retry-After": "37"}), (429, {"Retry-After": "9999"}), (200, {})])

    async def busy(delivery: Delivery) -> Answer:
        return next(answers)

    receiver = Receiver(answer=busy)
    await call(api, token, "setWebhook", url=URL)
    api.send_user_message(token, 777, "later")
    async with pushing(api, receiver):
        await trio.sleep(5000)
    assert [d.time for d in receiver.deliveries] == [0, 37, 37 + 3600]


async def test_a_connection_error_is_kept_as_connection_refused(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    async def refuse(delivery: Delivery) -> Answer:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    receiver = Receiver(answer=refuse)
    await call(api, token, "setWebhook", url=URL)
    api.send_user_message(token, 777, "nobody home")
    async with pushing(api, receiver):
        await trio.sleep(3)
    shown = await info(api, token)
    assert shown["last_error_message"] == "Connection refused"
    assert shown["pending_update_count"] == 1
    assert len(receiver.deliveries) == 3  # at 0, 0 and 2


async def test_an_update_expires_after_24_hours_of_failures(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = Receiver(answer=_always(503))
    await call(api, token, "setWebhook", url=URL)
    api.send_user_message(token, 777, "never delivered")
    async with pushing(api, receiver):
        await trio.sleep(86_400 - 200)
        assert (await info(api, token))["pending_update_count"] == 1
        await trio.sleep(400)
        assert (await info(api, token))["pending_update_count"] == 0
        tries = len(receiver.deliveries)
        await trio.sleep(1000)
    assert len(receiver.deliveries) == tries
    assert receiver.deliveries[-1].time <= 86_400
    statistics = api.statistics().webhooks
    assert statistics is not None and statistics.expired == 1 and statistics.deliveries == 0


async def test_410_for_23_hours_removes_the_webhook_and_keeps_the_updates(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = Receiver(answer=_always(410))
    await call(api, token, "setWebhook", url=URL)
    api.send_user_message(token, 777, "gone")
    async with pushing(api, receiver):
        await trio.sleep(23 * 3600 - 200)
        assert (await info(api, token))["url"] == URL
        await trio.sleep(400)
        assert (await info(api, token))["url"] == ""
    body = await call(api, token, "getUpdates", timeout=0)
    assert [u["message"]["text"] for u in body["result"]] == ["gone"]


async def test_delete_webhook_keeps_pending_updates_for_get_updates_unless_dropped(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = Receiver(answer=_always(503))
    await call(api, token, "setWebhook", url=URL)
    api.send_user_message(token, 777, "one")
    api.send_user_message(token, 778, "two")
    async with pushing(api, receiver):
        await trio.sleep(10)
        await call(api, token, "deleteWebhook")
        tries = len(receiver.deliveries)
        await trio.sleep(100)
        assert len(receiver.deliveries) == tries  # nothing pushed once deleted
    body = await call(api, token, "getUpdates", timeout=0)
    assert [u["message"]["text"] for u in body["result"]] == ["one", "two"]
    await call(api, token, "setWebhook", url=URL)
    await call(api, token, "deleteWebhook", drop_pending_updates=True)
    assert (await call(api, token, "getUpdates", timeout=0))["result"] == []


async def test_set_webhook_with_drop_pending_updates_pushes_only_new_ones(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = Receiver()
    api.send_user_message(token, 777, "old")
    await call(api, token, "setWebhook", url=URL, drop_pending_updates=True)
    async with pushing(api, receiver):
        api.send_user_message(token, 777, "new")
        await trio.sleep(1)
    assert [d.update["message"]["text"] for d in receiver.deliveries] == ["new"]


async def test_nothing_is_pushed_during_an_outage(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = Receiver()
    await call(api, token, "setWebhook", url=URL)
    api.outage(until=50)
    api.send_user_message(token, 777, "after the outage")
    async with pushing(api, receiver):
        await trio.sleep(100)
    assert [d.time for d in receiver.deliveries] == [50]


async def test_the_report_counts_webhook_deliveries_like_polled_ones(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A receiver that answers each message through sendMessage, as a bot would."""

    async def echo(delivery: Delivery) -> Answer:
        message = delivery.update["message"]
        body = await call(
            api, token, "sendMessage", chat_id=message["chat"]["id"], text=message["text"]
        )
        assert body["ok"] is True
        return 200, {}

    receiver = Receiver(answer=echo)
    await call(api, token, "setWebhook", url=URL)
    api.add_users(token, chats=5, rate=1.0, count=4)
    async with pushing(api, receiver), trio.open_nursery() as nursery:
        nursery.start_soon(api.run)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    report = api.report()
    assert report.bots[0].user_messages == 20
    assert report.bots[0].answered == 20
    assert report.bots[0].duplicates == 0 and report.bots[0].out_of_order == 0


def _always(status: int) -> Callable[[Delivery], Awaitable[Answer]]:
    async def answer(delivery: Delivery) -> Answer:
        return status, {}

    return answer


# -- over real HTTP ---------------------------------------------------------------------------

BOUND = 30  # a safety bound for real sockets, not an assertion about speed


class CountingRefusals(httpx.AsyncHTTPTransport):
    """A real transport that sets ``refused`` at the ``after``-th refused connection."""

    def __init__(self, refused: trio.Event, *, after: int) -> None:
        super().__init__()
        self._refused = refused
        self._left = after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectError:
            self._left -= 1
            if self._left == 0:
                self._refused.set()
            raise


async def test_webhooks_over_real_http_on_127_0_0_1(api: SimulatedBotApi, token: str) -> None:
    """The bot registers through the real client over serve_sim; the pusher POSTs to a
    Hypercorn receiver; a closed port shows as Connection refused."""
    done = trio.Event()

    async def count(delivery: Delivery) -> Answer:
        if len(receiver.deliveries) == 3:
            done.set()
        return 200, {}

    receiver = Receiver(answer=count)
    refused = trio.Event()
    transport = CountingRefusals(refused, after=2)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            sim_url = await nursery.start(partial(serve_sim, api))
            binds = await nursery.start(partial(serve, cast(ASGIFramework, receiver), config))
            hook_url = f"{binds[0]}/tg/4242"
            telegram = TelegramConfig(api_base=sim_url)
            async with (
                make_http_client(ssl_context=shared_ssl_context(), telegram=telegram) as http,
                httpx.AsyncClient(transport=transport) as pusher,
            ):
                client = BotApiClient(http, token=BotToken(token), telegram=telegram)
                assert await client.call(
                    "setWebhook", {"url": hook_url, "secret_token": "sEcReT_1"}
                )
                await nursery.start(api.push_webhooks, pusher)
                sent = [api.send_user_message(token, 9, f"m{n}") for n in range(3)]
                await done.wait()
                assert receiver.ids() == sent
                assert {
                    d.headers["x-telegram-bot-api-secret-token"] for d in receiver.deliveries
                } == {"sEcReT_1"}
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    closed_port = probe.getsockname()[1]
                await client.call("setWebhook", {"url": f"http://127.0.0.1:{closed_port}/tg"})
                api.send_user_message(token, 9, "nobody listens")
                # The second try starts only after the first one's failure was noted.
                await refused.wait()
                info = await client.call("getWebhookInfo", {})
                assert info["last_error_message"] == "Connection refused"
                assert info["pending_update_count"] == 1
            nursery.cancel_scope.cancel()
