"""The simulator speaks real Telegram: every kind of update, where replies land, Telegram's own
errors, allowed_updates; seen through the real client where it matters."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors.botapi import BotApiClient, TelegramError
from actors.simulator import DEFAULT_ALLOWED_UPDATES, UPDATE_TYPES, SimulatedBotApi
from tests import payloads
from tests.actors.conftest import BOT_ID

FORUM = -1001234567890


async def updates(api: SimulatedBotApi, token: str, **params: Any) -> list[dict[str, Any]]:
    status, body = await api.handle(token, "getUpdates", {"timeout": 0, **params})
    assert status == 200, body
    result: list[dict[str, Any]] = body["result"]
    return result


async def call(api: SimulatedBotApi, token: str, method: str, **params: Any) -> dict[str, Any]:
    status, body = await api.handle(token, method, params)
    assert status == (200 if body["ok"] else body["error_code"])
    return body


async def test_every_realistic_update_can_be_injected_and_comes_back_as_sent(
    api: SimulatedBotApi, token: str
) -> None:
    api.set_allowed_updates(token, payloads.ALL_UPDATE_TYPES)
    ids = [api.send_update(token, update) for update in payloads.every_update()]
    got = await updates(api, token)
    assert [u["update_id"] for u in got] == ids == list(range(ids[0], ids[0] + len(ids)))
    for sent, received in zip(payloads.every_update(), got, strict=True):
        kind = next(k for k in sent if k != "update_id")
        assert received == {"update_id": received["update_id"], kind: sent[kind]}


async def test_a_bad_injected_update_is_refused_with_what_to_fix(
    api: SimulatedBotApi, token: str
) -> None:
    with pytest.raises(ValueError, match="exactly one update type"):
        api.send_update(token, {"update_id": 1, "message": {}, "edited_message": {}})


async def test_telegrams_default_leaves_out_member_and_reaction_updates(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_user_message(token, -4001, "hi", chat_type="group", user_id=222)
    api.send_member_update(token, -4001, user_id=333, chat_type="group")
    api.send_reaction(token, -4001, 1, user_id=222)
    api.send_reaction(token, -4001, 1, count=3)
    api.send_member_update(token, -4001, user_id=222, about_bot=True, chat_type="group")
    kinds = [next(k for k in u if k != "update_id") for u in await updates(api, token)]
    assert kinds == ["message", "my_chat_member"]
    assert api.statistics().filtered_updates == 3

    # Asked for once, then kept: later polls without allowed_updates still get them.
    wanted = ["message", "chat_member", "message_reaction", "message_reaction_count"]
    await client.get_updates(offset=None, timeout=0, allowed_updates=wanted)
    api.send_member_update(token, -4001, user_id=334, chat_type="group")
    api.send_reaction(token, -4001, 1, user_id=222)
    api.send_reaction(token, -4001, 1, count=4)
    api.send_member_update(token, -4001, user_id=222, about_bot=True, chat_type="group")
    got = await client.get_updates(offset=None, timeout=0)
    kinds = [next(k for k in u if k != "update_id") for u in got][2:]
    assert kinds == ["chat_member", "message_reaction", "message_reaction_count"]
    assert got[-1]["message_reaction_count"]["reactions"][0]["total_count"] == 4
    assert got[-2]["message_reaction"]["user"]["id"] == 222


async def test_a_forum_topic_message_and_a_reply_in_its_topic(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    thread = api.create_forum_topic(token, FORUM, "Support")
    api.send_user_message(token, FORUM, "question", message_thread_id=thread)
    created, asked = await client.get_updates(offset=None, timeout=0)
    assert created["message"]["forum_topic_created"]["name"] == "Support"
    message = asked["message"]
    assert (message["message_thread_id"], message["is_topic_message"]) == (thread, True)
    assert message["chat"]["is_forum"] is True

    sent = await client.send_message(FORUM, "answer: question", message_thread_id=thread)
    assert (sent["message_thread_id"], sent["is_topic_message"]) == (thread, True)
    assert api.bot(token).replies[-1].message_thread_id == thread
    report = api.report().bot(BOT_ID)
    assert (report.answered, report.misplaced) == (1, 0)

    with pytest.raises(TelegramError) as caught:
        await client.send_message(FORUM, "x", message_thread_id=thread + 1000)
    assert caught.value.description == "Bad Request: message thread not found"


async def test_an_answer_in_the_general_topic_counts_as_misplaced(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_update(token, payloads.forum_topic_message(chat_id=FORUM, thread_id=77))
    await client.send_message(FORUM, "answer to the question in a topic")
    report = api.report().bot(BOT_ID)
    assert (report.answered, report.misplaced) == (1, 1)
    assert api.bot(token).replies[-1].message_thread_id is None
    # The injected message made its topic known: answering there is allowed and in place.
    await client.send_message(FORUM, "question in a topic", message_thread_id=77)
    assert api.report().bot(BOT_ID).misplaced == 1


async def test_a_business_message_is_answered_only_through_its_connection(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    connection = api.add_business_connection(token, 444)
    api.send_business_message(token, connection, 555, "do you ship to Lisbon?")
    announced, asked = await client.get_updates(offset=None, timeout=0)
    assert announced["business_connection"]["id"] == connection
    assert asked["business_message"]["business_connection_id"] == connection

    # The customer never wrote to the bot itself.
    with pytest.raises(TelegramError) as caught:
        await client.send_message(555, "yes: do you ship to Lisbon?")
    assert caught.value.description == "Bad Request: chat not found"
    with pytest.raises(TelegramError) as caught:
        await client.send_message(555, "x", business_connection_id="bc-unknown")
    assert caught.value.description == "Bad Request: business connection not found"

    sent = await client.send_message(
        555, "yes: do you ship to Lisbon?", business_connection_id=connection
    )
    assert sent["business_connection_id"] == connection
    assert api.bot(token).replies[-1].business_connection_id == connection
    report = api.report().bot(BOT_ID)
    assert (report.answered, report.misplaced, report.unanswered) == (1, 0, ())


async def test_a_channel_direct_messages_chat_needs_its_topic(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    chat = -1005555555555
    api.send_update(token, payloads.channel_direct_message(chat_id=chat, topic_id=31))
    with pytest.raises(TelegramError) as caught:
        await client.send_message(chat, "answer: a question for the channel")
    assert caught.value.description == "Bad Request: direct messages topic must be specified"
    await client.send_message(
        chat, "answer: a question for the channel", direct_messages_topic_id=31
    )
    assert api.bot(token).replies[-1].direct_messages_topic_id == 31
    assert api.report().bot(BOT_ID).misplaced == 0


async def test_reply_parameters_must_name_a_message_of_the_chat(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_user_message(token, 777, "hi")
    (update,) = await client.get_updates(offset=None, timeout=0)
    message_id = update["message"]["message_id"]
    sent = await client.send_message(777, "hi back", reply_parameters={"message_id": message_id})
    assert sent["reply_to_message"]["message_id"] == message_id
    assert api.bot(token).replies[-1].reply_to_message_id == message_id
    with pytest.raises(TelegramError) as caught:
        await client.send_message(777, "x", reply_parameters={"message_id": 9999})
    assert caught.value.description == "Bad Request: message to be replied not found"
    await client.send_message(
        777, "x", reply_parameters={"message_id": 9999, "allow_sending_without_reply": True}
    )


async def test_a_button_press_waits_for_answer_callback_query(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_user_message(token, 777, "menu")
    keyboard = {"inline_keyboard": [[{"text": "A", "callback_data": "pick-a"}]]}
    menu = await client.send_message(777, "Pick one", reply_markup=keyboard)
    query_id = api.send_callback_query(token, 777)
    *_, update = await client.get_updates(offset=None, timeout=0)
    query = update["callback_query"]
    assert (query["id"], query["data"]) == (query_id, "pick-a")
    assert query["message"]["message_id"] == menu["message_id"]
    assert query["message"]["chat"]["id"] == 777 and query["from"]["id"] == 777
    report = api.report().bot(BOT_ID)
    assert (report.callback_queries, report.unanswered_callbacks) == (1, (query_id,))

    assert await client.call("answerCallbackQuery", {"callback_query_id": query_id}) is True
    report = api.report().bot(BOT_ID)
    assert (report.callbacks_answered, report.unanswered_callbacks) == (1, ())
    with pytest.raises(TelegramError) as caught:
        await client.call("answerCallbackQuery", {"callback_query_id": query_id})
    assert caught.value.error_code == 400 and "query is too old" in caught.value.description


async def test_an_injected_callback_query_can_be_answered(api: SimulatedBotApi, token: str) -> None:
    api.send_update(token, payloads.callback_query(chat_id=111))
    body = await call(api, token, "answerCallbackQuery", callback_query_id="4382bfdwdsb323b2d9")
    assert body == {"ok": True, "result": True}
    assert api.report().bot(BOT_ID).callbacks_answered == 1
    # The button was under the bot's message in chat 111: the bot can write there.
    assert (await call(api, token, "sendMessage", chat_id=111, text="you picked a"))["ok"]


async def test_edit_message_text_with_the_same_text_is_not_modified(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_user_message(token, 777, "hi")
    sent = await client.send_message(777, "draft")
    params = {"chat_id": 777, "message_id": sent["message_id"]}
    edited = await client.call("editMessageText", {**params, "text": "final"})
    assert edited["text"] == "final" and "edit_date" in edited
    with pytest.raises(TelegramError) as caught:
        await client.call("editMessageText", {**params, "text": "final"})
    assert caught.value.description == payloads.NOT_MODIFIED["description"]
    assert caught.value.error_code == 400
    body = await call(api, token, "editMessageText", chat_id=777, message_id=9999, text="x")
    assert body["description"] == "Bad Request: message to edit not found"


async def test_user_edits_and_channel_posts_have_telegrams_shape(
    api: SimulatedBotApi, token: str
) -> None:
    api.send_user_message(token, 777, "helo")
    (first,) = await updates(api, token)
    api.edit_user_message(token, 777, first["message"]["message_id"], "hello")
    api.send_channel_post(token, -1009876543210, "news")
    _, edit, post = await updates(api, token)
    assert edit["edited_message"]["text"] == "hello"
    assert edit["edited_message"]["edit_date"] >= edit["edited_message"]["date"]
    assert post["channel_post"]["chat"]["type"] == "channel"
    assert post["channel_post"]["sender_chat"] == post["channel_post"]["chat"]
    assert "from" not in post["channel_post"]


async def test_a_group_upgraded_mid_conversation_answers_400_with_the_new_chat(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    api.send_user_message(token, -4001, "before", chat_type="group", user_id=222)
    api.send_user_message(token, -4001, "in flight", chat_type="group", user_id=222)
    await client.send_message(-4001, "re: before")
    api.migrate_group(token, -4001, FORUM)
    got = await client.get_updates(offset=None, timeout=0)
    assert got[-2]["message"]["migrate_to_chat_id"] == FORUM
    assert got[-2]["message"]["chat"]["id"] == -4001
    assert got[-1]["message"]["migrate_from_chat_id"] == -4001
    assert got[-1]["message"]["chat"] == {
        "id": FORUM,
        "type": "supergroup",
        "title": "Group 1001234567890",
    }

    with pytest.raises(TelegramError) as caught:
        await client.send_message(-4001, "re: in flight")
    assert caught.value.error_code == 400
    assert caught.value.migrate_to_chat_id == FORUM
    status, body = await api.handle(token, "sendMessage", {"chat_id": -4001, "text": "x"})
    assert (status, body) == (400, payloads.migrated(FORUM))

    # Sent again to the new chat, it answers the old chat's message.
    await client.send_message(FORUM, "re: in flight")
    report = api.report().bot(BOT_ID)
    assert (report.answered, report.unanswered) == (2, ())


async def test_an_injected_migration_service_message_upgrades_the_group(
    api: SimulatedBotApi, token: str
) -> None:
    api.send_update(token, payloads.group_message(chat_id=-4001))
    api.send_update(token, payloads.migrate_to_supergroup(old_chat_id=-4001, new_chat_id=FORUM))
    status, body = await api.handle(token, "sendMessage", {"chat_id": -4001, "text": "hi all"})
    assert (status, body["parameters"]) == (400, {"migrate_to_chat_id": FORUM})
    status, _ = await api.handle(token, "sendMessage", {"chat_id": FORUM, "text": "hi all"})
    assert status == 200
    assert api.report().bot(BOT_ID).unanswered == ()


async def test_a_blocked_user_is_403_and_an_unknown_method_404(
    api: SimulatedBotApi, token: str
) -> None:
    api.send_user_message(token, 777, "hi")
    api.block(token, 777)
    assert await api.handle(token, "sendMessage", {"chat_id": 777, "text": "x"}) == (
        403,
        payloads.BLOCKED,
    )
    assert await api.handle(token, "sendMesage", {"chat_id": 777, "text": "x"}) == (
        404,
        payloads.NOT_FOUND,
    )


async def test_simulated_users_write_in_topics_edit_and_press_buttons(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    api.add_users(
        token,
        chats=4,
        rate=1.0,
        group_share=0.5,
        forum_share=1.0,
        edit_share=0.2,
        callback_share=0.2,
        count=40,
    )
    kinds: set[str] = set()
    topics: set[int] = set()
    offset = None

    async def bot() -> None:
        nonlocal offset
        while True:
            _, body = await api.handle(
                token, "getUpdates", {"timeout": 5, **({"offset": offset} if offset else {})}
            )
            for update in body["result"]:
                offset = update["update_id"] + 1
                kind, payload = next((k, v) for k, v in update.items() if k != "update_id")
                kinds.add(kind)
                if kind == "message":
                    params: dict[str, Any] = {
                        "chat_id": payload["chat"]["id"],
                        "text": payload["text"],
                    }
                    if payload.get("is_topic_message"):
                        topics.add(payload["message_thread_id"])
                        params["message_thread_id"] = payload["message_thread_id"]
                    await api.handle(token, "sendMessage", params)
                elif kind == "edited_message":
                    chat_id = payload["chat"]["id"]
                    await api.handle(
                        token, "sendMessage", {"chat_id": chat_id, "text": payload["text"]}
                    )
                elif kind == "callback_query":
                    await api.handle(
                        token, "answerCallbackQuery", {"callback_query_id": payload["id"]}
                    )

    async with trio.open_nursery() as nursery:
        await nursery.start(api.run)
        nursery.start_soon(bot)
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    assert kinds == {"message", "edited_message", "callback_query"}
    assert len(topics) == 4  # two forums, two topics each
    report = api.report().bot(BOT_ID)
    assert report.unanswered == () and report.unanswered_callbacks == ()
    assert report.callback_queries > 0 and report.edit_replies > 0
    assert (report.misplaced, report.duplicates, report.untracked_replies) == (0, 0, 0)
    assert report.user_messages + report.callback_queries + report.edit_replies == 160


async def test_simulated_users_follow_their_group_to_the_supergroup(
    api: SimulatedBotApi, token: str, autojump_clock: trio.testing.MockClock
) -> None:
    api.add_users(token, chats=1, rate=1.0, group_share=1.0, basic_group_share=1.0, count=20)
    (old,) = api.bot(token).log.chats
    assert api.bot(token).log.chats[old].chat_type == "group"
    async with trio.open_nursery() as nursery:
        await nursery.start(api.run)
        await trio.sleep(5)
        api.migrate_group(token, old, FORUM)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    got = await updates(api, token)
    texts = [u["message"] for u in got if "text" in u["message"]]
    assert {m["chat"]["id"] for m in texts} == {old, FORUM}
    # Every message after the upgrade is in the supergroup.
    chats = [m["chat"]["id"] for m in texts]
    assert chats == sorted(chats, key=lambda c: c == FORUM)
    log = api.bot(token).log
    assert len(log.chats[old].message_ids) + len(log.chats[FORUM].message_ids) == 20


async def test_the_simulator_knows_the_update_types_of_the_reference(api: SimulatedBotApi) -> None:
    assert UPDATE_TYPES == payloads.ALL_UPDATE_TYPES
    assert set(UPDATE_TYPES) - DEFAULT_ALLOWED_UPDATES == {
        "chat_member",
        "message_reaction",
        "message_reaction_count",
    }


async def test_parameters_sent_as_form_fields_are_understood(
    api: SimulatedBotApi, token: str
) -> None:
    # A form-encoded call carries every value as text, JSON objects as JSON text.
    thread = api.create_forum_topic(token, FORUM, "Support")
    api.send_user_message(token, FORUM, "q", message_thread_id=thread)
    keyboard = '{"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}'
    body = await call(
        api,
        token,
        "sendMessage",
        chat_id=str(FORUM),
        text="answer: q",
        message_thread_id=str(thread),
        reply_markup=keyboard,
    )
    assert body["ok"] and body["result"]["message_thread_id"] == thread
    assert body["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "yes"
    query = api.send_callback_query(token, FORUM)
    assert (await updates(api, token))[-1]["callback_query"]["data"] == "yes"
    bad = await call(api, token, "sendMessage", chat_id=FORUM, text="x", reply_markup="{nope")
    assert bad["description"] == "Bad Request: can't parse reply keyboard markup JSON object"
    assert (await call(api, token, "answerCallbackQuery", callback_query_id=query))["ok"]
