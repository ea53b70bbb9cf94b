"""What the admin API accepts, each declared once as a frozen pydantic model, and the one
way requests are parsed into them.

Bodies, query parameters and path parameters all go through ``parse``: a ``ValidationError``
becomes a 422 ``{"error": {"code": "invalid_request", "message": ...}}`` whose message names
every field that is wrong and the rule it broke, in the words the config file's errors use
(``actors.describe_problems``: one translation of pydantic's errors for both). A new bot's body
is :class:`actors.BotConfig` itself, the shape a ``[[bots]]`` table has. Unknown query
parameters are ignored, as most HTTP APIs do; unknown body fields are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import aclosing
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.requests import Request

from actors import (
    USER_ID_RULE,
    BotMode,
    BotStatus,
    BreakerState,
    UserId,
    describe_problems,
    rule_error,
    text_problems,
    user_id_problem,
)
from admin.errors import ApiError

__all__ = [
    "MAX_BODY",
    "BotListQuery",
    "EventsQuery",
    "HoursQuery",
    "ModeRequest",
    "RequestModel",
    "SuspendRequest",
    "UserIdPath",
    "UserIdText",
    "parse",
    "parse_body",
    "parse_path",
    "parse_query",
    "read_json",
]

MAX_BODY = 64 * 1024
MAX_REASON = 500
HOURS_MIN, HOURS_MAX = 1, 168

Model = TypeVar("Model", bound=BaseModel)


class RequestModel(BaseModel):
    """Base of every request shape: immutable, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _user_id_text(raw: object) -> object:
    # Path and query parameters are text; a body's user_id is a JSON number (UserId, strict).
    if isinstance(raw, str):
        problem = user_id_problem(raw)
        if problem is not None:
            raise rule_error("", problem)
        return int(raw)
    return raw


# A user_id given as text: the one rule of actors.ids, with its message.
UserIdText = Annotated[UserId, BeforeValidator(_user_id_text)]


# --- path and query --------------------------------------------------------------------------


class UserIdPath(RequestModel):
    """The ``{user_id}`` path parameter."""

    user_id: UserIdText = Field(description=f"the tenant's user id: must {USER_ID_RULE}")


class HoursQuery(RequestModel):
    """``?hours=`` of the history endpoints."""

    hours: int = Field(
        24,
        ge=HOURS_MIN,
        le=HOURS_MAX,
        description=f"a whole number from {HOURS_MIN} to {HOURS_MAX}",
    )


class EventsQuery(RequestModel):
    """``?user_id=`` of the live event stream: only this bot's events."""

    user_id: UserIdText | None = Field(
        None, description=f"only this bot's events: must {USER_ID_RULE}"
    )


BOTS_PAGE_MAX = 1000


class BotListQuery(RequestModel):
    """``GET /admin/bots``: one page of the fleet, filtered, in ``user_id`` order."""

    limit: int | None = Field(
        None,
        ge=1,
        le=BOTS_PAGE_MAX,
        description=f"at most this many bots (1 to {BOTS_PAGE_MAX}); omitted: every match",
    )
    cursor: int | None = Field(
        None, ge=0, description="the next_cursor of the previous page: bots after this user_id"
    )
    status: BotStatus | None = Field(None, description="only bots with this health status")
    breaker: BreakerState | None = Field(None, description="only bots whose breaker is in it")
    mode: BotMode | None = Field(None, description="only 'polling' or only 'webhook' bots")
    q: str | None = Field(
        None,
        min_length=1,
        max_length=20,
        pattern=r"^[0-9]+$",
        description="only bots whose user_id contains these digits",
        json_schema_extra={"x-rule": "be 1 to 20 digits"},
    )


# --- bodies ----------------------------------------------------------------------------------


class SuspendRequest(RequestModel):
    """The body of ``POST /admin/bots/{user_id}/suspend`` (optional)."""

    reason: str = Field(
        "suspended by an admin",
        min_length=1,
        max_length=MAX_REASON,
        pattern=r"\S",
        description=f"a non-empty string of at most {MAX_REASON} characters",
        json_schema_extra={"x-rule": f"be a non-empty string of at most {MAX_REASON} characters"},
    )


class ModeRequest(RequestModel):
    """The body of ``POST /admin/bots/{user_id}/mode``."""

    mode: BotMode = Field(description="'polling' (getUpdates) or 'webhook' (Telegram pushes)")


# --- parsing ---------------------------------------------------------------------------------


def parse(model: type[Model], data: Mapping[str, Any]) -> Model:
    """``data`` as ``model``, or a 422 whose message names every wrong field."""
    # Text that is not valid UTF-8 would fail later, in SQLite or in a response: refused here.
    if bad_text := text_problems(data):
        raise ApiError(422, "; ".join(p.message for p in bad_text))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = describe_problems(exc, model, unknown=("unknown field", "unknown field"))
    raise ApiError(422, "; ".join(p.message for p in problems))


def parse_path(request: Request, model: type[Model]) -> Model:
    """The path parameters as ``model``, or a 422."""
    return parse(model, request.path_params)


def parse_query(request: Request, model: type[Model]) -> Model:
    """The query parameters that ``model`` declares (the last of repeated ones), or a 422."""
    query = request.query_params
    names = (field.alias or name for name, field in model.model_fields.items())
    return parse(model, {name: query[name] for name in names if name in query})


async def parse_body(request: Request, model: type[Model]) -> Model:
    """The JSON body as ``model``, or a 4xx saying what is wrong."""
    return parse(model, await read_json(request))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (empty means ``{}``), or a 4xx saying what is
    wrong."""
    chunks: list[bytes] = []
    size = 0
    # Read as it arrives, so an oversized body is refused before it is all in memory.
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError(413, f"the request body must be at most {MAX_BODY // 1024} KiB")
            chunks.append(chunk)
    body = b"".join(chunks)
    try:
        data = json.loads(body or b"{}", parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(422, f"the request body must be JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the request body must be a JSON object")
    return data
