"""Telegram's wire shapes as the simulated Bot API answers them: bodies, errors, parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.simulator.bots import RawUpdate, SimUpdate
from actors.simulator.report import ChatLog

__all__ = [
    "CONFLICT",
    "MAX_TEXT",
    "BadRequest",
    "InputFile",
    "Response",
    "chat_json",
    "error",
    "int_param",
    "ok",
    "render_update",
]

MAX_TEXT = 4096
CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)

# (HTTP status, JSON body)
Response = tuple[int, dict[str, Any]]


class BadRequest(Exception):
    """A parameter Telegram would refuse: answered 400 with this description."""

    def __init__(self, description: str, *, migrate_to_chat_id: int | None = None) -> None:
        super().__init__(description)
        self.migrate_to_chat_id = migrate_to_chat_id


@dataclass(frozen=True)
class InputFile:
    """A file uploaded with a call (a part of a multipart/form-data body with a filename)."""

    filename: str
    content_type: str
    content: bytes = field(repr=False)


def ok(result: Any) -> Response:
    return 200, {"ok": True, "result": result}


def error(
    code: int,
    description: str,
    retry_after: int | None = None,
    *,
    migrate_to_chat_id: int | None = None,
) -> Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    if migrate_to_chat_id is not None:
        body["parameters"] = {"migrate_to_chat_id": migrate_to_chat_id}
    return code, body


def int_param(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    raise BadRequest(f'Bad Request: field "{name}" must be a valid Number')


def chat_json(chat_id: int, log: ChatLog) -> dict[str, Any]:
    if log.chat_type == "private":
        return {"id": chat_id, "type": "private", "first_name": f"User{log.user_id}"}
    return {"id": chat_id, "type": log.chat_type, "title": f"Group {abs(chat_id)}"}


def render_update(update: SimUpdate | RawUpdate) -> dict[str, Any]:
    """A queued update as getUpdates returns it."""
    if isinstance(update, RawUpdate):
        return {"update_id": update.update_id, update.kind: update.payload}
    chat: dict[str, Any] = {"id": update.chat_id, "type": update.chat_type}
    if update.chat_type == "private":
        chat["first_name"] = f"User{update.user_id}"
    else:
        chat["title"] = f"Group {abs(update.chat_id)}"
    message: dict[str, Any] = {
        "message_id": update.message_id,
        "from": {
            "id": update.user_id,
            "is_bot": False,
            "first_name": f"User{update.user_id}",
            "language_code": "en",
        },
        "chat": chat,
        "date": update.date,
        "text": update.text,
    }
    if update.thread_id is not None:
        chat["is_forum"] = True
        message["message_thread_id"] = update.thread_id
        message["is_topic_message"] = True
    return {"update_id": update.update_id, "message": message}
