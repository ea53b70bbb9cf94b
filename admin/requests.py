"""What the admin API accepts, each declared once as a frozen pydantic model, and the one
way requests are parsed into them.

Bodies, query parameters and path parameters all go through ``parse``: a ``ValidationError``
becomes a 422 ``{"error": {"code": "invalid_request", "message": ...}}`` whose message names
every field that is wrong and the rule it broke (a field's ``description`` is its rule, so the
OpenAPI document and the error say the same thing). Unknown query parameters are ignored, as
most HTTP APIs do; unknown body fields are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import aclosing
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from actors import (
    MAX_USER_ID,
    AutoreplyRule,
    BotConfig,
    BotToken,
    UserId,
    describe_problems,
    user_id_problem,
)
from admin.errors import ApiError

__all__ = [
    "MAX_BODY",
    "AutoreplyRuleBody",
    "EventsQuery",
    "HoursQuery",
    "NewBot",
    "RequestModel",
    "SuspendRequest",
    "UserIdPath",
    "parse",
    "parse_body",
    "parse_path",
    "parse_query",
    "read_json",
]

MAX_BODY = 64 * 1024
MAX_REASON = 500
HOURS_MIN, HOURS_MAX = 1, 168
# An echoed value is cut here: the message is for a human, not a copy of the request.
SHOWN_CHARS = 40

Model = TypeVar("Model", bound=BaseModel)


class RequestModel(BaseModel):
    """Base of every request shape: immutable, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _user_id_text(raw: object) -> object:
    # Path and query parameters are text; a body's user_id is a JSON number (UserId, strict).
    if isinstance(raw, str):
        problem = user_id_problem(raw)
        if problem is not None:
            raise ValueError(problem)
        return int(raw)
    return raw


# A user_id given as text: the one rule of actors.ids, with its message.
UserIdText = Annotated[UserId, BeforeValidator(_user_id_text)]
USER_ID_RULE = f"a whole number from 1 to {MAX_USER_ID}"


# --- path and query --------------------------------------------------------------------------


class UserIdPath(RequestModel):
    """The ``{user_id}`` path parameter."""

    user_id: UserIdText = Field(description=f"the tenant's user id: {USER_ID_RULE}")


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

    user_id: UserIdText | None = Field(None, description=f"only this bot's events: {USER_ID_RULE}")


# --- bodies ----------------------------------------------------------------------------------


class AutoreplyRuleBody(RequestModel):
    """One autoreply rule: a message containing ``contains`` is answered with ``reply``."""

    contains: str = Field(min_length=1)
    reply: str = Field(min_length=1)


class NewBot(RequestModel):
    """The body of ``POST /admin/bots``: the token is checked with getMe before anything is
    stored, and never shown again."""

    user_id: UserId = Field(description=USER_ID_RULE)
    token: str = Field(description="a string: the bot's token from @BotFather")
    handler: str = Field("echo", description="'echo', 'autoreply' or 'package.module:function'")
    autoreply: tuple[AutoreplyRuleBody, ...] = Field(
        (), description="a list of objects with non-empty strings 'contains' and 'reply'"
    )
    autoreply_default: str | None = Field(
        None, description="a string (the reply when no rule matches) or null (no reply)"
    )
    rps: Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)] | None = Field(
        None, description="a number > 0 (this bot's requests per second) or null (limits.bot_rps)"
    )

    def bot_config(self) -> BotConfig:
        """The bot to add, or a 422 naming what is wrong with the token or handler."""
        try:
            token = BotToken(self.token.strip())
        except ValueError as exc:
            raise ApiError(422, f"token: {exc}") from None
        try:
            return BotConfig(
                user_id=self.user_id,
                token=token,
                handler=self.handler,
                autoreply=tuple(
                    AutoreplyRule(contains=r.contains, reply=r.reply) for r in self.autoreply
                ),
                autoreply_default=self.autoreply_default,
                rps=self.rps,
            )
        except ValidationError as exc:
            problems = describe_problems(exc, BotConfig)
            raise ApiError(422, "; ".join(map(str, problems))) from None


class SuspendRequest(RequestModel):
    """The body of ``POST /admin/bots/{user_id}/suspend`` (optional)."""

    reason: str = Field(
        "suspended by an admin",
        min_length=1,
        max_length=MAX_REASON,
        pattern=r"\S",
        description=f"a non-empty string of at most {MAX_REASON} characters",
    )


# --- parsing ---------------------------------------------------------------------------------


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def _problem(model: type[BaseModel], error: ErrorDetails) -> str:
    loc = error["loc"]
    name = str(loc[0]) if loc else "the request"
    if error["type"] == "missing" and len(loc) == 1:
        return f"the field {name!r} is required"
    if error["type"] == "value_error":
        # Raised by our own validators, whose messages already state the rule.
        return str(error.get("ctx", {}).get("error", error["msg"]))
    field = model.model_fields.get(name)
    rule = field.description if field is not None else None
    if rule is None:
        where = ".".join(str(part) for part in loc)
        return f"{where}: {error['msg']}"
    message = f"{name} must be {rule}"
    # The value is echoed only for a top-level field, and never a token's.
    if len(loc) == 1 and name != "token":
        message += f", got {_shown(error['input'])}"
    return message


def parse(model: type[Model], data: Mapping[str, Any]) -> Model:
    """``data`` as ``model``, or a 422 whose message names every wrong field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    # Unknown top-level fields are told together, then each wrong field once (a union's
    # members would otherwise each report the same value); a nested problem is told by its
    # top-level field's rule.
    unknown = sorted(
        str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1
    )
    problems = []
    if unknown:
        known = ", ".join(sorted(model.model_fields))
        problems.append(f"unknown field(s) {', '.join(unknown)}; known: {known}")
    told = set(unknown)
    for error in sorted(errors, key=lambda e: e["type"] != "missing"):
        name = str(error["loc"][0]) if error["loc"] else ""
        if name not in told:
            told.add(name)
            problems.append(_problem(model, error))
    raise ApiError(422, "; ".join(problems))


def parse_path(request: Request, model: type[Model]) -> Model:
    """The path parameters as ``model``, or a 422."""
    return parse(model, request.path_params)


def parse_query(request: Request, model: type[Model]) -> Model:
    """The query parameters that ``model`` declares (the last of repeated ones), or a 422."""
    query = request.query_params
    return parse(model, {name: query[name] for name in model.model_fields if name in query})


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
