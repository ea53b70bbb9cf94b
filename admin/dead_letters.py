"""``/admin/bots/{user_id}/dead-letters``: a bot's dead letters listed, redriven, discarded.

A redrive puts the selected updates back into the bot's inbox as undone (the store's
transaction, which also refuses what must not be redriven: see :mod:`storage.dead_letters`),
then hands them to the bot through the fleet, which gives them to their chat lanes or wakes a
dormant webhook bot. Each action is logged (one INFO line, counts only) and counted on
``/metrics``. docs/OPERATIONS.md "Dead letters" has the rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actors import UnknownBot, redact, update_payload
from admin.context import AdminContext, context_of
from admin.errors import ApiError
from admin.operations import operation
from admin.records import Record, record_response
from admin.requests import RequestModel, UserIdPath, parse_body, parse_path, parse_query
from storage import DeadLetter, DeadLetterSelection, iso_utc

__all__ = [
    "DeadLetterActionStatistics",
    "DeadLetterActions",
    "dead_letter_routes",
]

log = logging.getLogger("botvisor.admin")

PAGE_MAX = 500
IDS_MAX = 1000
REASON_MAX = 200


# --- requests ----------------------------------------------------------------------------------


class DeadLetterQuery(RequestModel):
    """``?limit=&cursor=&reason=`` of a bot's dead letters."""

    limit: int = Field(50, ge=1, le=PAGE_MAX, description=f"a whole number from 1 to {PAGE_MAX}")
    cursor: str | None = Field(
        None,
        pattern=r"^[0-9]{1,19}$",
        description="the next_cursor of the previous page",
        json_schema_extra={"x-rule": "be the next_cursor of the previous page"},
    )
    reason: str | None = Field(
        None,
        min_length=1,
        max_length=REASON_MAX,
        description="only dead letters whose reason contains this text (any case)",
    )


class DeadLetterAction(RequestModel):
    """The body of a redrive or a discard: exactly one of ``ids``, ``reason_contains``,
    ``all``."""

    ids: list[Annotated[int, Field(strict=True, ge=1)]] | None = Field(
        None,
        min_length=1,
        max_length=IDS_MAX,
        description=f"these dead letters (their ids, 1 to {IDS_MAX} of them)",
    )
    reason_contains: str | None = Field(
        None,
        min_length=1,
        max_length=REASON_MAX,
        description="those whose reason contains this (any case); a redrive takes only those "
        "not redriven yet",
    )
    all: Literal[True] | None = Field(
        None,
        description="true: every dead letter of the bot (a redrive: every one not redriven yet)",
    )

    def selection(self) -> DeadLetterSelection:
        """The store's selection, or a 422 unless exactly one key was given."""
        given = [
            name
            for name, value in (
                ("ids", self.ids),
                ("reason_contains", self.reason_contains),
                ("all", self.all),
            )
            if value is not None
        ]
        if len(given) != 1:
            got = ", ".join(repr(name) for name in given) or "none"
            raise ApiError(
                422,
                f"the body must have exactly one of 'ids', 'reason_contains' and 'all'; got {got}",
            )
        if self.ids is not None:
            return DeadLetterSelection(ids=tuple(self.ids))
        if self.reason_contains is not None:
            return DeadLetterSelection(reason_contains=self.reason_contains)
        return DeadLetterSelection(all=True)


# --- records -----------------------------------------------------------------------------------


class DeadLetterItem(Record):
    """One dead letter."""

    id: int = Field(description="stable: what redrive and discard take")
    update_id: int
    chat_id: int | None
    update_type: str | None = Field(description="message, callback_query...; null without payload")
    reason: str = Field(description="why it was given up on (redacted)")
    recorded_at: str = Field(description="ISO-8601 UTC")
    payload: dict[str, Any] | None = Field(
        description="the update as received; null for one stored before payloads were kept"
    )
    redriven_at: str | None = Field(description="ISO-8601 UTC of its redrive; null if none")


class DeadLetterList(Record):
    """``GET /admin/bots/{user_id}/dead-letters``: newest first."""

    user_id: int
    dead_letters: list[DeadLetterItem]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")
    total: int = Field(description="the bot's dead letters that match the reason filter")


class RefusedDeadLetter(Record):
    """A dead letter a redrive left alone."""

    id: int
    update_id: int | None = Field(description="null for an id the bot does not have")
    reason: str = Field(description="why it was not redriven")


class RedriveResult(Record):
    """``POST .../dead-letters/redrive``."""

    redriven: int = Field(description="updates put back into the inbox, to be handled again")
    refused: list[RefusedDeadLetter]


class DiscardResult(Record):
    """``POST .../dead-letters/discard``."""

    discarded: int = Field(description="dead letters deleted")


# --- counting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterActionStatistics:
    redrives: int  # redrive requests
    discards: int  # discard requests
    redriven: int  # dead letters redriven
    refused: int  # dead letters a redrive refused
    discarded: int  # dead letters deleted


class DeadLetterActions:
    """The operator's actions on dead letters since the daemon started (for /metrics)."""

    def __init__(self) -> None:
        self._redrives = self._discards = 0
        self._redriven = self._refused = self._discarded = 0

    def redrove(self, redriven: int, refused: int) -> None:
        self._redrives += 1
        self._redriven += redriven
        self._refused += refused

    def discarded(self, count: int) -> None:
        self._discards += 1
        self._discarded += count

    def statistics(self) -> DeadLetterActionStatistics:
        return DeadLetterActionStatistics(
            redrives=self._redrives,
            discards=self._discards,
            redriven=self._redriven,
            refused=self._refused,
            discarded=self._discarded,
        )


# --- routes ------------------------------------------------------------------------------------


def _known_bot(ctx: AdminContext, request: Request) -> int:
    user_id = parse_path(request, UserIdPath).user_id
    try:
        ctx.fleet.get(user_id)
    except UnknownBot as exc:
        raise ApiError(404, str(exc)) from None
    return user_id


def _item(letter: DeadLetter) -> DeadLetterItem:
    found = None if letter.payload is None else update_payload(letter.payload)
    return DeadLetterItem(
        id=letter.id,
        update_id=letter.update_id,
        chat_id=letter.chat_id,
        update_type=None if found is None else found[0],
        reason=letter.reason,
        recorded_at=iso_utc(letter.recorded_at),
        payload=None if letter.payload is None else dict(letter.payload),
        redriven_at=None if letter.redriven_at is None else iso_utc(letter.redriven_at),
    )


def _described(selection: DeadLetterSelection) -> str:
    """The selection for a log line: never the operator's text unredacted."""
    if selection.ids is not None:
        return f"{len(selection.ids)} id(s)"
    if selection.reason_contains is not None:
        return f"reason containing {redact(selection.reason_contains)!r}"
    return "all"


def _actions(request: Request) -> DeadLetterActions:
    actions: DeadLetterActions = request.app.state.dead_letter_actions
    return actions


@operation(
    "A bot's dead letters, newest first, with their reasons and updates: a page of limit "
    "(then cursor=next_cursor), filtered by reason text",
    {200: DeadLetterList},
    path=UserIdPath,
    query=DeadLetterQuery,
    errors=(404,),
    tag="dead-letters",
)
async def list_dead_letters(request: Request) -> Response:
    ctx = context_of(request)
    user_id = _known_bot(ctx, request)
    query = parse_query(request, DeadLetterQuery)
    page = await ctx.store.dead_letters_page(
        user_id,
        limit=query.limit,
        before=None if query.cursor is None else int(query.cursor),
        reason=query.reason,
    )
    listing = DeadLetterList(
        user_id=user_id,
        dead_letters=[_item(letter) for letter in page.dead_letters],
        next_cursor=None if page.next_cursor is None else str(page.next_cursor),
        total=page.total,
    )
    return record_response(listing)


@operation(
    "Put dead letters' updates back into the bot's inbox, received now, to be handled again "
    "in their chat's order: by ids, by reason text or all (those two take only dead letters "
    "not redriven yet). Refused, with the reason: one stored without its update, one "
    "redriven before (handled again, waiting, or dead-lettered again), an unknown id",
    {200: RedriveResult},
    path=UserIdPath,
    body=DeadLetterAction,
    errors=(404,),
    tag="dead-letters",
)
async def redrive_dead_letters(request: Request) -> Response:
    ctx = context_of(request)
    user_id = _known_bot(ctx, request)
    selection = (await parse_body(request, DeadLetterAction)).selection()
    now = ctx.wall_clock()
    result = await ctx.store.redrive_dead_letters(user_id, selection, now)
    updates = [letter.payload for letter in result.redriven if letter.payload is not None]
    ctx.fleet.dead_letters_redriven(user_id, updates, now)
    _actions(request).redrove(len(result.redriven), len(result.refused))
    log.info(
        "bot %s: dead letters redriven: %d, refused: %d (%s)",
        user_id,
        len(result.redriven),
        len(result.refused),
        _described(selection),
    )
    answer = RedriveResult(
        redriven=len(result.redriven),
        refused=[
            RefusedDeadLetter(id=r.id, update_id=r.update_id, reason=r.reason)
            for r in result.refused
        ],
    )
    return record_response(answer)


@operation(
    "Delete dead letters (redriven or not): by ids, by reason text or all",
    {200: DiscardResult},
    path=UserIdPath,
    body=DeadLetterAction,
    errors=(404,),
    tag="dead-letters",
)
async def discard_dead_letters(request: Request) -> Response:
    ctx = context_of(request)
    user_id = _known_bot(ctx, request)
    selection = (await parse_body(request, DeadLetterAction)).selection()
    count = await ctx.store.discard_dead_letters(user_id, selection)
    _actions(request).discarded(count)
    log.info("bot %s: dead letters discarded: %d (%s)", user_id, count, _described(selection))
    return record_response(DiscardResult(discarded=count))


def dead_letter_routes() -> list[BaseRoute]:
    """The routes, for ``create_app`` (which puts a :class:`DeadLetterActions` on
    ``app.state.dead_letter_actions``)."""
    base = "/admin/bots/{user_id}/dead-letters"
    return [
        Route(base, list_dead_letters, methods=["GET"]),
        Route(f"{base}/redrive", redrive_dead_letters, methods=["POST"]),
        Route(f"{base}/discard", discard_dead_letters, methods=["POST"]),
    ]
