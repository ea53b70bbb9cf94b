"""Usage analytics benchmark: what counting costs, and what the counts take on disk.

(a) The hot path on the event loop: per update, the counts a handled update makes in its
    bot's ``UsageMeter`` (a getUpdates share, its sendMessage, the message sent, its reply
    latency) and the ``take()`` its done mark carries. Target: ≤ 5 µs per update.
(b) The writer's side (a worker thread, not the event loop): the extra statements of a
    100-update inbox batch (its counts by type and distinct chats and users, hour, day and
    month) and of a done mark's usage, per update.
(a') The same with the daemon's Prometheus instruments (``FleetInstruments``: the update's
    type, the calls by method and outcome with their latency histogram, the reply latency
    histogram), and the instruments alone: µs per update, µs per Bot API call, and what one
    scrape's ``statistics()`` costs (cumulative buckets of every method called).
(c) Bytes on disk for 10,000 bots × 30 days at the demo's traffic (3 chats a bot, a message
    every 10 s in each: 1,080 updates an hour a bot, each answered): a sample of bots is
    written hour by hour through the real job functions (distinct chats and users exact at
    this traffic: 3 and 5 a bot, below the sketch threshold), the file measured after VACUUM, and
    scaled to 10,000 bots (rows are per bot, so size grows linearly with bots).
(d) Sketch-sized traffic: bots with more distinct users an hour than ``EXACT_MEMBERS`` (64),
    so every hour's, day's and month's bucket crosses into its HLL sketch: µs per update on
    the loop (the type and sender read from a realistic update, the counts and instruments)
    and in the writer (counts by type and distinct chats/users of 20-update inbox batches,
    from users each writing twice an hour), over hours so buckets start exact and cross.

Run ``python -m bench.usage [--quick]``; ``run()`` returns the figures and ``markdown()``
renders them for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from actors import FleetInstruments
from actors.lanes import usage_kind
from actors.usage import UsageMeter
from storage import migrate, open_database
from storage.usage import EXACT_MEMBERS, add_counts, add_members

__all__ = ["markdown", "run"]

T0 = 1_796_169_600.0  # 2026-12-02T00:00:00Z
HOUR = 3600.0
TARGET_US = 5.0
FLEET_BOTS = 10_000
DAYS = 30
UPDATES_PER_HOUR = 1_080  # 3 chats × 0.1 messages/s
POLLS_PER_HOUR = 120  # the demo's long polls return early under traffic


def _reply_latencies(updates: int) -> list[float]:
    """The reply latencies the loops observe, made before the clock starts (what is timed is
    the counting, not making up its inputs)."""
    return [0.05 + (n % 7) * 0.1 for n in range(updates)]


def _hot_path(updates: int, repeats: int) -> dict[str, float]:
    per_update = []
    for _ in range(repeats):
        meter = UsageMeter()
        replies = _reply_latencies(updates)
        started = time.perf_counter()
        for reply in replies:
            meter.count_call("getUpdates", "ok")
            meter.count_call("sendMessage", "ok")
            meter.count_reply_latency(reply)
            meter.take()
        per_update.append((time.perf_counter() - started) / updates * 1e6)
    return {"median": statistics.median(per_update), "max": max(per_update)}


def _handled(meter: UsageMeter, instruments: FleetInstruments | None, updates: int) -> float:
    """µs per update of (a)'s counts, with the instruments' update count if given."""
    sends = [0.04 + (n % 9) * 0.03 for n in range(updates)]
    replies = _reply_latencies(updates)
    started = time.perf_counter()
    for send, reply in zip(sends, replies, strict=True):
        if instruments is not None:
            instruments.count_update("message")
        meter.count_call("getUpdates", "ok")
        meter.count_call("sendMessage", "ok", send)
        meter.count_reply_latency(reply)
        meter.take()
    return (time.perf_counter() - started) / updates * 1e6


def _instrumented(updates: int, repeats: int) -> dict[str, float]:
    """(a'): the hot path of (a) with the fleet's instruments, and the instruments alone.
    With and without run back to back in each repeat, so their difference (the instruments'
    own cost) holds on a machine whose other load varies."""
    per_update, extra, per_call, scrape_ms = [], [], [], []
    methods = ("sendMessage", "answerCallbackQuery", "editMessageText", "sendPhoto", "getMe")
    for _ in range(repeats):
        without = _handled(UsageMeter(), None, updates)
        instruments = FleetInstruments()
        with_them = _handled(UsageMeter(instruments), instruments, updates)
        per_update.append(with_them)
        extra.append(with_them - without)
        calls = [(methods[n % 5], 0.04 + (n % 9) * 0.03) for n in range(updates)]
        started = time.perf_counter()
        for method, seconds in calls:
            instruments.count_call(method, "ok", seconds)
        per_call.append((time.perf_counter() - started) / updates * 1e6)
        started = time.perf_counter()
        for _scrape in range(20):
            instruments.statistics()
        scrape_ms.append((time.perf_counter() - started) / 20 * 1e3)
    return {
        "per_update_median": statistics.median(per_update),
        "per_update_max": max(per_update),
        "extra_median": statistics.median(extra),
        "per_call_median": statistics.median(per_call),
        "per_call_max": max(per_call),
        "scrape_ms": statistics.median(scrape_ms),
    }


def _message(update_id: int, user: int) -> dict[str, Any]:
    """A private-chat text message as the Bot API sends it."""
    person = {"id": user, "is_bot": False, "first_name": "Ada", "username": f"user{user}"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": {**person, "language_code": "en"},
            "chat": {**person, "type": "private"},
            "date": 1_800_000_000,
            "text": f"question {update_id}",
        },
    }


def _sketch_sized(work: Path, bots: int, hours: int, users: int) -> dict[str, Any]:
    """(d): ``users`` distinct users a bot an hour, each writing twice, in 20-update batches."""
    batch = 20
    updates = [_message(n, 500_000 + n % users) for n in range(2 * users)]
    instruments = FleetInstruments()
    meter = UsageMeter(instruments)
    loop_us = []
    for _ in range(5):
        started = time.perf_counter()
        for n, update in enumerate(updates):
            kind, _sender = usage_kind(update)
            instruments.count_update(kind)
            meter.count_call("sendMessage", "ok", 0.04 + (n % 9) * 0.03)
            meter.count_reply_latency(0.05 + (n % 7) * 0.1)
            if n % batch == 0:
                meter.count_call("getUpdates", "ok")
            meter.take()
        loop_us.append((time.perf_counter() - started) / len(updates) * 1e6)
    db = open_database(work / "sketch.db")
    migrate(db)
    conn = db.conn
    written = 0
    started = time.perf_counter()
    for hour in range(hours):
        for bot in range(bots):
            user_id = 1_000 + bot
            # Each hour its own users, so each hour's buckets start exact and cross over.
            base = 500_000 + hour * users
            for first in range(0, 2 * users, batch):
                at = T0 + hour * HOUR + first
                senders = [base + (first + i) % users for i in range(batch)]
                conn.execute("BEGIN")
                add_counts(conn, user_id, {"updates.message": batch}, at)
                add_members(
                    conn,
                    user_id,
                    [("chat", u) for u in senders] + [("user", u) for u in senders],
                    at,
                )
                conn.execute("COMMIT")
                written += batch
    writer_us = (time.perf_counter() - started) / written * 1e6
    (sketches,) = conn.execute(
        "SELECT COUNT(chats_hll) + COUNT(users_hll) FROM usage_buckets"
    ).fetchone()
    db.close()
    return {
        "bots": bots,
        "hours": hours,
        "users_per_hour": users,
        "updates": written,
        "sketches": sketches,
        "loop_us": statistics.median(loop_us),
        "writer_us": writer_us,
    }


def _writer_side(work: Path, batches: int) -> dict[str, float]:
    db = open_database(work / "writer.db")
    migrate(db)
    conn = db.conn
    started = time.perf_counter()
    for b in range(batches):
        at = T0 + b * 10.0
        conn.execute("BEGIN")
        add_counts(conn, 1001, {"updates.message": 90, "updates.callback_query": 10}, at)
        add_members(
            conn, 1001, [("chat", c) for c in range(60)] + [("user", u) for u in range(70)], at
        )
        conn.execute("COMMIT")
    inbox_us = (time.perf_counter() - started) / (batches * 100) * 1e6
    usage = {"calls.sendMessage.ok": 1, "sends": 1, "reply_latency_ms.le_250": 1}
    started = time.perf_counter()
    for b in range(batches):
        conn.execute("BEGIN")
        for u in range(100):
            add_counts(conn, 1001, usage, T0 + b * 10.0 + u * 0.1)
        conn.execute("COMMIT")
    done_us = (time.perf_counter() - started) / (batches * 100) * 1e6
    db.close()
    return {"inbox_per_update_us": inbox_us, "done_per_update_us": done_us}


def _disk(work: Path, bots: int) -> dict[str, float]:
    path = work / "disk.db"
    db = open_database(path)
    migrate(db)
    conn = db.conn
    per_hour = {
        "updates.message": UPDATES_PER_HOUR - 30,
        "updates.edited_message": 20,
        "updates.callback_query": 10,
        "calls.getUpdates.ok": POLLS_PER_HOUR,
        "calls.sendMessage.ok": UPDATES_PER_HOUR,
        "calls.sendMessage.retried": 12,
        "calls.sendMessage.failed_transient_network": 12,
        "sends": UPDATES_PER_HOUR,
        "reply_latency_ms.le_100": 700,
        "reply_latency_ms.le_250": 300,
        "reply_latency_ms.le_1000": 70,
        "reply_latency_ms.le_5000": 10,
    }
    started = time.perf_counter()
    for hour in range(DAYS * 24):
        at = T0 + hour * HOUR
        conn.execute("BEGIN")
        for bot in range(bots):
            user_id = 1_000 + bot
            add_counts(conn, user_id, per_hour, at)
            # 3 chats a bot (one a group of 3 members): 3 chats, 5 users.
            add_members(
                conn,
                user_id,
                [("chat", 111), ("chat", 112), ("chat", -4001)]
                + [("user", u) for u in (111, 112, 201, 202, 203)],
                at,
            )
        conn.execute("COMMIT")
    build = time.perf_counter() - started
    conn.execute("VACUUM")
    db.close()
    size = os.path.getsize(path)
    return {
        "sample_bots": bots,
        "build_seconds": build,
        "sample_bytes": size,
        "fleet_bytes": size / bots * FLEET_BOTS,
        "bytes_per_bot_day": size / bots / DAYS,
    }


def run(
    quick: bool = False, *, directory: str | None = None, sample_bots: int | None = None
) -> dict[str, Any]:
    """Run the three measurements and return their figures (see ``markdown``)."""
    with tempfile.TemporaryDirectory(prefix="botvisor-bench-", dir=directory) as tmp:
        work = Path(tmp)
        hot = _hot_path(20_000 if quick else 200_000, 3 if quick else 7)
        instrumented = _instrumented(20_000 if quick else 200_000, 3 if quick else 7)
        writer = _writer_side(work, 50 if quick else 500)
        disk = _disk(work, sample_bots or (10 if quick else 100))
        sketch = _sketch_sized(work, 2 if quick else 20, 2 if quick else 3, 500)
    return {
        "hot_path_us": hot,
        "instrumented": instrumented,
        "writer": writer,
        "disk": disk,
        "sketch": sketch,
    }


def markdown(results: dict[str, Any]) -> str:
    """The figures of ``run`` as a Markdown section."""
    hot, writer, disk = results["hot_path_us"], results["writer"], results["disk"]
    inst, sketch = results["instrumented"], results["sketch"]
    verdict = "met" if hot["median"] <= TARGET_US else "**missed**"
    inst_verdict = "met" if inst["per_update_median"] <= TARGET_US else "**missed**"
    return "\n".join(
        [
            "### Usage analytics",
            "",
            f"- Counting on the event loop: median **{hot['median']:.2f} µs** per update "
            f"(max {hot['max']:.2f}) for a handled update's counts and its done mark's "
            f"`take()`; target ≤ {TARGET_US:g} µs: {verdict}.",
            f"- With the Prometheus instruments as well (update type, calls by method and "
            f"outcome, call and reply latency histograms): median "
            f"**{inst['per_update_median']:.2f} µs** per update (max "
            f"{inst['per_update_max']:.2f}), of which the instruments "
            f"{inst['extra_median']:.2f} µs (the same loop without them, run alternately); "
            f"target ≤ {TARGET_US:g} µs: {inst_verdict}. One "
            f"Bot API call's observation alone: {inst['per_call_median']:.2f} µs (max "
            f"{inst['per_call_max']:.2f}); one scrape's `statistics()`: "
            f"{inst['scrape_ms']:.2f} ms.",
            f"- In the writer's thread: {writer['inbox_per_update_us']:.2f} µs per update for "
            "the counts and distinct chats/users of a 100-update inbox batch, "
            f"{writer['done_per_update_us']:.2f} µs per done mark's usage (hour, day and "
            "month each).",
            f"- On disk, 10,000 bots × {DAYS} days at the demo's traffic: "
            f"**{disk['fleet_bytes'] / 2**20:,.0f} MiB** "
            f"({disk['bytes_per_bot_day'] / 1024:.1f} KiB a bot a day; measured on "
            f"{disk['sample_bots']} bots after VACUUM and scaled, rows being per bot).",
            f"- Sketch-sized traffic ({sketch['users_per_hour']} distinct users a bot an hour, "
            f"above the {EXACT_MEMBERS} kept exactly; {sketch['bots']} bots × "
            f"{sketch['hours']} h, {sketch['updates']:,} updates, {sketch['sketches']} "
            f"sketches): **{sketch['loop_us']:.2f} µs** per update on the loop, "
            f"**{sketch['writer_us']:.2f} µs** per update in the writer (20-update batches).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.usage", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(markdown(run(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
