"""What sendMessage, editMessageText and answerCallbackQuery check, as Telegram checks it.

Where a message may land (the chat, its forum topic, business connection or direct-messages
topic), what ``reply_parameters`` may name, which messages can be edited and which callback
queries answered. Each function raises :class:`~actors.simulator.protocol.BadRequest` with
Telegram's description, or answers the call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import trio

from actors.simulator import updates as shapes
from actors.simulator.bots import BotMessage, SentMessage, SimBot
from actors.simulator.faults import FloodLimits
from actors.simulator.flood import flood_wait
from actors.simulator.protocol import (
    MAX_TEXT,
    BadRequest,
    Response,
    chat_json,
    error,
    int_param,
    ok,
)
from actors.simulator.report import ChatLog, Place

__all__ = [
    "NOT_MODIFIED",
    "QUERY_TOO_OLD",
    "UPGRADED",
    "answer_callback_query",
    "callback_buttons",
    "edit_message_text",
    "json_object",
    "keep_message",
    "landing_place",
    "new_message_id",
    "replied_message",
    "send_message",
    "target_chat",
]

KEPT_BOT_MESSAGES = 1000  # per bot, for editMessageText and button presses
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
UPGRADED = "Bad Request: group chat was upgraded to a supergroup chat"


def new_message_id(bot: SimBot) -> int:
    """The next message id of the bot's world (user and bot messages share the sequence)."""
    message_id = bot.next_message_id
    bot.next_message_id += 1
    return message_id


def keep_message(
    bot: SimBot, chat_id: int, message_id: int, text: str, buttons: tuple[str, ...]
) -> None:
    """Remember a message the bot sent, the oldest forgotten past KEPT_BOT_MESSAGES."""
    kept = bot.bot_messages
    kept[(chat_id, message_id)] = BotMessage(text, buttons)
    if len(kept) > KEPT_BOT_MESSAGES:
        del kept[next(iter(kept))]


def target_chat(bot: SimBot, params: Mapping[str, Any]) -> tuple[int, ChatLog]:
    raw = params.get("chat_id")
    if raw is None or raw == "":
        raise BadRequest("Bad Request: chat_id is empty")
    try:
        chat_id = int_param(params, "chat_id")
    except BadRequest:
        chat_id = None  # "@channelname": no simulated chat has a username
    log = bot.log.chats.get(chat_id) if chat_id is not None else None
    if chat_id is None or log is None:
        raise BadRequest("Bad Request: chat not found")
    info = bot.chat_info.get(chat_id)
    if info is not None and info.migrated_to is not None:
        raise BadRequest(UPGRADED, migrate_to_chat_id=info.migrated_to)
    return chat_id, log


def landing_place(bot: SimBot, chat_id: int, params: Mapping[str, Any]) -> Place:
    """Where a message to ``chat_id`` lands; BadRequest as Telegram refuses a wrong one."""
    info = bot.chat_info.get(chat_id)
    connection_id = params.get("business_connection_id")
    if connection_id is not None and connection_id != "":
        connection = bot.business.get(str(connection_id))
        if connection is None:
            raise BadRequest("Bad Request: business connection not found")
        if chat_id not in connection.chats:
            raise BadRequest("Bad Request: chat not found")
        connection_id = str(connection_id)
    else:
        connection_id = None
        if info is not None and info.via_business is not None:
            # The customer wrote to the business account, never to the bot.
            raise BadRequest("Bad Request: chat not found")
    thread_id = int_param(params, "message_thread_id")
    if thread_id is not None and (info is None or thread_id not in info.topics):
        raise BadRequest("Bad Request: message thread not found")
    dm_topic_id = int_param(params, "direct_messages_topic_id")
    if info is not None and info.is_direct_messages:
        if dm_topic_id is None:
            raise BadRequest("Bad Request: direct messages topic must be specified")
        if dm_topic_id not in info.dm_topics:
            raise BadRequest("Bad Request: direct messages topic not found")
    elif dm_topic_id is not None:
        raise BadRequest("Bad Request: direct messages topic not found")
    return thread_id, connection_id, dm_topic_id


def replied_message(bot: SimBot, chat_id: int, params: Mapping[str, Any]) -> int | None:
    """The message ``reply_parameters`` names, checked as Telegram checks it."""
    reply = json_object(params, "reply_parameters", "reply parameters")
    if reply is None:
        return None
    message_id = int_param(reply, "message_id")
    if message_id is None:
        raise BadRequest("Bad Request: message to be replied not found")
    in_chat = int_param(reply, "chat_id") if "chat_id" in reply else chat_id
    log = bot.log.chats.get(in_chat) if in_chat is not None else None
    exists = (in_chat, message_id) in bot.bot_messages or (
        log is not None and message_id in log.message_ids
    )
    if not exists:
        if reply.get("allow_sending_without_reply") in (True, "true", "True", "1"):
            return None
        raise BadRequest("Bad Request: message to be replied not found")
    return message_id


def edit_message_text(bot: SimBot, params: Mapping[str, Any], date: int) -> Response:
    """editMessageText of a message the bot sent (``date``: now, as the message's clock)."""
    if params.get("inline_message_id"):
        raise BadRequest("Bad Request: message to edit not found")
    chat_id, log = target_chat(bot, params)
    message_id = int_param(params, "message_id")
    if message_id is None:
        raise BadRequest("Bad Request: message identifier is not specified")
    text = params.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("Bad Request: message text is empty")
    if len(text) > MAX_TEXT:
        raise BadRequest("Bad Request: message is too long")
    kept = bot.bot_messages.get((chat_id, message_id))
    if kept is None:
        if message_id in log.message_ids:
            raise BadRequest("Bad Request: message can't be edited")
        raise BadRequest("Bad Request: message to edit not found")
    buttons = callback_buttons(params)
    if text == kept.text and buttons == kept.buttons:
        raise BadRequest(NOT_MODIFIED)
    kept.text, kept.buttons = text, buttons
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": shapes.bot_user(bot.bot_id, bot.first_name, bot.username),
        "chat": chat_json(chat_id, log),
        "date": date,
        "edit_date": date,
        "text": text,
    }
    if buttons:
        message["reply_markup"] = json_object(params, "reply_markup", "reply keyboard markup")
    return ok(message)


def answer_callback_query(bot: SimBot, params: Mapping[str, Any]) -> Response:
    query_id = params.get("callback_query_id")
    if query_id is None or query_id == "":
        raise BadRequest("Bad Request: query_id is empty")
    if bot.callbacks.pop(str(query_id), None) is None:
        raise BadRequest(QUERY_TOO_OLD)
    bot.log.callback_answered(str(query_id))
    return ok(True)


def json_object(params: Mapping[str, Any], name: str, what: str) -> Mapping[str, Any] | None:
    """A parameter that is a JSON object, given as one or as its JSON text (a form field)."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRequest(f"Bad Request: can't parse {what} JSON object") from None
    if not isinstance(value, Mapping):
        raise BadRequest(f"Bad Request: can't parse {what} JSON object")
    return value


def callback_buttons(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The callback_data of a reply_markup's inline keyboard, row by row."""
    markup = json_object(params, "reply_markup", "reply keyboard markup")
    rows = markup.get("inline_keyboard") if markup is not None else None
    if not isinstance(rows, list):
        return ()
    return tuple(
        str(button["callback_data"])
        for row in rows
        if isinstance(row, list)
        for button in row
        if isinstance(button, Mapping) and "callback_data" in button
    )


def send_message(
    bot: SimBot,
    params: Mapping[str, Any],
    date: int,
    flood: FloodLimits | None,
    counts: dict[str, int],
) -> Response:
    """sendMessage: checks as Telegram's, the flood limits, then the message is kept and
    recorded (``counts`` gets ``replies`` and ``flood_limited``)."""
    chat_id, log = target_chat(bot, params)
    text = params.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("Bad Request: message text is empty")
    if len(text) > MAX_TEXT:
        raise BadRequest("Bad Request: message is too long")
    place = landing_place(bot, chat_id, params)
    reply_to = replied_message(bot, chat_id, params)
    buttons = callback_buttons(params)
    if bot.blocked is not None and chat_id in bot.blocked and place[1] is None:
        return error(403, "Forbidden: bot was blocked by the user")
    if flood is not None:
        wait = flood_wait(bot, flood, chat_id, log.chat_type, trio.current_time())
        if wait > 0:
            counts["flood_limited"] += 1
            return error(429, f"Too Many Requests: retry after {wait}", wait)
    message_id = new_message_id(bot)
    bot.log.reply(chat_id, text, place)
    counts["replies"] += 1
    keep_message(bot, chat_id, message_id, text, buttons)
    thread_id, connection_id, dm_topic_id = place
    if bot.sent is not None:
        bot.sent.append(
            SentMessage(
                trio.current_time(),
                chat_id,
                message_id,
                text,
                message_thread_id=thread_id,
                business_connection_id=connection_id,
                direct_messages_topic_id=dm_topic_id,
                reply_to_message_id=reply_to,
            )
        )
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": shapes.bot_user(bot.bot_id, bot.first_name, bot.username),
        "chat": chat_json(chat_id, log),
        "date": date,
    }
    if thread_id is not None:
        message["message_thread_id"] = thread_id
        message["is_topic_message"] = True
    if connection_id is not None:
        message["business_connection_id"] = connection_id
    if dm_topic_id is not None:
        message["direct_messages_topic"] = {"topic_id": dm_topic_id}
    if reply_to is not None:
        message["reply_to_message"] = {"message_id": reply_to, "chat": message["chat"]}
    message["text"] = text
    if buttons:
        message["reply_markup"] = json_object(params, "reply_markup", "reply keyboard markup")
    return ok(message)
