"""Usage analytics in SQLite: exact counters per bot per hour, day and month (UTC).

One row per (grain, bot, period) in ``usage_buckets`` (migration 10): ``counts``, a JSON
object of integers keyed by metric id (names in ``usage_metrics``; the view ``usage_counts``
shows them as one row per metric, for reading and for SQL by hand), and the bucket's distinct
chats and users, exact (``chats``/``users``: the member ids packed as 64-bit integers) while a
kind has at most :data:`EXACT_MEMBERS`, then an Apache DataSketches HLL sketch
(:data:`SKETCH_LG_K`, HLL_4, serialized compact) in ``chats_hll``/``users_hll``. A row a bucket,
rather than a row a metric and a row a member, makes usage about seven times smaller on disk
(docs/BENCHMARKS.md). Every increment is written to its hour, its day and its month in the
same transaction, so a day is exactly the sum of its hours, a day's sketch is the union of
its hours' (HLL union is register-wise max: adding the same members to the day equals merging
the hours' sketches), and roll-ups never re-read raw data; reads over several buckets (top
tenants by users) merge sketches with a union. A period is keyed by its start in epoch
seconds (UTC).

Metric names (stable; docs/OPERATIONS.md "Usage analytics" defines each):

- ``updates.<type>``: updates first stored in the inbox, by update type (``other`` for a
  type botvisor does not know), counted by the inbox's own INSERT, so a redelivered update
  is never counted twice and a crash loses no count;
- ``calls.<method>.<outcome>``: Bot API call attempts, ``outcome`` one of :data:`OUTCOMES`;
- ``sends``: successful ``send*`` calls; ``dead_letters``; ``handler_errors``;
- ``reply_latency_ms.le_<bound>``: replies whose latency (update stored → its first reply
  sent) fell in the bucket ending at ``bound`` ms (``inf`` for the last);
- ``webhook.accepted`` / ``webhook.rejected``: webhook deliveries.

Storage never reads a clock: every function takes the wall-clock time it counts at.
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasketches
import sqlite_utils

__all__ = [
    "EXACT_MEMBERS",
    "GRAINS",
    "LATENCY_BOUNDS_MS",
    "LATENCY_BOUNDS_S",
    "LATENCY_METRICS",
    "OUTCOMES",
    "SKETCH_LG_K",
    "TOP_METRICS",
    "UsageRow",
    "grain_seconds",
    "iso_utc",
    "latency_index",
    "latency_metric",
    "latency_quantile",
    "period_start",
]

GRAINS: tuple[str, ...] = ("hour", "day", "month")
# The fixed reply-latency buckets (upper bounds, ms); the last bucket is everything above.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    math.inf,
)
OUTCOMES: tuple[str, ...] = (
    "ok",
    "retried",
    "throttled",
    "failed_transient_network",
    "failed_permanent",
    "failed_chat",
    "failed_unknown",
)
TOP_METRICS: tuple[str, ...] = ("updates", "sends", "users")
# Distinct members kept exactly per bucket and kind; one more turns the set into a sketch.
# At 64 the exact set (8 bytes a member) is a quarter of a dense lg_k 12 HLL_4 sketch (2,088
# bytes), so no bucket costs more than ~2 KiB per kind; and a sketch of a few hundred members
# is still in its coupon list (measured: exact up to 256), so crossing the threshold does not
# make the figure jump.
EXACT_MEMBERS = 64
# lg_k 12 (4,096 registers): relative standard error 1.04/sqrt(4096) = 1.6% (a single
# bucket's HIP estimate: 1.3%); docs/OPERATIONS.md states the bound.
SKETCH_LG_K = 12
_SKETCH_TYPE = datasketches.tgt_hll_type.HLL_4
_LATENCY_PREFIX = "reply_latency_ms.le_"
_HOUR, _DAY = 3_600, 86_400


def _bound_name(bound: float) -> str:
    return "inf" if math.isinf(bound) else str(int(bound))


# The bucket names, and the bounds in seconds (what the hot path measures; the Prometheus
# histogram uses the same edges, so a latency falls in the same bucket in both).
LATENCY_METRICS: tuple[str, ...] = tuple(
    _LATENCY_PREFIX + _bound_name(b) for b in LATENCY_BOUNDS_MS
)
LATENCY_BOUNDS_S: tuple[float, ...] = tuple(b / 1000.0 for b in LATENCY_BOUNDS_MS)


def latency_index(seconds: float) -> int:
    """The index (into ``LATENCY_METRICS``) of the bucket a reply latency of ``seconds`` falls
    in; the last bound is infinite, so every latency has one (NaN: the first)."""
    return bisect.bisect_left(LATENCY_BOUNDS_S, seconds)


def latency_metric(seconds: float) -> str:
    """The metric of the bucket a reply latency of ``seconds`` falls in."""
    return LATENCY_METRICS[latency_index(seconds)]


def latency_quantile(counts: Mapping[str, int], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the ``q`` quantile of the reply latencies in
    ``counts`` (``inf`` above the last finite bound), or ``None`` when there were none."""
    buckets = [counts.get(name, 0) for name in LATENCY_METRICS]
    total = sum(buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bound, count in zip(LATENCY_BOUNDS_MS, buckets, strict=True):
        seen += count
        if seen >= rank:
            return bound
    return LATENCY_BOUNDS_MS[-1]  # pragma: no cover - seen reaches total


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of ``days`` since 1970-01-01 (proleptic Gregorian; H. Hinnant's
    algorithm, so no clock or datetime is involved)."""
    z = days + 719_468
    era = (z if z >= 0 else z - 146_096) // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def period_start(grain: str, at: float) -> int:
    """The start (epoch seconds, UTC) of the hour, day or month holding ``at``."""
    t = math.floor(at)
    if grain == "hour":
        return t - t % _HOUR
    if grain == "day":
        return t - t % _DAY
    if grain == "month":
        y, m, _d = _civil(t // _DAY)
        return _days_from_civil(y, m, 1) * _DAY
    raise ValueError(f"grain must be one of {', '.join(GRAINS)}, got {grain!r}")


def grain_seconds(grain: str) -> int:
    """The nominal length of a grain (a month counts 31 days), for range checks."""
    return {"hour": _HOUR, "day": _DAY, "month": 31 * _DAY}[grain]


def next_period(grain: str, start: int) -> int:
    """The start of the period after the one starting at ``start``."""
    if grain != "month":
        return start + grain_seconds(grain)
    y, m, _d = _civil(start // _DAY)
    y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return _days_from_civil(y, m, 1) * _DAY


def iso_utc(epoch: float) -> str:
    """``epoch`` (whole seconds) as ISO-8601 UTC: ``2026-12-02T11:00:00Z``."""
    t = math.floor(epoch)
    y, m, d = _civil(t // _DAY)
    s = t % _DAY
    return f"{y:04d}-{m:02d}-{d:02d}T{s // _HOUR:02d}:{s % _HOUR // 60:02d}:{s % 60:02d}Z"


@dataclass(frozen=True)
class UsageRow:
    """One bucket of usage: of one bot (``user_id``) or of the fleet (``user_id`` None)."""

    user_id: int | None
    grain: str
    period: int  # start, epoch seconds UTC
    counts: dict[str, int] = field(default_factory=dict)
    distinct_chats: int = 0
    distinct_users: int = 0


# --- jobs, run by the writer in its thread ---------------------------------------------------

# A bucket's counts are a JSON object keyed by metric id (``usage_metrics``). A new bucket
# takes the batch's object as it is; an existing one has each of the batch's keys added to in
# place by ``json_set`` (cheaper than merging two objects with ``json_each``).
_INSERT_COUNTS = (
    "INSERT INTO usage_buckets (grain, user_id, period, counts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (grain, user_id, period) DO UPDATE SET counts = json_set(counts, "
)


def _add_counts_sql(keys: Sequence[int]) -> str:
    """The upsert adding to the metric ids ``keys`` (integers: nothing from outside)."""
    paths = ", ".join(
        f"'$.\"{key:d}\"', coalesce(json_extract(counts, '$.\"{key:d}\"'), 0) + ?" for key in keys
    )
    return f"{_INSERT_COUNTS}{paths})"


_BUCKET = "grain = ? AND user_id = ? AND period = ?"
_KINDS = ("chat", "user")
_MEMBERS_GET = f"SELECT chats, chats_hll, users, users_hll FROM usage_buckets WHERE {_BUCKET}"
_MEMBERS_SET = (
    "INSERT INTO usage_buckets (grain, user_id, period, chats, chats_hll, users, users_hll) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (grain, user_id, period) DO UPDATE SET "
    "chats = excluded.chats, chats_hll = excluded.chats_hll, "
    "users = excluded.users, users_hll = excluded.users_hll"
)


def metric_ids(conn: sqlite3.Connection, names: Iterable[str]) -> dict[str, int]:
    """The ids of metric ``names`` in ``usage_metrics``, new names given the next id (in the
    caller's transaction: a rolled-back name takes its id with it)."""
    wanted = set(names)
    if not wanted:
        return {}
    marks = ", ".join("?" * len(wanted))
    lookup = f"SELECT name, id FROM usage_metrics WHERE name IN ({marks})"
    ids = dict(conn.execute(lookup, tuple(wanted)).fetchall())
    if len(ids) < len(wanted):  # a name seen for the first time (rare: the set is small)
        conn.executemany(
            "INSERT OR IGNORE INTO usage_metrics (name) VALUES (?)",
            [(name,) for name in sorted(wanted - ids.keys())],
        )
        ids = dict(conn.execute(lookup, tuple(wanted)).fetchall())
    return ids


def add_counts(
    conn: sqlite3.Connection, user_id: int, counts: Mapping[str, int], at: float
) -> None:
    """Add ``counts`` to the bot's hour, day and month holding ``at`` (in the caller's
    transaction)."""
    if not counts:
        return
    ids = metric_ids(conn, counts)
    pairs = sorted((ids[name], value) for name, value in counts.items())
    encoded = json.dumps({str(key): value for key, value in pairs}, separators=(",", ":"))
    values = [value for _key, value in pairs]
    conn.executemany(
        _add_counts_sql([key for key, _value in pairs]),
        [(grain, user_id, period_start(grain, at), encoded, *values) for grain in GRAINS],
    )


def pack_members(members: Iterable[int]) -> bytes:
    """An exact member set as stored: sorted signed 64-bit little-endian integers."""
    ordered = sorted(members)
    return struct.pack(f"<{len(ordered)}q", *ordered)


def unpack_members(blob: bytes | None) -> list[int]:
    """The members of a stored exact set."""
    if not blob:
        return []
    return list(struct.unpack(f"<{len(blob) // 8}q", blob))


def new_sketch(members: Iterable[int]) -> Any:
    """An empty (or filled) HLL sketch of the stored kind."""
    sketch = datasketches.hll_sketch(SKETCH_LG_K, _SKETCH_TYPE)
    for member in members:
        sketch.update(member)
    return sketch


def sketch_bytes(sketch: Any) -> bytes:
    return bytes(sketch.serialize_compact())


def sketch_estimate(blob: bytes) -> int:
    """The distinct count a stored sketch estimates, rounded."""
    return round(float(datasketches.hll_sketch.deserialize(blob).get_estimate()))


def _merge_members(
    exact: bytes | None, sketch: bytes | None, new: set[int]
) -> tuple[bytes | None, bytes | None]:
    """A kind's (exact, sketch) after adding ``new``: exact while at most
    :data:`EXACT_MEMBERS`, else a sketch (HLL updates are idempotent)."""
    if sketch is not None:
        merged = datasketches.hll_sketch.deserialize(sketch)
        for member in new:
            merged.update(member)
        return None, sketch_bytes(merged)
    members = set(unpack_members(exact))
    if new <= members:
        return exact, None
    members |= new
    if len(members) > EXACT_MEMBERS:
        return None, sketch_bytes(new_sketch(members))
    return pack_members(members), None


def add_members(
    conn: sqlite3.Connection, user_id: int, members: Iterable[tuple[str, int]], at: float
) -> None:
    """Remember distinct ``(kind, member)`` pairs (kind ``chat`` or ``user``) for the bot's
    hour, day and month holding ``at``: exact while a bucket has at most
    :data:`EXACT_MEMBERS` of a kind, else in its sketch."""
    by_kind: dict[str, set[int]] = {}
    for kind, member in members:
        if kind not in _KINDS:
            raise ValueError(f"member kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        by_kind.setdefault(kind, set()).add(member)
    if not by_kind:
        return
    for grain in GRAINS:
        key = (grain, user_id, period_start(grain, at))
        found = conn.execute(_MEMBERS_GET, key).fetchone()
        chats, chats_hll, users, users_hll = found if found is not None else (None,) * 4
        if "chat" in by_kind:
            chats, chats_hll = _merge_members(chats, chats_hll, by_kind["chat"])
        if "user" in by_kind:
            users, users_hll = _merge_members(users, users_hll, by_kind["user"])
        if found is not None and (chats, chats_hll, users, users_hll) == tuple(found):
            continue  # nobody new: leave the page alone
        conn.execute(_MEMBERS_SET, (*key, chats, chats_hll, users, users_hll))


def delete_older(
    conn: sqlite3.Connection, hour_cutoff: float, rollup_cutoff: float, batch_size: int
) -> int:
    """Retention: up to ``batch_size`` buckets of each grain whose period started before its
    grain's cutoff (hours: ``hour_cutoff``; days and months: ``rollup_cutoff``)."""
    deleted = 0
    for grain, cutoff in (("hour", hour_cutoff), ("day", rollup_cutoff), ("month", rollup_cutoff)):
        deleted += conn.execute(
            "DELETE FROM usage_buckets WHERE (grain, user_id, period) IN ("
            "SELECT grain, user_id, period FROM usage_buckets "
            "WHERE grain = ? AND period < ? LIMIT ?)",
            (grain, cutoff, batch_size),
        ).rowcount
    return deleted


# --- queries, run on a read connection -------------------------------------------------------


def read_usage(
    db: sqlite_utils.Database,
    grain: str,
    start: float,
    end: float,
    user_id: int | None,
    per_bot: bool,
) -> list[UsageRow]:
    """Buckets of ``grain`` whose period starts in ``[start, end)``: of ``user_id``, or of
    every bot one row each (``per_bot``), or of the fleet summed."""
    where = "grain = ? AND period >= ? AND period < ?"
    params: tuple[object, ...] = (grain, start, end)
    if user_id is not None:
        where += " AND user_id = ?"
        params += (user_id,)
    key = "user_id, period" if per_bot or user_id is not None else "NULL, period"
    rows: dict[tuple[int | None, int], UsageRow] = {}

    def row(owner: int | None, period: int) -> UsageRow:
        found = rows.get((owner, period))
        if found is None:
            found = rows[(owner, period)] = UsageRow(owner, grain, int(period))
        return found

    for owner, period, metric, value in db.execute(
        f"SELECT {key}, metric, SUM(value) FROM usage_counts WHERE {where} GROUP BY 1, 2, 3",
        params,
    ).fetchall():
        row(owner, period).counts[metric] = int(value)
    # Per bot and bucket a kind is either an exact set or a sketch; the fleet's figure is the
    # sum of its bots' (a person using two bots counts in each).
    distinct: dict[tuple[int | None, int], list[int]] = {}
    for owner, period, chats, chats_hll, users, users_hll in db.execute(
        f"SELECT {key}, length(chats) / 8, chats_hll, length(users) / 8, users_hll "
        f"FROM usage_buckets WHERE {where}",
        params,
    ).fetchall():
        row(owner, period)
        figures = distinct.setdefault((owner, period), [0, 0])
        figures[0] += sketch_estimate(chats_hll) if chats_hll is not None else int(chats or 0)
        figures[1] += sketch_estimate(users_hll) if users_hll is not None else int(users or 0)
    result = []
    for (owner, period), found in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0] or 0)):
        chats_count, users_count = distinct.get((owner, period), (0, 0))
        result.append(UsageRow(owner, grain, found.period, found.counts, chats_count, users_count))
    return result


def read_top(
    db: sqlite_utils.Database, metric: str, since: float, limit: int
) -> list[tuple[int, int]]:
    """The ``limit`` bots with the most ``metric`` (see :data:`TOP_METRICS`) in the hours
    starting at or after ``since``: ``(user_id, value)``, largest first."""
    if metric == "users":
        return _top_users(db, since, limit)
    if metric in ("updates", "sends"):
        match = "metric LIKE 'updates.%'" if metric == "updates" else "metric = 'sends'"
        sql = (
            "SELECT user_id, SUM(value) FROM usage_counts WHERE grain = 'hour' AND "
            f"{match} AND period >= ? GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT ?"
        )
    else:
        raise ValueError(f"metric must be one of {', '.join(TOP_METRICS)}, got {metric!r}")
    return [(int(u), int(v)) for u, v in db.execute(sql, (since, limit)).fetchall()]


def _top_users(db: sqlite_utils.Database, since: float, limit: int) -> list[tuple[int, int]]:
    """Distinct users per bot over the hours since ``since``: exact while no hour of the bot
    has a sketch, else the union of its hours' sketches and exact members (estimate)."""
    exact: dict[int, set[int]] = {}
    unions: dict[int, Any] = {}
    for owner, users, blob in db.execute(
        "SELECT user_id, users, users_hll FROM usage_buckets WHERE grain = 'hour' "
        "AND period >= ? AND (users IS NOT NULL OR users_hll IS NOT NULL)",
        (since,),
    ).fetchall():
        owner = int(owner)
        exact.setdefault(owner, set()).update(unpack_members(users))
        if blob is not None:
            union = unions.get(owner)
            if union is None:
                union = unions[owner] = datasketches.hll_union(SKETCH_LG_K)
            union.update(datasketches.hll_sketch.deserialize(blob))
    values: dict[int, int] = {owner: len(members) for owner, members in exact.items()}
    for owner, union in unions.items():
        union.update(new_sketch(exact.get(owner, ())))
        values[owner] = round(float(union.get_estimate()))
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:limit]


def total(counts: Mapping[str, int], prefix: str) -> int:
    """The sum of the metrics starting with ``prefix``."""
    return sum(v for k, v in counts.items() if k.startswith(prefix))


def metric_names(rows: Sequence[UsageRow]) -> list[str]:
    """Every metric named in ``rows``, sorted."""
    return sorted({name for row in rows for name in row.counts})
