"""The simulated Bot API's Telegram semantics, seen through the real client, on a MockClock."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from actors.botapi import (
    BotApiClient,
    ErrorCategory,
    TelegramError,
    TransportError,
    make_http_client,
)
from actors.secrets import BotToken
from actors.simulator import SIM_EPOCH, SimulatedBotApi, SimulatedTransport
from tests.actors.conftest import BOT_ID, TELEGRAM


async def test_an_idle_long_poll_answers_empty_exactly_at_its_timeout(
    client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    updates = await client.get_updates(offset=None, timeout=30)
    assert updates == []
    assert trio.current_time() == 30


async def test_a_long_poll_returns_as_soon_as_an_update_arrives(
    api: SimulatedBotApi, token: str, client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    async def user() -> None:
        await trio.sleep(5)
        api.send_user_message(token, 777, "hello")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(user)
        updates = await client.get_updates(offset=None, timeout=30)
    assert trio.current_time() == 5
    assert [u["message"]["text"] for u in updates] == ["hello"]


async def test_updates_have_telegrams_shape(
    api: SimulatedBotApi, token: str, client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.sleep(12)
    update_id = api.send_user_message(token, 777, "hi there")
    api.send_user_message(token, -100500, "in a group", chat_type="group", user_id=31)
    private, group = await client.get_updates(offset=None, timeout=0)
    assert private == {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "from": {"id": 777, "is_bot": False, "first_name": "User777", "language_code": "en"},
            "chat": {"id": 777, "type": "private", "first_name": "User777"},
            "date": int(SIM_EPOCH) + 12,
            "text": "hi there",
        },
    }
    assert group["update_id"] == update_id + 1
    assert group["message"]["chat"] == {"id": -100500, "type": "group", "title": "Group 100500"}
    assert group["message"]["from"]["id"] == 31


async def test_an_offset_confirms_every_update_below_it_and_only_those(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    ids = [api.send_user_message(token, 777, f"m{i}") for i in range(3)]
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]

    # Without an offset nothing is confirmed: the same updates come again.
    first = await client.get_updates(offset=None, timeout=0)
    again = await client.get_updates(offset=None, timeout=0)
    assert [u["update_id"] for u in first] == [u["update_id"] for u in again] == ids

    rest = await client.get_updates(offset=ids[1], timeout=0)
    assert [u["update_id"] for u in rest] == ids[1:]
    assert api.bot(token).pending_updates == 2

    assert await client.get_updates(offset=ids[2] + 1, timeout=0) == []
    report = api.report().bot(BOT_ID)
    assert (report.updates_confirmed, report.updates_pending) == (3, 0)


async def test_limit_and_negative_offset_follow_telegram(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    ids = [api.send_user_message(token, 777, f"m{i}") for i in range(5)]
    assert [u["update_id"] for u in await client.get_updates(offset=None, timeout=0, limit=2)] == (
        ids[:2]
    )
    # A negative offset keeps only the last -offset updates and forgets the others.
    assert [u["update_id"] for u in await client.get_updates(offset=-2, timeout=0)] == ids[3:]
    assert api.bot(token).pending_updates == 2


async def test_update_ids_increase_per_bot(api: SimulatedBotApi, token: str) -> None:
    other = SimulatedBotApi.make_token(999, random.Random(2))
    api.add_bot(other)
    mine = [api.send_user_message(token, 1, "a"), api.send_user_message(token, 1, "b")]
    theirs = [api.send_user_message(other, 1, "a"), api.send_user_message(other, 1, "b")]
    assert mine[1] == mine[0] + 1 and theirs[1] == theirs[0] + 1
    status, body = await api.handle(other, "getUpdates", {"timeout": 0})
    assert status == 200
    assert [u["update_id"] for u in body["result"]] == theirs


async def test_a_second_concurrent_poll_gets_409_conflict(
    client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    first: list[object] = []

    async def poll() -> None:
        first.append(await client.get_updates(offset=None, timeout=30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(TelegramError) as caught:
            await client.get_updates(offset=None, timeout=30)
        assert trio.current_time() == 0
    assert caught.value.error_code == 409
    assert caught.value.category is ErrorCategory.TRANSIENT_NETWORK
    assert "terminated by other getUpdates request" in caught.value.description
    # The first poll was not disturbed.
    assert first == [[]]
    assert trio.current_time() == 30


async def test_a_poll_abandoned_by_its_client_frees_the_poll_slot(
    client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    # A read timeout shorter than the long poll: the client gives up first.
    with pytest.raises(TransportError) as caught:
        await client.call("getUpdates", {"timeout": 30}, timeout=5)
    assert caught.value.request_sent is True
    assert trio.current_time() == 5
    assert await client.get_updates(offset=None, timeout=1) == []
    assert trio.current_time() == 6


async def test_a_revoked_token_gets_401_even_on_a_waiting_poll(
    api: SimulatedBotApi, token: str, client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    assert (await client.get_me())["id"] == BOT_ID

    async def revoke_later() -> None:
        await trio.sleep(3)
        api.revoke(token)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(revoke_later)
        with pytest.raises(TelegramError) as caught:
            await client.get_updates(offset=None, timeout=30)
    assert trio.current_time() == 3
    assert (caught.value.error_code, caught.value.description) == (401, "Unauthorized")
    assert caught.value.category is ErrorCategory.PERMANENT
    for call in (client.get_me(), client.send_message(1, "x")):
        with pytest.raises(TelegramError) as caught:
            await call
        assert caught.value.error_code == 401


async def test_get_me_describes_the_bot_and_unknown_tokens_are_unauthorized(
    api: SimulatedBotApi, client: BotApiClient
) -> None:
    me = await client.get_me()
    assert me["id"] == BOT_ID and me["is_bot"] is True
    assert me["username"] == f"sim{BOT_ID}_bot"
    stranger = SimulatedBotApi.make_token(42, random.Random(3))
    assert await api.handle(stranger, "getMe", {}) == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )


async def test_an_unknown_method_is_404_not_found(api: SimulatedBotApi, token: str) -> None:
    assert await api.handle(token, "sendTelepathy", {}) == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found"},
    )
    # Method names are case-insensitive, as Telegram's are.
    status, _ = await api.handle(token, "GETME", {})
    assert status == 200


async def test_send_message_delivers_only_to_chats_that_wrote_to_the_bot(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_user_message(token, 777, "hi")
    sent = await client.send_message(777, "hello back")
    assert sent["chat"] == {"id": 777, "type": "private", "first_name": "User777"}
    assert sent["text"] == "hello back" and sent["from"]["id"] == BOT_ID
    assert [m.text for m in api.bot(token).replies] == ["hello back"]

    failures = {}
    api.block(token, 777)
    for chat_id, text in ((778, "x"), ("@nobody", "x"), (777, "x"), (777, "")):
        with pytest.raises(TelegramError) as caught:
            await client.send_message(chat_id, text)
        failures[(chat_id, text)] = (caught.value.error_code, caught.value.description)
        assert caught.value.category is ErrorCategory.CHAT
    assert failures == {
        (778, "x"): (400, "Bad Request: chat not found"),
        ("@nobody", "x"): (400, "Bad Request: chat not found"),
        (777, "x"): (403, "Forbidden: bot was blocked by the user"),
        (777, ""): (400, "Bad Request: message text is empty"),
    }
    assert len(api.bot(token).replies) == 1


async def test_allowed_updates_is_kept_per_bot_and_filters_updates_created_after_it(
    api: SimulatedBotApi, token: str, client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    # As Telegram: the setting does not affect updates created before the call.
    api.send_user_message(token, 777, "before")
    first = await client.get_updates(offset=None, timeout=4, allowed_updates=["callback_query"])
    assert [u["message"]["text"] for u in first] == ["before"]
    api.send_user_message(token, 777, "after")
    # No allowed_updates now: the last setting stays in force, so the message never comes.
    offset = first[0]["update_id"] + 1
    assert await client.get_updates(offset=offset, timeout=4) == []
    assert trio.current_time() == 4
    assert api.statistics().filtered_updates == 1
    # An empty list restores Telegram's default.
    assert await client.get_updates(offset=offset, timeout=0, allowed_updates=[]) == []
    api.send_user_message(token, 777, "again")
    assert len(await client.get_updates(offset=offset, timeout=0)) == 1


async def test_delete_webhook_can_drop_pending_updates(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_user_message(token, 777, "old")
    assert await client.call("deleteWebhook") is True
    assert (await client.call("getWebhookInfo"))["pending_update_count"] == 1
    assert await client.call("deleteWebhook", {"drop_pending_updates": True}) is True
    assert await client.get_updates(offset=None, timeout=0) == []


async def test_bad_parameters_are_400(api: SimulatedBotApi, token: str) -> None:
    status, body = await api.handle(token, "getUpdates", {"offset": "soon"})
    assert status == 400
    assert body["description"] == 'Bad Request: field "offset" must be a valid Number'


async def test_many_bots_long_poll_at_once_each_woken_by_its_own_update(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = SimulatedBotApi(rng=random.Random(5))
    rng = random.Random(6)
    tokens = [SimulatedBotApi.make_token(1000 + i, rng) for i in range(200)]
    for secret in tokens:
        api.add_bot(secret)
    woke: dict[int, float] = {}

    async def poll(http_client: BotApiClient, index: int) -> None:
        updates = await http_client.get_updates(offset=None, timeout=50)
        assert [u["message"]["chat"]["id"] for u in updates] == [index]
        woke[index] = trio.current_time()

    async with (
        make_http_client(
            transport=SimulatedTransport(api), ssl_context=None, telegram=TELEGRAM
        ) as http,
        trio.open_nursery() as nursery,
    ):
        for i, secret in enumerate(tokens):
            nursery.start_soon(
                poll, BotApiClient(http, token=BotToken(secret), telegram=TELEGRAM), i
            )
        await trio.testing.wait_all_tasks_blocked()
        assert api.statistics().waiting_polls == 200
        for i, secret in enumerate(tokens):
            await trio.sleep(0.1)
            api.send_user_message(secret, i, "wake up")
    assert woke == {i: pytest.approx(0.1 * (i + 1)) for i in range(200)}
    assert api.statistics().waiting_polls == 0
