"""Replies land where the question was asked, and the built-in handlers behave like real bots.

Driven through the whole in-process daemon with Telegram's own update shapes
(``tests.payloads``): the scripted Telegram records what the bot sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import HandlerContext, reply_target
from supervisor import Config
from tests import payloads
from tests.actors.scripted_telegram import ScriptedTelegram
from tests.actors.test_bot import with_handler
from tests.harness import running_fleet

FORUM = -1001234567890
DIRECT = -1005555555555


async def quote_and_override(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Handler for the tests: a quoted reply, then one sent to the General topic, then one
    with the handler's own reply parameters."""
    await ctx.reply("quoted", quote=True)
    await ctx.reply("general", message_thread_id=None)
    await ctx.reply("own", reply_parameters={"message_id": 7}, quote=True)


async def report_chat(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Handler for the tests: tells the scripted Telegram which chat ``ctx`` names."""
    kind = next(name for name in update if name != "update_id")
    await ctx.call("reportChat", kind=kind, chat_id=ctx.chat_id)


async def run_bot(
    tmp_path: Path, telegram: ScriptedTelegram, *updates: dict[str, Any], handler: str = "echo"
) -> None:
    async with running_fleet(
        tmp_path / "r.db",
        [1],
        configure=with_handler(handler) if handler != "echo" else None,
        wrap_transport=telegram.wrap,
    ):
        telegram.push(*updates)
        await trio.sleep(30)


# --- item 2: replies in the right place -------------------------------------------------------


def test_a_reply_target_carries_the_place_of_the_question() -> None:
    assert reply_target(payloads.message()) == {"chat_id": 111}
    assert reply_target(payloads.forum_topic_message(thread_id=77)) == {
        "chat_id": FORUM,
        "message_thread_id": 77,
    }
    assert reply_target(payloads.business_message(connection="bc-9")) == {
        "chat_id": 555,
        "business_connection_id": "bc-9",
    }
    assert reply_target(payloads.channel_direct_message(topic_id=31)) == {
        "chat_id": DIRECT,
        "direct_messages_topic_id": 31,
    }
    # A reply thread of a plain supergroup is not a topic: sendMessage would refuse it.
    thread_reply = {
        "update_id": 1,
        "message": payloads.text_message(
            payloads.supergroup_chat(), message_thread_id=5, sender=payloads.user()
        ),
    }
    assert reply_target(thread_reply) == {"chat_id": -1001234567890}
    # A button under a message in a topic is answered in that topic.
    pressed = payloads.callback_query(chat_id=-4001)
    pressed["callback_query"]["message"].update(message_thread_id=9, is_topic_message=True)
    assert reply_target(pressed) == {"chat_id": -4001, "message_thread_id": 9}
    assert reply_target(payloads.inline_query()) == {}


async def test_echo_answers_in_the_topic_the_connection_and_the_direct_messages_topic(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = ScriptedTelegram()
    await run_bot(
        tmp_path,
        telegram,
        payloads.forum_topic_message(1, thread_id=77),
        payloads.business_message(2, chat_id=555, connection="bc-AbCdEf123"),
        payloads.channel_direct_message(3, topic_id=31),
        payloads.message(4, chat_id=111, text="plain"),
    )
    sent = sorted(telegram.sent(), key=lambda params: str(params["text"]))
    assert sent == [
        {
            "chat_id": DIRECT,
            "text": "a question for the channel",
            "direct_messages_topic_id": 31,
        },
        {
            "chat_id": 555,
            "text": "do you ship to Lisbon?",
            "business_connection_id": "bc-AbCdEf123",
        },
        {"chat_id": 111, "text": "plain"},
        {"chat_id": FORUM, "text": "question in a topic", "message_thread_id": 77},
    ]


async def test_a_handler_quotes_and_overrides_the_place(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = ScriptedTelegram()
    await run_bot(
        tmp_path,
        telegram,
        payloads.forum_topic_message(1, thread_id=77),
        handler="tests.actors.test_replies:quote_and_override",
    )
    assert telegram.sent() == [
        {
            "chat_id": FORUM,
            "text": "quoted",
            "message_thread_id": 77,
            "reply_parameters": {"message_id": 501, "allow_sending_without_reply": True},
        },
        {"chat_id": FORUM, "text": "general"},
        {
            "chat_id": FORUM,
            "text": "own",
            "message_thread_id": 77,
            "reply_parameters": {"message_id": 7},
        },
    ]


# --- item 1 through the daemon: every type reaches its handler with its chat -----------------


async def test_every_update_type_reaches_the_handler_with_its_chat(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    from tests.actors.test_lanes import LANE_OF_TYPE

    telegram = ScriptedTelegram()
    await run_bot(
        tmp_path,
        telegram,
        *payloads.every_update(),
        handler="tests.actors.test_replies:report_chat",
    )
    seen = {params["kind"]: params.get("chat_id") for params in telegram.sent("reportChat")}
    assert seen == {
        kind: (lane if isinstance(lane, int) else None) for kind, lane in LANE_OF_TYPE.items()
    }


# --- item 13: built-in handlers like real bots -------------------------------------------------


@pytest.mark.parametrize("handler", ["echo", "autoreply"])
async def test_a_button_press_is_answered_so_it_stops_spinning(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, handler: str
) -> None:
    telegram = ScriptedTelegram()
    await run_bot(
        tmp_path,
        telegram,
        payloads.callback_query(1),
        payloads.inline_callback_query(2),
        handler=handler,
    )
    # Two lanes (the message's chat, the user of the inline message): in either order.
    answered = sorted(
        params["callback_query_id"] for params in telegram.sent("answerCallbackQuery")
    )
    assert answered == ["4382bfdwdsb323b2d9", "4382bfdwdsb323b2e0"]
    assert telegram.sent() == []  # a button press is not a message to echo


def with_autoreply(config: Config) -> Config:
    from actors import BotConfig

    bots = tuple(
        BotConfig.model_validate(
            {
                **bot.model_dump(),
                "token": bot.token,
                "handler": "autoreply",
                "autoreply": [{"contains": "ship", "reply": "We ship everywhere."}],
            }
        )
        for bot in config.bots
    )
    return config.model_copy(update={"bots": bots})


async def test_autoreply_answers_a_business_message_through_its_connection(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = ScriptedTelegram()
    async with running_fleet(
        tmp_path / "a.db", [1], configure=with_autoreply, wrap_transport=telegram.wrap
    ):
        telegram.push(payloads.business_message(1, chat_id=555, connection="bc-7"))
        await trio.sleep(30)
    assert telegram.sent() == [
        {"chat_id": 555, "text": "We ship everywhere.", "business_connection_id": "bc-7"}
    ]
