"""Payloads of the simulator's updates, in the shapes real Telegram sends (Bot API 9.x).

Each function returns the payload of one update type (the value under ``"message"``,
``"callback_query"``…), not the whole update: the API adds ``update_id`` when it queues it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "bot_user",
    "callback_query",
    "chat",
    "member_update",
    "reaction",
    "reaction_count",
    "user",
]


def user(user_id: int) -> dict[str, Any]:
    return {
        "id": user_id,
        "is_bot": False,
        "first_name": f"User{user_id}",
        "language_code": "en",
    }


def bot_user(bot_id: int, first_name: str, username: str) -> dict[str, Any]:
    return {"id": bot_id, "is_bot": True, "first_name": first_name, "username": username}


def chat(
    chat_id: int,
    chat_type: str,
    user_id: int,
    *,
    is_forum: bool = False,
    is_direct_messages: bool = False,
) -> dict[str, Any]:
    """A ``Chat``: a private chat carries its user's name, the others a title."""
    if chat_type == "private":
        return {"id": chat_id, "type": "private", "first_name": f"User{user_id}"}
    shape: dict[str, Any] = {"id": chat_id, "type": chat_type, "title": f"Group {abs(chat_id)}"}
    if chat_type == "channel":
        shape["title"] = f"Channel {abs(chat_id)}"
    if is_forum:
        shape["is_forum"] = True
    if is_direct_messages:
        shape["is_direct_messages"] = True
    return shape


def callback_query(
    query_id: str,
    user_id: int,
    message: dict[str, Any] | None,
    data: str,
    chat_instance: str,
) -> dict[str, Any]:
    """A button press: under ``message`` (a bot's message with an inline keyboard)."""
    payload: dict[str, Any] = {"id": query_id, "from": user(user_id)}
    if message is not None:
        payload["message"] = message
    payload["chat_instance"] = chat_instance
    payload["data"] = data
    return payload


def reaction(
    chat_shape: dict[str, Any], message_id: int, user_id: int, emoji: str, date: int
) -> dict[str, Any]:
    """``message_reaction``: one user's reaction changed."""
    return {
        "chat": chat_shape,
        "message_id": message_id,
        "user": user(user_id),
        "date": date,
        "old_reaction": [],
        "new_reaction": [{"type": "emoji", "emoji": emoji}],
    }


def reaction_count(
    chat_shape: dict[str, Any], message_id: int, emoji: str, count: int, date: int
) -> dict[str, Any]:
    """``message_reaction_count``: anonymous reactions (channels), no user."""
    return {
        "chat": chat_shape,
        "message_id": message_id,
        "date": date,
        "reactions": [{"type": {"type": "emoji", "emoji": emoji}, "total_count": count}],
    }


def member_update(
    chat_shape: dict[str, Any],
    by_user: int,
    member: dict[str, Any],
    old_status: str,
    new_status: str,
    date: int,
) -> dict[str, Any]:
    """``chat_member`` / ``my_chat_member``: ``member`` went from ``old_status`` to
    ``new_status``, changed by ``by_user``."""
    return {
        "chat": chat_shape,
        "from": user(by_user),
        "date": date,
        "old_chat_member": {"status": old_status, "user": member},
        "new_chat_member": {"status": new_status, "user": member},
    }
