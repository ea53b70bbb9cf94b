"""Realistic Bot API 9.x updates, written from the Bot API reference, for tests.

These are the shapes real Telegram sends (every field a router or a reply rule might look at,
with the nesting and the optional fields as documented), independent of the simulator, so a
rule is checked against Telegram and not only against what our own simulator happens to
produce. Each builder returns one whole ``Update`` object; ``ALL_UPDATE_TYPES`` names every
update type of Bot API 9.x, and :func:`every_update` builds one of each.

Conventions: ``chat_id`` < 0 is a group, supergroup or channel (supergroups and channels are
``-100…``); a private chat's id equals its user's id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "ALL_UPDATE_TYPES",
    "BLOCKED",
    "BUILDERS",
    "DATE",
    "NOT_FOUND",
    "NOT_MODIFIED",
    "UNAUTHORIZED",
    "every_update",
    "migrated",
    "too_many_requests",
    "user",
]

Update = dict[str, Any]

DATE = 1_800_000_000  # a message's unix date


def user(user_id: int = 111, *, first_name: str = "Ada", is_bot: bool = False) -> dict[str, Any]:
    return {
        "id": user_id,
        "is_bot": is_bot,
        "first_name": first_name,
        "username": f"user{user_id}",
        "language_code": "en",
    }


def private_chat(user_id: int = 111) -> dict[str, Any]:
    return {"id": user_id, "type": "private", "first_name": "Ada", "username": f"user{user_id}"}


def group_chat(chat_id: int = -4001, title: str = "Book club") -> dict[str, Any]:
    return {"id": chat_id, "type": "group", "title": title}


def supergroup_chat(
    chat_id: int = -1001234567890, *, forum: bool = False, title: str = "Makers"
) -> dict[str, Any]:
    chat: dict[str, Any] = {"id": chat_id, "type": "supergroup", "title": title}
    if forum:
        chat["is_forum"] = True
    return chat


def channel_chat(chat_id: int = -1009876543210, title: str = "News") -> dict[str, Any]:
    return {"id": chat_id, "type": "channel", "title": title, "username": "news_channel"}


def text_message(
    chat: dict[str, Any],
    *,
    message_id: int = 10,
    text: str = "hello",
    sender: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    message: dict[str, Any] = {"message_id": message_id, "date": DATE, "chat": chat, "text": text}
    if sender is not None:
        message["from"] = sender
    message.update(extra)
    return message


# --- one builder per update type ------------------------------------------------------------


def message(update_id: int = 1, *, chat_id: int = 111, text: str = "hello") -> Update:
    """A private message."""
    return {
        "update_id": update_id,
        "message": text_message(private_chat(chat_id), text=text, sender=user(chat_id)),
    }


def group_message(update_id: int = 1, *, chat_id: int = -4001, user_id: int = 222) -> Update:
    """A message in a basic group."""
    return {
        "update_id": update_id,
        "message": text_message(group_chat(chat_id), text="hi all", sender=user(user_id)),
    }


def forum_topic_message(
    update_id: int = 1, *, chat_id: int = -1001234567890, thread_id: int = 77, user_id: int = 222
) -> Update:
    """A message in a forum topic of a supergroup: replies belong in the same topic."""
    return {
        "update_id": update_id,
        "message": text_message(
            supergroup_chat(chat_id, forum=True),
            message_id=501,
            text="question in a topic",
            sender=user(user_id),
            message_thread_id=thread_id,
            is_topic_message=True,
            reply_to_message={
                "message_id": thread_id,
                "date": DATE - 60,
                "chat": supergroup_chat(chat_id, forum=True),
                "message_thread_id": thread_id,
                "forum_topic_created": {"name": "Support", "icon_color": 7322096},
            },
        ),
    }


def edited_message(update_id: int = 1, *, chat_id: int = 111) -> Update:
    return {
        "update_id": update_id,
        "edited_message": text_message(
            private_chat(chat_id), text="hello (edited)", sender=user(chat_id), edit_date=DATE + 5
        ),
    }


def channel_post(update_id: int = 1, *, chat_id: int = -1009876543210) -> Update:
    """A channel post: no ``from``; ``sender_chat`` is the channel itself."""
    chat = channel_chat(chat_id)
    return {
        "update_id": update_id,
        "channel_post": text_message(chat, text="news", sender_chat=chat),
    }


def edited_channel_post(update_id: int = 1, *, chat_id: int = -1009876543210) -> Update:
    chat = channel_chat(chat_id)
    return {
        "update_id": update_id,
        "edited_channel_post": text_message(
            chat, text="news (fixed)", sender_chat=chat, edit_date=DATE + 9
        ),
    }


def channel_direct_message(
    update_id: int = 1, *, chat_id: int = -1005555555555, topic_id: int = 31, user_id: int = 333
) -> Update:
    """A message in a channel's direct-messages chat: replies need its
    ``direct_messages_topic_id``."""
    chat = {
        "id": chat_id,
        "type": "supergroup",
        "title": "News (direct messages)",
        "is_direct_messages": True,
    }
    return {
        "update_id": update_id,
        "message": text_message(
            chat,
            text="a question for the channel",
            sender=user(user_id),
            direct_messages_topic={"topic_id": topic_id, "user": user(user_id)},
        ),
    }


def business_connection(update_id: int = 1, *, user_id: int = 444) -> Update:
    """A business account connected the bot (no ``chat`` object: ``user_chat_id``)."""
    return {
        "update_id": update_id,
        "business_connection": {
            "id": "bc-AbCdEf123",
            "user": user(user_id),
            "user_chat_id": user_id,
            "date": DATE,
            "rights": {"can_reply": True, "can_read_messages": True},
            "is_enabled": True,
        },
    }


def business_message(
    update_id: int = 1, *, chat_id: int = 555, connection: str = "bc-AbCdEf123"
) -> Update:
    """A customer wrote to a business account: the reply goes through the connection."""
    return {
        "update_id": update_id,
        "business_message": text_message(
            private_chat(chat_id),
            text="do you ship to Lisbon?",
            sender=user(chat_id),
            business_connection_id=connection,
        ),
    }


def edited_business_message(
    update_id: int = 1, *, chat_id: int = 555, connection: str = "bc-AbCdEf123"
) -> Update:
    return {
        "update_id": update_id,
        "edited_business_message": text_message(
            private_chat(chat_id),
            text="do you ship to Porto?",
            sender=user(chat_id),
            business_connection_id=connection,
            edit_date=DATE + 30,
        ),
    }


def deleted_business_messages(update_id: int = 1, *, chat_id: int = 555) -> Update:
    return {
        "update_id": update_id,
        "deleted_business_messages": {
            "business_connection_id": "bc-AbCdEf123",
            "chat": private_chat(chat_id),
            "message_ids": [10, 11],
        },
    }


def message_reaction(update_id: int = 1, *, chat_id: int = -4001, user_id: int = 222) -> Update:
    return {
        "update_id": update_id,
        "message_reaction": {
            "chat": group_chat(chat_id),
            "message_id": 10,
            "user": user(user_id),
            "date": DATE,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": "👍"}],
        },
    }


def message_reaction_count(update_id: int = 1, *, chat_id: int = -1009876543210) -> Update:
    """Anonymous reaction counts (channels): a chat, no user."""
    return {
        "update_id": update_id,
        "message_reaction_count": {
            "chat": channel_chat(chat_id),
            "message_id": 10,
            "date": DATE,
            "reactions": [{"type": {"type": "emoji", "emoji": "🔥"}, "total_count": 3}],
        },
    }


def inline_query(update_id: int = 1, *, user_id: int = 111) -> Update:
    """No chat: ordered with the user's other updates."""
    return {
        "update_id": update_id,
        "inline_query": {
            "id": "4467243356245133",
            "from": user(user_id),
            "query": "cats",
            "offset": "",
            "chat_type": "sender",
        },
    }


def chosen_inline_result(update_id: int = 1, *, user_id: int = 111) -> Update:
    return {
        "update_id": update_id,
        "chosen_inline_result": {
            "result_id": "r1",
            "from": user(user_id),
            "query": "cats",
            "inline_message_id": "AgAAAMk4AQ",
        },
    }


def callback_query(update_id: int = 1, *, chat_id: int = 111, user_id: int = 111) -> Update:
    """A button under a bot's message: the message's chat, and an id to answer."""
    return {
        "update_id": update_id,
        "callback_query": {
            "id": "4382bfdwdsb323b2d9",
            "from": user(user_id),
            "message": text_message(
                private_chat(chat_id) if chat_id > 0 else group_chat(chat_id),
                message_id=42,
                text="Pick one",
                sender=user(999_000_111, first_name="Bot", is_bot=True),
                reply_markup={"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]},
            ),
            "chat_instance": "-8120459437467436321",
            "data": "a",
        },
    }


def inline_callback_query(update_id: int = 1, *, user_id: int = 111) -> Update:
    """A button under an inline-mode message: no message, no chat."""
    return {
        "update_id": update_id,
        "callback_query": {
            "id": "4382bfdwdsb323b2e0",
            "from": user(user_id),
            "inline_message_id": "AgAAAMk4AQ",
            "chat_instance": "-8120459437467436322",
            "data": "b",
        },
    }


def shipping_query(update_id: int = 1, *, user_id: int = 111) -> Update:
    return {
        "update_id": update_id,
        "shipping_query": {
            "id": "sq-1",
            "from": user(user_id),
            "invoice_payload": "order-7",
            "shipping_address": {
                "country_code": "PT",
                "state": "",
                "city": "Lisboa",
                "street_line1": "Rua Augusta 1",
                "street_line2": "",
                "post_code": "1100-048",
            },
        },
    }


def pre_checkout_query(update_id: int = 1, *, user_id: int = 111) -> Update:
    return {
        "update_id": update_id,
        "pre_checkout_query": {
            "id": "pcq-1",
            "from": user(user_id),
            "currency": "XTR",
            "total_amount": 50,
            "invoice_payload": "order-7",
        },
    }


def purchased_paid_media(update_id: int = 1, *, user_id: int = 111) -> Update:
    return {
        "update_id": update_id,
        "purchased_paid_media": {"from": user(user_id), "paid_media_payload": "media-3"},
    }


def poll(update_id: int = 1) -> Update:
    """A poll's new state: no chat and no user at all."""
    return {
        "update_id": update_id,
        "poll": {
            "id": "5432100001",
            "question": "Lunch?",
            "options": [{"text": "Yes", "voter_count": 2}, {"text": "No", "voter_count": 1}],
            "total_voter_count": 3,
            "is_closed": False,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
        },
    }


def poll_answer(update_id: int = 1, *, user_id: int = 111) -> Update:
    """A vote in a non-anonymous poll: ``user``, not ``from``."""
    return {
        "update_id": update_id,
        "poll_answer": {"poll_id": "5432100001", "user": user(user_id), "option_ids": [0]},
    }


def my_chat_member(update_id: int = 1, *, chat_id: int = -4001, user_id: int = 222) -> Update:
    """The bot was added to a group by ``user_id``."""
    bot = user(999_000_111, first_name="Bot", is_bot=True)
    return {
        "update_id": update_id,
        "my_chat_member": {
            "chat": group_chat(chat_id),
            "from": user(user_id),
            "date": DATE,
            "old_chat_member": {"status": "left", "user": bot},
            "new_chat_member": {"status": "member", "user": bot},
        },
    }


def chat_member(update_id: int = 1, *, chat_id: int = -1001234567890, user_id: int = 222) -> Update:
    return {
        "update_id": update_id,
        "chat_member": {
            "chat": supergroup_chat(chat_id),
            "from": user(user_id),
            "date": DATE,
            "old_chat_member": {"status": "left", "user": user(user_id)},
            "new_chat_member": {"status": "member", "user": user(user_id)},
        },
    }


def chat_join_request(
    update_id: int = 1, *, chat_id: int = -1001234567890, user_id: int = 222
) -> Update:
    return {
        "update_id": update_id,
        "chat_join_request": {
            "chat": supergroup_chat(chat_id),
            "from": user(user_id),
            "user_chat_id": user_id,
            "date": DATE,
            "bio": "I like bots",
        },
    }


def chat_boost(update_id: int = 1, *, chat_id: int = -1009876543210, user_id: int = 222) -> Update:
    return {
        "update_id": update_id,
        "chat_boost": {
            "chat": channel_chat(chat_id),
            "boost": {
                "boost_id": "boost-1",
                "add_date": DATE,
                "expiration_date": DATE + 86400 * 30,
                "source": {"source": "premium", "user": user(user_id)},
            },
        },
    }


def removed_chat_boost(
    update_id: int = 1, *, chat_id: int = -1009876543210, user_id: int = 222
) -> Update:
    return {
        "update_id": update_id,
        "removed_chat_boost": {
            "chat": channel_chat(chat_id),
            "boost_id": "boost-1",
            "remove_date": DATE + 3600,
            "source": {"source": "premium", "user": user(user_id)},
        },
    }


def migrate_to_supergroup(
    update_id: int = 1, *, old_chat_id: int = -4001, new_chat_id: int = -1001234567890
) -> Update:
    """The service message a basic group sends when it is upgraded to a supergroup."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": 90,
            "date": DATE,
            "chat": group_chat(old_chat_id),
            "from": user(222),
            "migrate_to_chat_id": new_chat_id,
        },
    }


def future_update(update_id: int = 1, *, chat_id: int = -4001) -> Update:
    """A type Telegram may add later, carrying a chat: it still belongs to that chat."""
    return {
        "update_id": update_id,
        "gift_sent_to_chat": {"chat": group_chat(chat_id), "from": user(222), "gift_id": "g-1"},
    }


# The update types of Bot API 9.x (the fields of ``Update`` besides ``update_id``).
ALL_UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)

BUILDERS: dict[str, Callable[..., Update]] = {
    "message": message,
    "edited_message": edited_message,
    "channel_post": channel_post,
    "edited_channel_post": edited_channel_post,
    "business_connection": business_connection,
    "business_message": business_message,
    "edited_business_message": edited_business_message,
    "deleted_business_messages": deleted_business_messages,
    "message_reaction": message_reaction,
    "message_reaction_count": message_reaction_count,
    "inline_query": inline_query,
    "chosen_inline_result": chosen_inline_result,
    "callback_query": callback_query,
    "shipping_query": shipping_query,
    "pre_checkout_query": pre_checkout_query,
    "purchased_paid_media": purchased_paid_media,
    "poll": poll,
    "poll_answer": poll_answer,
    "my_chat_member": my_chat_member,
    "chat_member": chat_member,
    "chat_join_request": chat_join_request,
    "chat_boost": chat_boost,
    "removed_chat_boost": removed_chat_boost,
}


def every_update(first_update_id: int = 1) -> list[Update]:
    """One update of each type of Bot API 9.x, with consecutive update ids."""
    return [BUILDERS[kind](first_update_id + i) for i, kind in enumerate(ALL_UPDATE_TYPES)]


# --- Bot API error answers (``ok: false`` bodies as Telegram sends them) ---------------------

NOT_FOUND = {"ok": False, "error_code": 404, "description": "Not Found"}
UNAUTHORIZED = {"ok": False, "error_code": 401, "description": "Unauthorized"}
BLOCKED = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
NOT_MODIFIED = {
    "ok": False,
    "error_code": 400,
    "description": "Bad Request: message is not modified: specified new message content and "
    "reply markup are exactly the same as a current content and reply markup of the message",
}


def migrated(new_chat_id: int = -1001234567890) -> dict[str, Any]:
    """sendMessage to a basic group that became a supergroup."""
    return {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": new_chat_id},
    }


def too_many_requests(retry_after: int = 7) -> dict[str, Any]:
    return {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {retry_after}",
        "parameters": {"retry_after": retry_after},
    }
