"""The fleet gateway's merging: several shards' answers to one fleet read made into the answer
one process holding every bot would give (``admin.gateway``).

Each function takes the JSON bodies of the shards that answered (in shard order) and returns
one body of the same shape. Counts are summed, ratios are recomputed from the summed counts
(never averaged), and lists are merged in the order one shard gives them, with a key that
ties never reach (the user_id, then the shard's own order), so the same answers always merge
into the same document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from storage import latency_quantile

__all__ = [
    "Json",
    "add_counts",
    "merge_bot_pages",
    "merge_breaker_summaries",
    "merge_health_summaries",
    "merge_retry_statistics",
    "merge_top",
    "merge_unhealthy",
    "merge_unhealthy_history",
    "merge_usage",
    "merge_usage_csv",
    "summed",
]

Json = dict[str, Any]

# One history answer holds at most this many rows, the newest (``admin.app``'s limit).
HISTORY_ROW_LIMIT = 10_000


def add_counts(parts: Iterable[Mapping[str, Any]]) -> Json:
    """Whole numbers summed key by key, nested objects too (``{"ok": 1}`` + ``{"ok": 2}``)."""
    total: Json = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, Mapping):
                total[key] = add_counts([total.get(key, {}), value])
            elif isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


def summed(key: str) -> Callable[[list[Json]], Json]:
    """A merger of answers that are one count (``{"reset": 3}``)."""

    def merge(parts: list[Json]) -> Json:
        return {key: sum(int(part[key]) for part in parts)}

    return merge


def _by_user(items: Iterable[Mapping[str, Any]]) -> list[Any]:
    """Items of several shards in user_id order (a stable sort keeps a shard's own order among
    equal ids, which one fleet never has)."""
    return sorted(items, key=lambda item: int(item["user_id"]))


def merge_health_summaries(parts: list[Json]) -> Json:
    """``GET /admin/system/bot-health/summary``: counts summed; the error rate and the average
    response time (weighted by requests, as one shard weighs its bots) from the sums."""
    merged = add_counts(parts)
    total = merged["total_requests"]
    weighted = sum(p["avg_response_time_ms"] * p["total_requests"] for p in parts)
    merged["error_rate"] = merged["failed_requests"] / total if total else 0.0
    merged["avg_response_time_ms"] = weighted / total if total else 0.0
    merged["generated_at"] = max(p["generated_at"] for p in parts)
    return merged


def merge_unhealthy(parts: list[Json]) -> Json:
    bots = _by_user(bot for part in parts for bot in part["bots"])
    return {
        "generated_at": max(p["generated_at"] for p in parts),
        "count": len(bots),
        "bots": bots,
    }


def merge_unhealthy_history(parts: list[Json], limit: int = HISTORY_ROW_LIMIT) -> Json:
    """Rows oldest first, as one shard gives them; the newest ``limit`` kept and
    ``truncated`` when any shard left rows out or the merge did."""
    rows = sorted(
        (row for part in parts for row in part["rows"]),
        key=lambda row: (row["recorded_at"], row["user_id"]),
    )
    kept = rows[-limit:]
    return {
        "hours": parts[0]["hours"],
        "since": min(p["since"] for p in parts),
        "count": len(kept),
        "truncated": len(rows) > limit or any(p["truncated"] for p in parts),
        "rows": kept,
    }


def merge_breaker_summaries(parts: list[Json]) -> Json:
    return {
        "total": sum(p["total"] for p in parts),
        "by_state": add_counts(p["by_state"] for p in parts),
        "not_closed": _by_user(b for p in parts for b in p["not_closed"]),
    }


def merge_retry_statistics(parts: list[Json]) -> Json:
    overall = add_counts(p["overall"] for p in parts)
    resolved = overall["recovered"] + overall["exhausted"]
    overall["recovery_rate"] = 1.0 if resolved == 0 else overall["recovered"] / resolved
    return {"overall": overall, "bots": _by_user(b for p in parts for b in p["bots"])}


def merge_bot_pages(parts: list[Json], limit: int | None) -> Json:
    """``GET /admin/bots``, with one shard's paging contract: each shard answered the same
    query with its first ``limit`` matching bots after the cursor, so the fleet's first
    ``limit`` are among them. ``matching`` is the fleet's; ``next_cursor`` is the last bot
    shown when more match, and the next page's query is answered the same way."""
    seen: dict[int, Any] = {}
    for part in parts:
        for bot in part["bots"]:
            seen.setdefault(int(bot["user_id"]), bot)
    ordered = [seen[user_id] for user_id in sorted(seen)]
    matching = sum(int(p["matching"]) for p in parts)
    page = ordered if limit is None else ordered[:limit]
    more = len(page) < matching
    return {
        "count": len(page),
        "matching": matching,
        "next_cursor": page[-1]["user_id"] if more and page else None,
        "bots": page,
    }


def _merge_buckets(buckets: list[Json]) -> Json:
    """One usage bucket of several shards: every count summed, the latency quantiles read
    again from the summed latency histogram."""
    first = buckets[0]
    merged = add_counts(buckets)
    merged["user_id"] = first["user_id"]
    merged["bucket"] = first["bucket"]
    merged["start"] = first["start"]
    latency = {
        f"reply_latency_ms.{name}": count
        for name, count in merged.get("reply_latency_buckets", {}).items()
    }
    for key, q in (("reply_latency_p50_ms", 0.5), ("reply_latency_p95_ms", 0.95)):
        value = latency_quantile(latency, q)
        merged[key] = None if value is None or value == float("inf") else value
    merged.setdefault("reply_latency_buckets", {})
    return {key: merged[key] for key in first}


def merge_usage(parts: list[Json]) -> Json:
    """``GET /admin/analytics/usage`` of the fleet: the buckets of one start merged, oldest
    first; the totals merged the same way (distinct counts are sums, as each shard's are)."""
    by_start: dict[str, list[Json]] = {}
    for part in parts:
        for row in part["rows"]:
            by_start.setdefault(row["start"], []).append(row)
    rows = [_merge_buckets(by_start[start]) for start in sorted(by_start)]
    return {
        "user_id": parts[0]["user_id"],
        "bucket": parts[0]["bucket"],
        "start": min(p["start"] for p in parts),
        "end": max(p["end"] for p in parts),
        "count": len(rows),
        "rows": rows,
        "totals": _merge_buckets([p["totals"] for p in parts]),
    }


def merge_top(parts: list[Json], limit: int) -> Json:
    """The busiest tenants of every shard, largest first (then by user_id, as a shard orders
    them), the first ``limit``."""
    tenants = sorted(
        (t for p in parts for t in p["tenants"]), key=lambda t: (-t["value"], t["user_id"])
    )
    return {
        "metric": parts[0]["metric"],
        "hours": parts[0]["hours"],
        "since": min(p["since"] for p in parts),
        "tenants": tenants[:limit],
    }


def merge_usage_csv(texts: list[str]) -> str:
    """The shards' CSV documents as one: the header once, then every shard's rows, ordered by
    bucket start and then user_id (the columns ``start`` and ``user_id``)."""
    header = ""
    rows: list[tuple[str, int, str]] = []
    for text in texts:
        lines = text.split("\r\n")
        header = header or lines[0]
        columns = lines[0].split(",")
        start, user = columns.index("start"), columns.index("user_id")
        for line in lines[1:]:
            if line:
                cells = line.split(",")
                rows.append((cells[start], int(cells[user] or 0), line))
    rows.sort(key=lambda row: (row[0], row[1]))
    return "".join(f"{line}\r\n" for line in [header, *(row[2] for row in rows)])
