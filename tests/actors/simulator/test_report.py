"""Simulated users and the delivery report: answered once, duplicates, order, unanswered."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from actors.botapi import BotApiClient
from actors.simulator import SimulatedBotApi, tagged_text
from tests.actors.conftest import BOT_ID


async def reply(api: SimulatedBotApi, token: str, chat_id: int, text: str) -> None:
    status, body = await api.handle(token, "sendMessage", {"chat_id": chat_id, "text": text})
    assert status == 200, body


async def test_each_message_answered_once_in_order_is_a_clean_report(
    api: SimulatedBotApi, token: str
) -> None:
    for text in ("first", "second"):
        api.send_user_message(token, 1, text)
    api.send_user_message(token, 2, "other chat")
    await reply(api, token, 2, "Re: other chat")
    await reply(api, token, 1, "you said: first")
    await reply(api, token, 1, "you said: second")
    report = api.report().bot(BOT_ID)
    assert (report.user_messages, report.replies, report.answered) == (3, 3, 3)
    assert (report.duplicates, report.out_of_order, report.unanswered) == (0, 0, ())
    assert report.all_answered_once_in_order


async def test_a_message_answered_twice_is_one_duplicate(api: SimulatedBotApi, token: str) -> None:
    api.send_user_message(token, 1, "ping")
    for _ in range(3):
        await reply(api, token, 1, "ping")
    report = api.report().bot(BOT_ID)
    assert (report.answered, report.duplicates, report.duplicate_replies) == (1, 1, 2)
    assert not report.all_answered_once_in_order


async def test_answers_out_of_order_within_a_chat_are_counted(
    api: SimulatedBotApi, token: str
) -> None:
    for text in ("a1", "a2", "a3"):
        api.send_user_message(token, 1, text)
    for text in ("b1", "b2"):
        api.send_user_message(token, 2, text)
    # Chat 1 answered 3, 1, 2: two first answers came after a later message's.
    for text in ("a3", "a1", "a2"):
        await reply(api, token, 1, text)
    # Chats interleaved with each other, each in order: not out of order.
    await reply(api, token, 2, "b1")
    report = api.report().bot(BOT_ID)
    assert report.out_of_order == 2
    assert report.answered == 4


async def test_unanswered_messages_are_listed_by_chat_and_message_id(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_user_message(token, 1, "one")
    api.send_user_message(token, 2, "two")
    api.send_user_message(token, 1, "three")
    updates = await client.get_updates(offset=None, timeout=0)
    ids = {
        u["message"]["text"]: (u["message"]["chat"]["id"], u["message"]["message_id"])
        for u in updates
    }
    await reply(api, token, 1, "three")
    report = api.report()
    assert sorted(report.bot(BOT_ID).unanswered) == sorted([ids["one"], ids["two"]])
    assert report.unanswered == 2
    assert report.summary().startswith(
        "1 bots: 3 user messages, 1 replies; 1 answered, 2 unanswered"
    )


async def test_a_reply_that_answers_nothing_is_untracked(api: SimulatedBotApi, token: str) -> None:
    api.send_user_message(token, 1, "hello")
    api.send_user_message(token, 2, "hi")
    await reply(api, token, 1, "Welcome! Type /help")
    # A tag of another chat does not answer this chat's message.
    await reply(api, token, 2, tagged_text(1, 1))
    report = api.report().bot(BOT_ID)
    assert (report.replies, report.answered, report.untracked_replies) == (2, 0, 2)


async def test_same_text_twice_is_answered_earliest_first(api: SimulatedBotApi, token: str) -> None:
    api.send_user_message(token, 1, "again")
    api.send_user_message(token, 1, "again")
    await reply(api, token, 1, "again")
    assert api.report().bot(BOT_ID).answered == 1
    await reply(api, token, 1, "again")
    report = api.report().bot(BOT_ID)
    assert (report.answered, report.duplicates, report.out_of_order) == (2, 0, 0)
    await reply(api, token, 1, "again")
    assert api.report().bot(BOT_ID).duplicates == 1


async def echo_bot(client: BotApiClient, *, until: float) -> None:
    """The smallest correct bot: poll, answer each text in order, confirm by offset."""
    offset: int | None = None
    while trio.current_time() < until:
        updates = await client.get_updates(offset=offset, timeout=5)
        for update in updates:
            message: dict[str, Any] = update["message"]
            await client.send_message(message["chat"]["id"], f"echo: {message['text']}")
            offset = update["update_id"] + 1


async def test_simulated_users_send_count_tagged_messages_and_an_echo_bot_answers_them(
    api: SimulatedBotApi, token: str, client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    api.add_users(token, chats=4, rate=0.5, group_share=0.5, count=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(api.run)
        await echo_bot(client, until=300)
        nursery.cancel_scope.cancel()
    report = api.report().bot(BOT_ID)
    assert report.user_messages == 12
    assert report.all_answered_once_in_order
    assert report.untracked_replies == 0
    chats = api.bot(token).log.chats
    assert sorted(log.chat_type for log in chats.values()) == ["private"] * 2 + ["supergroup"] * 2
    assert all((chat_id < 0) == (log.chat_type == "supergroup") for chat_id, log in chats.items())
    texts = [c.params["text"] for c in api.calls if c.method == "sendMessage"]
    some_chat = next(iter(chats))
    assert [t for t in texts if f" c{some_chat}]" in t] == [
        f"echo: {tagged_text(seq, some_chat)}" for seq in (1, 2, 3)
    ]


async def test_simulated_users_write_at_their_rate(autojump_clock: trio.testing.MockClock) -> None:
    api = SimulatedBotApi(rng=random.Random(3))
    secret = SimulatedBotApi.make_token(77, random.Random(3))
    api.add_bot(secret)
    api.add_users(secret, chats=5, rate=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(api.run)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    # 5 chats x 2 messages a second x 100 s, as a Poisson process.
    assert api.statistics().user_messages == pytest.approx(1000, rel=0.1)
    assert api.bot(secret).pending_updates == api.statistics().user_messages


async def test_users_added_while_running_start_writing(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    arrivals: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(api.run)
        await trio.sleep(10)
        api.add_users(token, chats=1, rate=1.0, count=2)
        while len(arrivals) < 2:
            _, body = await api.handle(token, "getUpdates", {"timeout": 50})
            arrivals.extend(trio.current_time() for _ in body["result"])
            if body["result"]:
                await api.handle(
                    token, "getUpdates", {"offset": body["result"][-1]["update_id"] + 1}
                )
        nursery.cancel_scope.cancel()
    assert 10 < arrivals[0] <= arrivals[1]
    assert api.statistics().simulated_chats == 1


def test_users_added_before_the_trio_run_start_with_it() -> None:
    api = SimulatedBotApi(rng=random.Random(9))
    secret = SimulatedBotApi.make_token(5, random.Random(9))
    api.add_bot(secret)
    api.add_users(secret, chats=3, rate=1.0, count=1)

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            await nursery.start(api.run)
            await trio.sleep(60)
            nursery.cancel_scope.cancel()
        return api.statistics().user_messages

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 3


async def test_ten_thousand_chats_share_one_task(autojump_clock: trio.testing.MockClock) -> None:
    api = SimulatedBotApi(rng=random.Random(4))
    rng = random.Random(4)
    tokens = [SimulatedBotApi.make_token(10_000 + i, rng) for i in range(2_000)]
    for secret in tokens:
        api.add_bot(secret)
        api.add_users(secret, chats=5, rate=0.1, count=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(api.run)
        await trio.testing.wait_all_tasks_blocked()
        # The users are one task, not one per chat.
        assert len(nursery.child_tasks) == 1
        await trio.sleep(600)
        nursery.cancel_scope.cancel()
    stats = api.statistics()
    assert stats.simulated_chats == 10_000
    # Two messages per chat, each chat done by 600 s: 60 mean intervals (P < e^-50 otherwise).
    assert stats.user_messages == 20_000


def test_add_users_checks_its_arguments(api: SimulatedBotApi, token: str) -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        api.add_users(token, chats=1, rate=0)
    with pytest.raises(ValueError, match="group_share must be from 0 to 1"):
        api.add_users(token, chats=1, rate=1, group_share=2)
    with pytest.raises(ValueError, match="chats must be a whole number"):
        api.add_users(token, chats=-1, rate=1)
    with pytest.raises(LookupError, match=f"no simulated bot has the token {BOT_ID + 1}:…"):
        api.add_users(SimulatedBotApi.make_token(BOT_ID + 1, random.Random(1)), chats=1, rate=1)
