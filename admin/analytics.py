"""``/admin/analytics``: usage per tenant per hour, day and month, as JSON and as CSV.

Every number is read back from the store's usage tables (``storage.usage``); the definitions
of the metrics and the CSV columns are in docs/OPERATIONS.md "Usage analytics".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actors import UPDATE_TYPES, USER_ID_RULE
from admin.context import context_of
from admin.errors import ApiError
from admin.operations import Reply, operation
from admin.records import Record, record_response
from admin.requests import RequestModel, UserIdText, parse_query
from storage import UsageRow, grain_seconds, iso_utc, latency_quantile, period_start

__all__ = ["CSV_COLUMNS", "analytics_routes", "usage_csv_row"]

Bucket = Literal["hour", "day", "month"]
# Without ``from``: the last day of hours, month of days, year of months.
_DEFAULT_SPAN = {"hour": 24 * 3600, "day": 30 * 86_400, "month": 365 * 86_400}
TOP_HOURS_MAX = 35 * 24
_TYPES = (*UPDATE_TYPES, "other")


class UsageQuery(RequestModel):
    """``?user_id=&from=&to=&bucket=`` of the usage series."""

    user_id: UserIdText | None = Field(
        None, description=f"one bot; without it, the fleet's: must {USER_ID_RULE}"
    )
    start: AwareDatetime | None = Field(
        None,
        alias="from",
        description="ISO-8601 time with a zone (2026-12-01T00:00:00Z); buckets starting at "
        "or after it. Default: `to` minus a day (hour), 30 days (day) or 365 days (month)",
    )
    end: AwareDatetime | None = Field(
        None,
        alias="to",
        description="ISO-8601 time with a zone; buckets starting before it. Default: now",
    )
    bucket: Bucket = Field("hour", description="hour, day or month (UTC)")


class TopQuery(RequestModel):
    """``?metric=&hours=&limit=`` of the busiest tenants."""

    metric: Literal["updates", "sends", "users"] = Field(
        "updates", description="updates received, messages sent or distinct users"
    )
    hours: int = Field(
        24, ge=1, le=TOP_HOURS_MAX, description=f"a whole number from 1 to {TOP_HOURS_MAX}"
    )
    limit: int = Field(20, ge=1, le=1000, description="a whole number from 1 to 1000")


class UsageBucket(Record):
    """One bucket of one bot's usage (or of the fleet's, ``user_id`` null)."""

    user_id: int | None
    bucket: str
    start: str  # ISO-8601 UTC
    updates: int
    updates_by_type: dict[str, int]
    api_calls: int  # attempts, every outcome
    api_calls_by_method: dict[str, dict[str, int]]  # method -> outcome -> attempts
    sends: int
    dead_letters: int
    handler_errors: int
    distinct_chats: int
    distinct_users: int
    replies_timed: int
    # The upper bound of the bucket holding the quantile; null without replies, or above
    # the last finite bucket (300 s).
    reply_latency_p50_ms: float | None
    reply_latency_p95_ms: float | None
    reply_latency_buckets: dict[str, int]  # "le_<ms>" -> replies
    webhook_accepted: int
    webhook_rejected: int


class Usage(Record):
    """``GET /admin/analytics/usage``: a time series of buckets, oldest first."""

    user_id: int | None
    bucket: str
    start: str
    end: str
    count: int
    rows: list[UsageBucket]
    totals: UsageBucket  # the whole range merged (distinct counts: the sum of the buckets')


class TopTenant(Record):
    user_id: int
    value: int


class Top(Record):
    """``GET /admin/analytics/top``: the busiest tenants, largest first."""

    metric: str
    hours: int
    since: str
    tenants: list[TopTenant]


def _quantile(counts: Mapping[str, int], q: float) -> float | None:
    value = latency_quantile(counts, q)
    return None if value is None or value == float("inf") else value


def usage_bucket(row: UsageRow) -> UsageBucket:
    """The record of one stored bucket."""
    by_type: dict[str, int] = {}
    by_method: dict[str, dict[str, int]] = {}
    latency: dict[str, int] = {}
    for metric, value in row.counts.items():
        group, _, rest = metric.partition(".")
        if group == "updates":
            by_type[rest] = value
        elif group == "calls":
            method, _, outcome = rest.rpartition(".")
            by_method.setdefault(method, {})[outcome] = value
        elif group == "reply_latency_ms":
            latency[rest] = value
    return UsageBucket(
        user_id=row.user_id,
        bucket=row.grain,
        start=iso_utc(row.period),
        updates=sum(by_type.values()),
        updates_by_type=dict(sorted(by_type.items())),
        api_calls=sum(
            n for outcomes in by_method.values() for o, n in outcomes.items() if o != "retried"
        ),
        api_calls_by_method=dict(sorted(by_method.items())),
        sends=row.counts.get("sends", 0),
        dead_letters=row.counts.get("dead_letters", 0),
        handler_errors=row.counts.get("handler_errors", 0),
        distinct_chats=row.distinct_chats,
        distinct_users=row.distinct_users,
        replies_timed=sum(latency.values()),
        reply_latency_p50_ms=_quantile(row.counts, 0.5),
        reply_latency_p95_ms=_quantile(row.counts, 0.95),
        reply_latency_buckets=latency,
        webhook_accepted=row.counts.get("webhook.accepted", 0),
        webhook_rejected=row.counts.get("webhook.rejected", 0),
    )


def _merged(rows: list[UsageRow], user_id: int | None, grain: str, start: int) -> UsageRow:
    counts: dict[str, int] = {}
    for row in rows:
        for metric, value in row.counts.items():
            counts[metric] = counts.get(metric, 0) + value
    return UsageRow(
        user_id,
        grain,
        start,
        counts,
        sum(r.distinct_chats for r in rows),
        sum(r.distinct_users for r in rows),
    )


def _range(request: Request) -> tuple[UsageQuery, int, int]:
    """The parsed query and its ``[start, end)`` in epoch seconds, or a 422."""
    ctx = context_of(request)
    query = parse_query(request, UsageQuery)
    grain = query.bucket
    end = ctx.wall_clock() + 1 if query.end is None else _epoch(query.end)
    start = end - _DEFAULT_SPAN[grain] if query.start is None else _epoch(query.start)
    if start >= end:
        raise ApiError(422, "from must be before to: give an earlier from or a later to")
    retention_days = ctx.usage_hour_retention_days if grain == "hour" else ctx.usage_retention_days
    kept_since = ctx.wall_clock() - retention_days * 86_400 - grain_seconds(grain)
    if start < kept_since:
        raise ApiError(
            422,
            f"from is older than {grain} rows are kept ({retention_days:g} days, "
            f"storage.usage_{'hour_' if grain == 'hour' else ''}retention_days): give a "
            f"from after {iso_utc(kept_since)}" + (" or use bucket=day" if grain == "hour" else ""),
        )
    # A bucket that starts before ``start`` but holds it is included.
    return query, period_start(grain, start), int(end)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


@operation(
    "Usage of one bot, or of the fleet, per hour, day or month (UTC)",
    {200: Usage},
    query=UsageQuery,
    tag="analytics",
)
async def usage(request: Request) -> Response:
    ctx = context_of(request)
    query, start, end = _range(request)
    if query.user_id is not None:
        ctx.fleet.check_owned(query.user_id)  # another shard's bot: 421
    rows = await ctx.store.usage(query.bucket, start, end, user_id=query.user_id)
    records = [usage_bucket(row) for row in rows]
    totals = usage_bucket(_merged(rows, query.user_id, query.bucket, start))
    return record_response(
        Usage(
            user_id=query.user_id,
            bucket=query.bucket,
            start=iso_utc(start),
            end=iso_utc(end),
            count=len(records),
            rows=records,
            totals=totals,
        )
    )


CSV_COLUMNS: tuple[str, ...] = (
    "bucket",
    "start",
    "user_id",
    "updates",
    *(f"updates_{kind}" for kind in _TYPES),
    "api_calls",
    "api_calls_ok",
    "api_calls_retried",
    "api_calls_throttled",
    "api_calls_failed",
    "sends",
    "dead_letters",
    "handler_errors",
    "distinct_chats",
    "distinct_users",
    "replies_timed",
    "reply_latency_p50_ms",
    "reply_latency_p95_ms",
    "webhook_accepted",
    "webhook_rejected",
)


def usage_csv_row(record: UsageBucket) -> list[str]:
    """One CSV line of :data:`CSV_COLUMNS`."""
    outcomes: dict[str, int] = {}
    for by_outcome in record.api_calls_by_method.values():
        for outcome, n in by_outcome.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
    failed = sum(n for o, n in outcomes.items() if o.startswith("failed_"))
    values: list[object] = [
        record.bucket,
        record.start,
        record.user_id,
        record.updates,
        *(record.updates_by_type.get(kind, 0) for kind in _TYPES),
        record.api_calls,
        outcomes.get("ok", 0),
        outcomes.get("retried", 0),
        outcomes.get("throttled", 0),
        failed,
        record.sends,
        record.dead_letters,
        record.handler_errors,
        record.distinct_chats,
        record.distinct_users,
        record.replies_timed,
        "" if record.reply_latency_p50_ms is None else f"{record.reply_latency_p50_ms:g}",
        "" if record.reply_latency_p95_ms is None else f"{record.reply_latency_p95_ms:g}",
        record.webhook_accepted,
        record.webhook_rejected,
    ]
    return [str(v) for v in values]


@operation(
    "Usage as CSV for billing: a header row, then one row per bot per bucket",
    {200: Reply("the usage", media_type="text/csv", schema={"type": "string"})},
    query=UsageQuery,
    tag="analytics",
)
async def usage_csv(request: Request) -> Response:
    ctx = context_of(request)
    query, start, end = _range(request)
    if query.user_id is not None:
        ctx.fleet.check_owned(query.user_id)  # another shard's bot: 421
    rows = await ctx.store.usage(query.bucket, start, end, user_id=query.user_id, per_bot=True)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(usage_csv_row(usage_bucket(row)))
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8")


@operation("The busiest tenants over the last hours", {200: Top}, query=TopQuery, tag="analytics")
async def top(request: Request) -> Response:
    ctx = context_of(request)
    query = parse_query(request, TopQuery)
    since = period_start("hour", ctx.wall_clock() - (query.hours - 1) * 3600)
    found = await ctx.store.usage_top(query.metric, since, query.limit)
    return record_response(
        Top(
            metric=query.metric,
            hours=query.hours,
            since=iso_utc(since),
            tenants=[TopTenant(user_id=u, value=v) for u, v in found],
        )
    )


def analytics_routes() -> list[BaseRoute]:
    """The routes, for ``create_app``."""
    return [
        Route("/admin/analytics/usage", usage),
        Route("/admin/analytics/usage.csv", usage_csv),
        Route("/admin/analytics/top", top),
    ]
