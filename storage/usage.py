"""Usage analytics in SQLite: exact counters per bot per hour, day and month (UTC).

Three tables (migrations 6 and 7). ``usage_counts`` holds one integer per (grain, bot,
period, metric). Distinct chats and users per (grain, bot, period, kind) are exact while
small and a sketch beyond: ``usage_members`` holds one row per member until a bucket has more
than :data:`EXACT_MEMBERS`, then the set is turned into an Apache DataSketches HLL sketch
(:data:`SKETCH_LG_K`, HLL_4, serialized compact) in ``usage_sketches`` and its rows deleted.
Every increment is written to its hour, its day and its month in the same transaction, so a
day is exactly the sum of its hours, a day's sketch is the union of its hours' (HLL union is
register-wise max: adding the same members to the day equals merging the hours' sketches),
and roll-ups never re-read raw data; reads over several buckets (top tenants by users) merge
sketches with a union. A period is keyed by its start in epoch seconds (UTC).

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
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasketches
import sqlite_utils

__all__ = [
    "EXACT_MEMBERS",
    "GRAINS",
    "LATENCY_BOUNDS_MS",
    "OUTCOMES",
    "SKETCH_LG_K",
    "TOP_METRICS",
    "UsageRow",
    "grain_seconds",
    "iso_utc",
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
# At 64 the exact rows (about 35 bytes each on disk, plus the period index) cost as much as a
# dense lg_k 12 HLL_4 sketch (2,088 bytes), so no bucket costs more than ~2 KiB per kind;
# and a sketch of a few hundred members is still in its coupon list (measured: exact up to
# 256), so crossing the threshold does not make the figure jump.
EXACT_MEMBERS = 64
# lg_k 12 (4,096 registers): relative standard error 1.04/sqrt(4096) = 1.6% (a single
# bucket's HIP estimate: 1.3%); docs/OPERATIONS.md states the bound.
SKETCH_LG_K = 12
_SKETCH_TYPE = datasketches.tgt_hll_type.HLL_4
_LATENCY_PREFIX = "reply_latency_ms.le_"
_HOUR, _DAY = 3_600, 86_400


def _bound_name(bound: float) -> str:
    return "inf" if math.isinf(bound) else str(int(bound))


_LATENCY_METRICS = tuple(_LATENCY_PREFIX + _bound_name(b) for b in LATENCY_BOUNDS_MS)


def latency_metric(seconds: float) -> str:
    """The metric of the bucket a reply latency of ``seconds`` falls in."""
    index = bisect.bisect_left(LATENCY_BOUNDS_MS, seconds * 1000.0)
    return _LATENCY_METRICS[min(index, len(_LATENCY_METRICS) - 1)]


def latency_quantile(counts: Mapping[str, int], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the ``q`` quantile of the reply latencies in
    ``counts`` (``inf`` above the last finite bound), or ``None`` when there were none."""
    buckets = [counts.get(name, 0) for name in _LATENCY_METRICS]
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

_UPSERT = (
    "INSERT INTO usage_counts (grain, user_id, period, metric, value) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (grain, user_id, period, metric) DO UPDATE SET value = value + excluded.value"
)
_MEMBER = (
    "INSERT OR IGNORE INTO usage_members (grain, user_id, period, kind, member) "
    "VALUES (?, ?, ?, ?, ?)"
)
_BUCKET = "grain = ? AND user_id = ? AND period = ? AND kind = ?"
_MEMBER_COUNT = f"SELECT COUNT(*) FROM usage_members WHERE {_BUCKET}"
_MEMBER_LIST = f"SELECT member FROM usage_members WHERE {_BUCKET}"
_MEMBER_DELETE = f"DELETE FROM usage_members WHERE {_BUCKET}"
_SKETCH_GET = f"SELECT sketch FROM usage_sketches WHERE {_BUCKET}"
_SKETCH_SET = f"UPDATE usage_sketches SET sketch = ? WHERE {_BUCKET}"
# The sketches of one bot's buckets of every grain (one (grain, period) pair a grain).
_SKETCHES_OF = (
    "SELECT grain, kind, sketch FROM usage_sketches WHERE user_id = ? AND ("
    + " OR ".join(["(grain = ? AND period = ?)"] * len(GRAINS))
    + ")"
)
_SKETCH_ADD = (
    "INSERT INTO usage_sketches (grain, user_id, period, kind, sketch) VALUES (?, ?, ?, ?, ?)"
)


def add_counts(
    conn: sqlite3.Connection, user_id: int, counts: Mapping[str, int], at: float
) -> None:
    """Add ``counts`` to the bot's hour, day and month holding ``at`` (in the caller's
    transaction)."""
    if not counts:
        return
    rows: list[tuple[str, int, int, str, int]] = []
    for grain in GRAINS:
        start = period_start(grain, at)
        rows.extend((grain, user_id, start, metric, value) for metric, value in counts.items())
    conn.executemany(_UPSERT, rows)


def _new_sketch(members: Iterable[int]) -> Any:
    sketch = datasketches.hll_sketch(SKETCH_LG_K, _SKETCH_TYPE)
    for member in members:
        sketch.update(member)
    return sketch


def sketch_estimate(blob: bytes) -> int:
    """The distinct count a stored sketch estimates, rounded."""
    return round(float(datasketches.hll_sketch.deserialize(blob).get_estimate()))


def add_members(
    conn: sqlite3.Connection, user_id: int, members: Iterable[tuple[str, int]], at: float
) -> None:
    """Remember distinct ``(kind, member)`` pairs (kind ``chat`` or ``user``) for the bot's
    hour, day and month holding ``at``: as rows while a bucket has at most
    :data:`EXACT_MEMBERS` of a kind, else in its sketch (HLL updates are idempotent, so a
    member added twice is counted once either way).

    This runs for every stored update, so it costs few statements: one look-up for the
    sketches of all six buckets, one insert of every exact bucket's members, and the buckets'
    counts only when that insert added a member (members seen before change no count)."""
    by_kind: dict[str, set[int]] = {}
    for kind, member in members:
        by_kind.setdefault(kind, set()).add(member)
    if not by_kind:
        return
    starts = [(grain, period_start(grain, at)) for grain in GRAINS]
    sketches: dict[tuple[str, str], bytes] = {
        (grain, kind): blob
        for grain, kind, blob in conn.execute(_SKETCHES_OF, (user_id, *_flat(starts)))
    }
    exact: list[tuple[str, int, int, str]] = []
    for grain, start in starts:
        for kind, unique in by_kind.items():
            key = (grain, user_id, start, kind)
            found = sketches.get((grain, kind))
            if found is None:
                exact.append(key)
                continue
            sketch = datasketches.hll_sketch.deserialize(found)
            for member in unique:
                sketch.update(member)
            conn.execute(_SKETCH_SET, (bytes(sketch.serialize_compact()), *key))
    rows = [(*key, member) for key in exact for member in by_kind[key[3]]]
    if not rows or conn.executemany(_MEMBER, rows).rowcount < 1:
        return  # no new member: every count is what it was (at most the limit)
    for key in exact:
        (count,) = conn.execute(_MEMBER_COUNT, key).fetchone()
        if count > EXACT_MEMBERS:
            _to_sketch(conn, key)


def _flat(pairs: Iterable[tuple[str, int]]) -> list[str | int]:
    return [value for pair in pairs for value in pair]


def _to_sketch(conn: sqlite3.Connection, key: tuple[str, int, int, str]) -> None:
    """Turn a bucket's exact member rows into its sketch (same transaction)."""
    rows = conn.execute(_MEMBER_LIST, key).fetchall()
    sketch = _new_sketch(member for (member,) in rows)
    conn.execute(_SKETCH_ADD, (*key, bytes(sketch.serialize_compact())))
    conn.execute(_MEMBER_DELETE, key)


def convert_large_member_sets(conn: sqlite3.Connection) -> int:
    """Every bucket above :data:`EXACT_MEMBERS` members into its sketch (migration 7)."""
    keys = conn.execute(
        "SELECT grain, user_id, period, kind FROM usage_members "
        "GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > ?",
        (EXACT_MEMBERS,),
    ).fetchall()
    for key in keys:
        _to_sketch(conn, tuple(key))
    return len(keys)


def delete_older(
    conn: sqlite3.Connection, hour_cutoff: float, rollup_cutoff: float, batch_size: int
) -> int:
    """Retention: up to ``batch_size`` rows of each table whose period started before its
    grain's cutoff (hours: ``hour_cutoff``; days and months: ``rollup_cutoff``)."""
    deleted = 0
    keys = {
        "usage_counts": "metric",
        "usage_members": "kind, member",
        "usage_sketches": "kind",
    }
    for table, rest in keys.items():
        for grain, cutoff in (
            ("hour", hour_cutoff),
            ("day", rollup_cutoff),
            ("month", rollup_cutoff),
        ):
            key = f"grain, user_id, period, {rest}"
            deleted += conn.execute(
                f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} "
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
    distinct: dict[tuple[int | None, int], dict[str, int]] = {}
    # Per bot and bucket a kind is either exact rows or a sketch; the fleet's figure is the
    # sum of its bots' (a person using two bots counts in each).
    for owner, period, kind, count in db.execute(
        f"SELECT {key}, kind, COUNT(*) FROM usage_members WHERE {where} GROUP BY 1, 2, 3",
        params,
    ).fetchall():
        row(owner, period)
        kinds = distinct.setdefault((owner, period), {})
        kinds[kind] = kinds.get(kind, 0) + int(count)
    for owner, period, kind, blob in db.execute(
        f"SELECT {key}, kind, sketch FROM usage_sketches WHERE {where}", params
    ).fetchall():
        row(owner, period)
        kinds = distinct.setdefault((owner, period), {})
        kinds[kind] = kinds.get(kind, 0) + sketch_estimate(blob)
    result = []
    for (owner, period), found in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0] or 0)):
        kinds = distinct.get((owner, period), {})
        result.append(
            UsageRow(
                owner,
                grain,
                found.period,
                found.counts,
                kinds.get("chat", 0),
                kinds.get("user", 0),
            )
        )
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
    for owner, member in db.execute(
        "SELECT user_id, member FROM usage_members WHERE grain = 'hour' AND kind = 'user' "
        "AND period >= ?",
        (since,),
    ).fetchall():
        exact.setdefault(int(owner), set()).add(int(member))
    unions: dict[int, Any] = {}
    for owner, blob in db.execute(
        "SELECT user_id, sketch FROM usage_sketches WHERE grain = 'hour' AND kind = 'user' "
        "AND period >= ?",
        (since,),
    ).fetchall():
        union = unions.get(int(owner))
        if union is None:
            union = unions[int(owner)] = datasketches.hll_union(SKETCH_LG_K)
        union.update(datasketches.hll_sketch.deserialize(blob))
    values: dict[int, int] = {owner: len(members) for owner, members in exact.items()}
    for owner, union in unions.items():
        union.update(_new_sketch(exact.get(owner, ())))
        values[owner] = round(float(union.get_estimate()))
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:limit]


def total(counts: Mapping[str, int], prefix: str) -> int:
    """The sum of the metrics starting with ``prefix``."""
    return sum(v for k, v in counts.items() if k.startswith(prefix))


def metric_names(rows: Sequence[UsageRow]) -> list[str]:
    """Every metric named in ``rows``, sorted."""
    return sorted({name for row in rows for name in row.counts})
