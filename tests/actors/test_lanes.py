"""The one chat rule: which chat an update is about, for its lane and for its stored rows."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors import chat_key, update_chat_id, update_payload
from actors.lanes import lane_name
from actors.simulator import SimulatedBotApi
from tests import payloads
from tests.actors.test_bot import with_handler
from tests.harness import running_fleet

FORUM = -1001234567890
BUSINESS = 4242
REACTIONS = -1009876543210
CALLBACK = 77

# One update of each kind whose chat is not simply ``message.chat``, by the text that asks for it.
SHAPES: dict[str, tuple[str, dict[str, Any], int | None]] = {
    "forum": (
        "message",
        {
            "message_id": 9,
            "message_thread_id": 3,
            "is_topic_message": True,
            "chat": {"id": FORUM, "type": "supergroup", "is_forum": True},
            "from": {"id": 501},
            "text": "in a topic",
        },
        FORUM,
    ),
    "business": (
        "business_message",
        {
            "message_id": 4,
            "business_connection_id": "bc-1",
            "chat": {"id": BUSINESS, "type": "private"},
            "from": {"id": BUSINESS},
            "text": "to my shop",
        },
        BUSINESS,
    ),
    "reaction_count": (
        "message_reaction_count",
        {
            "chat": {"id": REACTIONS, "type": "supergroup"},
            "message_id": 12,
            "date": 0,
            "reactions": [{"type": {"type": "emoji", "emoji": "👍"}, "total_count": 3}],
        },
        REACTIONS,
    ),
    "callback": (
        "callback_query",
        {
            "id": "cb-1",
            "from": {"id": 502},
            "message": {"message_id": 5, "chat": {"id": CALLBACK, "type": "private"}},
            "data": "yes",
        },
        CALLBACK,
    ),
    "inline": ("inline_query", {"id": "q-1", "from": {"id": 503}, "query": "cats"}, None),
}


def shaped(kind: str, update_id: int) -> dict[str, Any]:
    name, payload, _ = SHAPES[kind]
    return {"update_id": update_id, name: payload}


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_an_update_is_about_the_chat_it_names(kind: str) -> None:
    update = shaped(kind, 1)
    expected = SHAPES[kind][2]
    assert update_chat_id(update) == expected
    assert chat_key(update) == (expected if expected is not None else ("user", 503))


def test_an_update_naming_no_chat_has_a_lane_of_its_sender_or_its_kind() -> None:
    assert chat_key({"update_id": 1, "poll_answer": {"user": {"id": 8}}}) == ("user", 8)
    assert chat_key({"update_id": 1, "poll": {"id": "p"}}) == ("kind", "poll")
    assert chat_key({"update_id": 1}) == ("kind", "none")
    # An id that is not a whole number names nobody (and never breaks the lane table).
    assert chat_key({"update_id": 1, "inline_query": {"from": {"id": [1]}}}) == (
        "kind",
        "inline_query",
    )
    # A chat id that is not a whole number is not a chat.
    odd = {"update_id": 1, "message": {"chat": {"id": True}, "from": {"id": 6}}}
    assert update_chat_id(odd) is None
    assert chat_key(odd) == ("user", 6)


# Every update type of Bot API 9.x, as Telegram sends it, and the lane it belongs to (the
# builders' default ids): its chat, else ("user", id), else ("kind", type).
LANE_OF_TYPE: dict[str, Any] = {
    "message": 111,
    "edited_message": 111,
    "channel_post": -1009876543210,
    "edited_channel_post": -1009876543210,
    "business_connection": ("user", 444),
    "business_message": 555,
    "edited_business_message": 555,
    "deleted_business_messages": 555,
    "message_reaction": -4001,
    "message_reaction_count": -1009876543210,
    "inline_query": ("user", 111),
    "chosen_inline_result": ("user", 111),
    "callback_query": 111,
    "shipping_query": ("user", 111),
    "pre_checkout_query": ("user", 111),
    "purchased_paid_media": ("user", 111),
    "poll": ("kind", "poll"),
    "poll_answer": ("user", 111),
    "my_chat_member": -4001,
    "chat_member": -1001234567890,
    "chat_join_request": -1001234567890,
    "chat_boost": -1009876543210,
    "removed_chat_boost": -1009876543210,
}

# Shapes within a type that a rule could get wrong.
LANE_OF_SHAPE: dict[str, tuple[dict[str, Any], Any]] = {
    "a type Telegram adds later, naming a chat": (payloads.future_update(chat_id=-4001), -4001),
    "a button under a group message, pressed by a member": (
        payloads.callback_query(chat_id=-4001, user_id=222),
        -4001,
    ),
    "a button under an inline message (no message, no chat)": (
        payloads.inline_callback_query(user_id=333),
        ("user", 333),
    ),
    "a message in a forum topic": (payloads.forum_topic_message(), -1001234567890),
    "a message in a channel's direct-messages chat": (
        payloads.channel_direct_message(),
        -1005555555555,
    ),
    "a group's upgrade to a supergroup": (payloads.migrate_to_supergroup(), -4001),
    "a group message posted as a channel (sender_chat is the sender, not the chat)": (
        {
            "update_id": 1,
            "message": payloads.text_message(
                payloads.group_chat(-4001),
                sender=payloads.user(136817688, first_name="Channel", is_bot=True),
                sender_chat=payloads.channel_chat(-1009876543210),
            ),
        },
        -4001,
    ),
}


def test_a_field_besides_the_object_that_is_no_object_is_not_taken_for_it() -> None:
    # A field Telegram might add beside update_id that is a plain value, not an object.
    update = {"update_id": 7, "is_redelivery": True, "message": payloads.message(7)["message"]}
    assert update_payload(update) == ("message", update["message"])
    assert chat_key(update) == update["message"]["chat"]["id"]


def test_the_inbox_names_a_lane_by_its_chat_id_or_its_key() -> None:
    # Stored in the inbox's lane column and matched on read-back: the text must not change.
    assert lane_name(FORUM) == "-1001234567890"
    assert lane_name(BUSINESS) == "4242"
    assert lane_name(("user", 8)) == "('user', 8)"
    assert lane_name(("kind", "poll")) == "('kind', 'poll')"


def test_the_table_covers_every_update_type() -> None:
    assert set(LANE_OF_TYPE) == set(payloads.ALL_UPDATE_TYPES)


@pytest.mark.parametrize("kind", payloads.ALL_UPDATE_TYPES)
def test_every_update_type_has_the_lane_of_its_chat_or_its_user(kind: str) -> None:
    update = payloads.BUILDERS[kind]()
    expected = LANE_OF_TYPE[kind]
    assert chat_key(update) == expected
    assert update_chat_id(update) == (expected if isinstance(expected, int) else None)


@pytest.mark.parametrize("shape", sorted(LANE_OF_SHAPE))
def test_shapes_within_a_type_keep_their_chat(shape: str) -> None:
    update, expected = LANE_OF_SHAPE[shape]
    assert chat_key(update) == expected
    assert update_chat_id(update) == (expected if isinstance(expected, int) else None)


class _Reshaping(httpx.AsyncBaseTransport):
    """Turns a simulated user's text message ``shape:<kind>`` into an update of that kind."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.delivered: dict[int, dict[str, Any]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if not request.url.path.endswith("/getUpdates"):
            return response
        body = json.loads(await response.aread())
        if body.get("ok"):
            body["result"] = [self._reshape(update) for update in body["result"]]
        return httpx.Response(response.status_code, json=body, request=request)

    def _reshape(self, update: Mapping[str, Any]) -> dict[str, Any]:
        text = str(update.get("message", {}).get("text", ""))
        result = dict(update)
        if text.startswith("shape:"):
            result = shaped(text.removeprefix("shape:"), int(update["update_id"]))
        self.delivered[int(update["update_id"])] = result
        return result


async def test_the_dead_letter_and_the_inbox_name_the_chat_of_the_lane(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(9))
    db = tmp_path / "c.db"
    transports: list[_Reshaping] = []

    def reshaping(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        transports.append(_Reshaping(inner))
        return transports[0]

    async with running_fleet(
        db,
        [1],
        api=api,
        configure=with_handler("tests.handlers_for_tests:refuse_everything"),
        wrap_transport=reshaping,
    ) as fleet:
        sent = {
            api.send_user_message(fleet.tokens[1], 11, f"shape:{kind}"): kind
            for kind in sorted(SHAPES)
        }
        await trio.sleep(30)
        letters = {
            letter.update_id: letter.chat_id
            for letter in await fleet.handle.store.list_dead_letters(1)
        }
    delivered = transports[0].delivered
    assert len(delivered) == len(SHAPES)
    with sqlite3.connect(db) as conn:
        inbox = dict(conn.execute("SELECT update_id, chat_id FROM inbox WHERE user_id = 1"))
    conn.close()
    lanes = {update_id: chat_key(update) for update_id, update in delivered.items()}
    assert set(letters) == set(inbox) == set(delivered) == set(sent)
    for update_id, kind in sent.items():
        expected = SHAPES[kind][2]
        assert letters[update_id] == inbox[update_id] == expected, kind
        if expected is not None:
            assert lanes[update_id] == expected
