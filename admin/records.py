"""The JSON bodies the admin API answers with, each declared once as a frozen pydantic model.

A route builds one of these and answers ``record_response(record)``; the OpenAPI components
are these models' JSON Schemas, so a field added here is documented, and a field a route
sends without declaring it here fails validation before it leaves the server.

Where a body is a ``statistics()`` record of ``actors`` plus a key (``Breaker`` is
``BreakerStatistics`` plus ``user_id``), the model is derived from the record's fields
(``flattened``), so the record stays the one declaration of those fields.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.responses import JSONResponse

from actors import (
    ActorState,
    BotStatus,
    BreakerState,
    BreakerStatistics,
    FleetSummary,
    RetryStatistics,
)
from storage import HealthRow

__all__ = [
    "Alive",
    "Bot",
    "BotHealth",
    "BotList",
    "BotRetry",
    "Breaker",
    "BreakerSummary",
    "ErrorBody",
    "ErrorDetail",
    "HealthSummary",
    "History",
    "MisdirectedBody",
    "PersistNow",
    "Ready",
    "Record",
    "Removed",
    "RetryReset",
    "RetrySummary",
    "UnhealthyBots",
    "UnhealthyHistory",
    "fields_of",
    "flattened",
    "record_response",
]


class Record(BaseModel):
    """Base of every response body: immutable, and no key that is not declared."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def record_response(
    record: Record, *, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``record`` as the JSON answer (Starlette's encoder, as every answer had before)."""
    return JSONResponse(record.model_dump(mode="json"), status_code=status, headers=headers)


def fields_of(record: Any) -> dict[str, Any]:
    """A dataclass record's shown fields, one level deep (nested values stay as they are)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.repr}


def flattened(name: str, record: type, first: dict[str, Any], doc: str) -> type[Record]:
    """A response model with the keys of ``first``, then every shown field of the dataclass
    ``record`` with its declared type, in that order (the order clients have always seen)."""
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {key: (kind, ...) for key, kind in first.items()}
    for field in dataclasses.fields(record):
        if field.repr:
            fields[field.name] = (hints[field.name], ...)
    model: type[Record] = create_model(
        name, __base__=Record, __doc__=doc, __module__=__name__, **fields
    )
    return model


# --- errors and probes -----------------------------------------------------------------------


class ErrorDetail(Record):
    """What went wrong."""

    code: str = Field(description="machine-readable, e.g. not_found")
    message: str = Field(description="what went wrong and what to do")


class ErrorBody(Record):
    """The one error shape of the admin API."""

    error: ErrorDetail


class MisdirectedBody(Record):
    """A 421 of a shard: the error, and the shard that owns the bot."""

    error: ErrorDetail
    owner_shard: int = Field(description="the index of the shard that owns the bot", ge=0)


class Alive(Record):
    """``GET /healthz``."""

    status: Literal["alive"]


class Ready(Record):
    """``GET /readyz``: 200 when ready, 503 with the reason when not."""

    status: Literal["ready", "not ready"]
    detail: str


# --- bots ------------------------------------------------------------------------------------


class Bot(Record):
    """A bot as the API shows it: never its token, only ``123456:…``."""

    user_id: int
    bot_id: int
    token: str = Field(description="redacted: '123456:…'")
    handler: str
    rps: float | None
    autoreply_rules: int
    allowed_updates: list[str] = Field(description="the update types getUpdates asks for")
    mode: str = Field(description="'polling' or 'webhook' (dormant while idle)")
    source: str = Field(description="'config', 'api', or 'unknown' while it is being removed")
    state: ActorState
    status: BotStatus
    supervisor_state: str | None
    suspended_reason: str | None
    webhook_registration_error: str | None = Field(
        description="a webhook bot whose setWebhook failed: the Bot API's error (redacted), "
        "while it is tried again with a backoff (the bot is degraded meanwhile); null once "
        "registered, and for polling bots"
    )
    circuit_state: BreakerState


class BotList(Record):
    """``GET /admin/bots``: one page (or all) of the bots that match the filters."""

    count: int = Field(description="bots in this answer")
    matching: int = Field(description="bots that match the filters after the cursor")
    next_cursor: int | None = Field(
        description="pass as cursor for the next page; null on the last one"
    )
    bots: list[Bot]


class Removed(Record):
    """``DELETE /admin/bots/{user_id}``."""

    user_id: int
    removed: bool
    history_kept: bool


# --- health ----------------------------------------------------------------------------------


class BotHealth(Record):
    """One bot's live health, named as the ``bot_health_metrics`` columns where they exist."""

    user_id: int
    status: BotStatus
    actor_state: ActorState
    supervisor_state: str | None
    suspended_reason: str | None
    total_requests: int
    successful_requests: int
    failed_requests: int
    error_rate: float
    avg_response_time_ms: float | None = Field(description="EMA; null until one was measured")
    consecutive_failures: int = Field(description="the calls' run; getUpdates not included")
    polling_status: BotStatus = Field(description="from getUpdates alone")
    call_status: BotStatus = Field(description="from every other call, with the breaker")
    polls: int = Field(description="getUpdates outcomes since the daemon started")
    poll_failures: int
    poll_consecutive_failures: int
    last_poll_at: float | None = Field(description="the last successful getUpdates")
    rate_limited_count: int
    chat_errors: int
    last_success_at: float | None
    last_failure_at: float | None
    last_error: str | None
    webhook_registration_error: str | None = Field(
        description="why the webhook bot's setWebhook failed, while it is retried; null "
        "once registered"
    )
    circuit_state: BreakerState
    handled_updates: int
    replies_sent: int
    dead_letters: int
    ambiguous_sends: int
    handler_errors: int


class UnhealthyBots(Record):
    """``GET /admin/system/bot-health/unhealthy``."""

    generated_at: float
    count: int
    bots: list[BotHealth]


class PersistNow(Record):
    """``POST /admin/system/bot-health/persist-now``."""

    rows_written: int


class History(Record):
    """One bot's stored snapshots since ``since`` (at most the newest 10,000)."""

    user_id: int
    hours: int
    since: float
    count: int
    truncated: bool
    rows: list[HealthRow]


class UnhealthyHistory(Record):
    """Stored snapshots that were not healthy since ``since`` (at most the newest 10,000)."""

    hours: int
    since: float
    count: int
    truncated: bool
    rows: list[HealthRow]


class RetryReset(Record):
    """``POST /admin/system/retry-statistics/reset``: how many bots' counters were zeroed."""

    reset: int


# The type checker sees any Record for the derived models; at run time they are real classes
# with the records' fields (see flattened).
if TYPE_CHECKING:

    class _Derived(Record):
        def __init__(self, **fields: Any) -> None: ...

    HealthSummary = _Derived
    Breaker = _Derived
    BotRetry = _Derived
else:
    HealthSummary = flattened(
        "HealthSummary",
        FleetSummary,
        {"generated_at": float},
        "Fleet health totals from the latest report of every bot.",
    )
    Breaker = flattened(
        "Breaker",
        BreakerStatistics,
        {"user_id": int},
        "One bot's circuit breaker; times are wall-clock epoch seconds.",
    )
    BotRetry = flattened("BotRetry", RetryStatistics, {"user_id": int}, "One bot's retry counters.")


class BreakerSummary(Record):
    """``GET /admin/system/circuit-breakers/summary``."""

    total: int
    by_state: dict[str, int]
    not_closed: list[Breaker]


class RetrySummary(Record):
    """``GET /admin/system/retry-statistics``."""

    overall: RetryStatistics
    bots: list[BotRetry]
