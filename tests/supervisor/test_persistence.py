"""Persistence end to end in process: the real daemon on the simulated Bot API, MockClock.

Snapshot cadence, retention, the history endpoints' hours range, persist-now, graceful
shutdown's final state and restore, and ``botvisor migrate``. Every time asserted is exact
virtual time (the harness's wall clock reads ``EPOCH`` when Trio's reads 0).
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors.simulator import FaultProfile, SimulatedBotApi, SimulatedTransport
from storage import (
    MIGRATIONS,
    SCHEMA_VERSION,
    BotCounters,
    HealthRow,
    StorageConfig,
    Store,
    migrate,
    open_database,
    run_inline,
)
from supervisor import Config, ConfigError, parse_config
from supervisor.cli import migrate_command
from supervisor.clock import anchored_wall_clock
from supervisor.daemon import Daemon, DaemonHandle
from tests.harness import EPOCH, admin_client, bot_token, make_config, running_fleet

DAY = 86_400.0


# --- helpers ---------------------------------------------------------------------------------


@asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[Store]:
    """The database file opened on its own, as a second daemon would (inline SQLite)."""
    store = Store(path, offload=run_inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            await store.stop()


def storage(path: Path, **settings: Any) -> StorageConfig:
    return StorageConfig(path=str(path), **settings)


def row(user_id: int, recorded_at: float, status: str = "healthy") -> HealthRow:
    return HealthRow(
        user_id=user_id,
        recorded_at=recorded_at,
        status=status,
        total_requests=10,
        successful_requests=9,
        failed_requests=1,
        error_rate=0.1,
        avg_response_time_ms=12.5,
        consecutive_failures=0,
        circuit_state="closed",
        circuit_failure_count=1,
        retry_attempts=2,
        rate_limited_count=0,
        last_success_at=recorded_at,
        last_failure_at=None,
        last_error=None,
    )


async def recorded_times(store: Store, user_id: int) -> list[float]:
    """When the bot's snapshots were taken, as offsets from EPOCH."""
    return [r.recorded_at - EPOCH for r in await store.history(user_id, 0.0)]


def with_handlers(handlers: dict[int, str]) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        bots = tuple(
            b.model_copy(update={"handler": handlers.get(b.user_id, b.handler)})
            for b in config.bots
        )
        return config.model_copy(update={"bots": bots})

    return configure


def db_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """A raw read of the file, independent of the Store (the daemon has stopped)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --- snapshot cadence ------------------------------------------------------------------------


async def test_a_snapshot_of_every_bot_each_persist_interval_and_one_at_shutdown(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    async with running_fleet(db, [1, 2, 3], storage=storage(db, persist_interval=60)) as fleet:
        await trio.sleep(179)
        for uid in (1, 2, 3):
            assert await recorded_times(fleet.handle.store, uid) == [60, 120]
        await trio.sleep(21)
        for uid in (1, 2, 3):
            assert await recorded_times(fleet.handle.store, uid) == [60, 120, 180]
        stats = fleet.handle.metrics.statistics()
        assert (stats.snapshots_written, stats.snapshot_rows_written) == (3, 9)
        assert stats.last_snapshot_at == EPOCH + 180
    # Shut down at 200: a final snapshot records that instant, and nothing is written twice.
    assert trio.current_time() == 200
    async with open_store(db) as store:
        for uid in (1, 2, 3):
            assert await recorded_times(store, uid) == [60, 120, 180, 200]


async def test_the_cadence_is_kept_whatever_the_interval(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    async with running_fleet(db, [1], storage=storage(db, persist_interval=3600)) as fleet:
        await trio.sleep(3 * 3600 + 1)
        assert await recorded_times(fleet.handle.store, 1) == [3600, 7200, 10800]


@pytest.mark.parametrize("interval", [59, 59.9, 3600.5, 3601, 0, -60])
def test_a_persist_interval_outside_60_to_3600_is_refused_by_name(interval: float) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"storage": {"persist_interval": interval}}, {})
    assert "storage.persist_interval" in str(caught.value)
    assert "60 to 3600" in str(caught.value)


@pytest.mark.parametrize("interval", [60, 300, 3600])
def test_a_persist_interval_from_60_to_3600_is_accepted(interval: int) -> None:
    config = parse_config({"storage": {"persist_interval": interval}}, {})
    assert config.storage.persist_interval == interval


async def test_persist_now_writes_one_row_per_bot_and_answers_how_many(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    async with running_fleet(db, [1, 2, 3, 4], storage=storage(db, persist_interval=300)) as fleet:
        await trio.sleep(42)
        async with admin_client(fleet) as admin:
            answer = await admin.post("/admin/system/bot-health/persist-now")
            assert answer.status_code == 200
            assert answer.json() == {"rows_written": 4}
            for uid in (1, 2, 3, 4):
                assert await recorded_times(fleet.handle.store, uid) == [42]
            # It does not move the cadence: the periodic snapshot still comes at 300.
            await trio.sleep(300 - 42 + 1)
            for uid in (1, 2, 3, 4):
                assert await recorded_times(fleet.handle.store, uid) == [42, 300]


async def test_each_snapshot_replaces_the_bots_delivery_counters(tmp_path: Path) -> None:
    async with open_store(tmp_path / "p.db") as store:
        first = BotCounters(1, EPOCH, 5, 4, 1, 0, 1)
        assert await store.insert_snapshots([row(1, EPOCH)], [first]) == 1
        later = BotCounters(1, EPOCH + 60, 9, 7, 1, 1, 1)
        other = BotCounters(2, EPOCH + 60, 1, 1, 0, 0, 0)
        assert await store.insert_snapshots([row(1, EPOCH + 60)], [later, other]) == 1
        assert await store.latest_counters() == {1: later, 2: other}
        assert await store.snapshot_count(1) == 2


# --- retention -------------------------------------------------------------------------------


async def test_retention_deletes_rows_older_than_retention_days_and_keeps_the_boundary(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The boundary: a row recorded exactly ``retention_days`` ago is kept; it goes at the
    first retention check after it has become older than that (checks every
    ``retention_check_interval`` from the start)."""
    db = tmp_path / "p.db"
    ghost = 99  # a removed bot: its history is kept, and retention applies to it too
    cutoff_at_0 = EPOCH - DAY
    offsets = [-1.0, 0.0, 599.0, 600.0, 601.0, 1200.0]
    async with open_store(db) as store:
        await store.insert_snapshots([row(ghost, cutoff_at_0 + offset) for offset in offsets])

    def kept(store: Store) -> Any:
        async def read() -> list[float]:
            return [r.recorded_at - cutoff_at_0 for r in await store.history(ghost, 0.0)]

        return read()

    settings = storage(db, retention_days=1, retention_check_interval=600)
    async with running_fleet(db, [1], storage=settings) as fleet:
        store = fleet.handle.store
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == 0
        assert await kept(store) == [0.0, 599.0, 600.0, 601.0, 1200.0]
        await trio.sleep(599)
        assert await kept(store) == [0.0, 599.0, 600.0, 601.0, 1200.0]
        await trio.sleep(2)  # the check at 600
        assert await kept(store) == [600.0, 601.0, 1200.0]
        await trio.sleep(600)  # the check at 1200
        assert await kept(store) == [1200.0]
        assert fleet.handle.metrics.statistics().retention_rows_deleted == 5
        # The fleet's own fresh snapshots are untouched.
        assert await recorded_times(store, 1) == [300, 600, 900, 1200]


# --- history endpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["history/1", "unhealthy-history"])
@pytest.mark.parametrize("hours", ["0", "169", "x", "1.5", "-1", ""])
async def test_hours_outside_1_to_168_is_a_422_naming_the_range(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, path: str, hours: str
) -> None:
    async with running_fleet(tmp_path / "p.db", [1]) as fleet, admin_client(fleet) as admin:
        answer = await admin.get(f"/admin/system/bot-health/{path}", params={"hours": hours})
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["code"] == "invalid_request"
        assert "hours" in error["message"]
        assert "1 to 168" in error["message"]


async def test_history_covers_exactly_the_last_hours_and_168_is_allowed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    # A removed bot's rows, placed around the one-hour boundary as seen at t=10.
    ghost = 99
    boundary = EPOCH + 10 - 3600
    async with open_store(db) as store:
        await store.insert_snapshots(
            [
                row(ghost, boundary - 0.5, "unhealthy"),
                row(ghost, boundary, "unhealthy"),
                row(ghost, boundary + 1, "healthy"),
            ]
        )
    async with (
        running_fleet(db, [1], storage=storage(db, persist_interval=60)) as fleet,
        admin_client(fleet) as admin,
    ):
        await trio.sleep(10)
        one = (await admin.get("/admin/system/bot-health/history/99?hours=1")).json()
        assert one["count"] == 2
        assert [r["recorded_at"] for r in one["rows"]] == [boundary, boundary + 1]
        week = (await admin.get("/admin/system/bot-health/history/99?hours=168")).json()
        assert week["count"] == 3
        unhealthy = (await admin.get("/admin/system/bot-health/unhealthy-history?hours=1")).json()
        assert [(r["user_id"], r["recorded_at"]) for r in unhealthy["rows"]] == [(ghost, boundary)]
        # The default is 24 hours.
        assert (await admin.get("/admin/system/bot-health/history/99")).json()["count"] == 3

        # A live bot, 61 minutes in: the last hour holds the snapshots from 120 to 3660.
        await trio.sleep(3690 - 10)
        live = (await admin.get("/admin/system/bot-health/history/1?hours=1")).json()
        times = [r["recorded_at"] - EPOCH for r in live["rows"]]
        assert times == [float(t) for t in range(120, 3661, 60)]
        assert (await admin.get("/admin/system/bot-health/history/2")).status_code == 404


# --- the inbox stays small ------------------------------------------------------------------


async def test_handled_updates_leave_the_inbox_on_the_snapshot_cadence(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    api = SimulatedBotApi(rng=random.Random(13))
    configure = with_handlers({2: "tests.handlers_for_tests:slow_echo"})
    inbox = "SELECT user_id, update_id, done_at IS NULL FROM inbox ORDER BY user_id, update_id"
    async with running_fleet(
        db, [1, 2], api=api, configure=configure, storage=storage(db, persist_interval=60)
    ) as fleet:
        ids = [api.send_user_message(fleet.tokens[1], 7, f"one {n}") for n in range(5)]
        slow = api.send_user_message(fleet.tokens[2], 8, "slow")  # handled from 0 to 100
        await trio.sleep(59)
        assert db_rows(db, inbox) == [(1, i, 0) for i in ids] + [(2, slow, 1)]
        await trio.sleep(2)
        # Pruned with the snapshot at 60: only the update still being handled is left.
        assert db_rows(db, inbox) == [(2, slow, 1)]
        assert fleet.handle.metrics.statistics().inbox_rows_pruned == 5
        await trio.sleep(60)
        assert db_rows(db, inbox) == []
        assert api.report().answered == 6


class CrashOnPoll(httpx.AsyncBaseTransport):
    """The simulated Bot API, except that once ``armed`` the next getUpdates answer crashes
    the bot actor (an unexpected error, not a Bot API failure: the supervisor restarts it)."""

    def __init__(self, api: SimulatedBotApi) -> None:
        self._inner = SimulatedTransport(api)
        self.armed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if self.armed and request.url.path.endswith("/getUpdates"):
            self.armed = False
            raise RuntimeError("an unexpected error inside the bot actor")
        return response


async def test_a_restarted_bot_does_not_handle_again_what_it_finished_before_its_crash(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Done marks are written without waiting; with a slow disk they may still be queued when
    the supervisor restarts a crashed bot, which must not take them for undone updates."""
    db = tmp_path / "p.db"
    api = SimulatedBotApi(rng=random.Random(14))
    token = bot_token(1)
    api.add_bot(token)
    transport = CrashOnPoll(api)

    async def slow_disk(fn: Callable[..., Any], *args: Any) -> Any:
        if args and isinstance(args[0], sqlite3.Connection):
            await trio.sleep(5)  # every write transaction takes 5 s; reads are quick
        return fn(*args)

    daemon = Daemon(
        make_config(db, [1], tokens={1: token}),
        wall_clock=anchored_wall_clock(EPOCH),
        rng=random.Random(14),
        transport=transport,
        store_offload=slow_disk,
    )
    async with trio.open_nursery() as nursery:
        handle: DaemonHandle = await nursery.start(daemon.run)
        for n in range(3):
            api.send_user_message(token, 7, f"once {n}")
        while api.report().answered < 3:  # noqa: ASYNC110
            await trio.sleep(0.1)
        # Handled and answered; their done marks are queued behind the slow disk. A new
        # message ends the long poll, whose answer crashes the actor.
        transport.armed = True
        api.send_user_message(token, 7, "after the crash")
        await trio.sleep(60)
        stats = handle.supervisor.statistics()
        assert stats.total_crashes == 1
        daemon.request_shutdown()
    report = api.report()
    assert report.answered == 4
    assert report.duplicates == 0, report.summary()


# --- graceful shutdown and restore -----------------------------------------------------------


async def test_graceful_shutdown_writes_the_final_snapshot_and_every_inbox_state(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    api = SimulatedBotApi(rng=random.Random(11))
    # Bot 2's handler takes 100 s: its update is cut off by the 5 s grace and must stay undone.
    configure = with_handlers({2: "tests.handlers_for_tests:slow_echo"})
    async with running_fleet(
        db, [1, 2], api=api, configure=configure, storage=storage(db, persist_interval=60)
    ) as fleet:
        ids = [api.send_user_message(fleet.tokens[1], 7, f"one {n}") for n in range(5)]
        slow = api.send_user_message(fleet.tokens[2], 8, "slow")
        await trio.sleep(30)
        assert fleet.handle.fleet.get(1).statistics().handled_updates == 5
        assert fleet.handle.fleet.get(2).statistics().handled_updates == 0
    stopped_at = trio.current_time()
    assert stopped_at == 30 + 5  # the grace period of the slow handler
    final = {uid: fleet.handle.fleet.get(uid).health_row(0.0) for uid in (1, 2)}

    async with open_store(db) as store:
        latest = await store.latest_snapshots()
        for uid in (1, 2):
            assert latest[uid].recorded_at == EPOCH + stopped_at
            assert dataclasses.replace(latest[uid], recorded_at=0) == dataclasses.replace(
                final[uid], recorded_at=0
            )
        # Every handled update is marked done; the one cut off is still waiting.
        assert await store.inbox_pending(1) == []
        assert [p["update_id"] for p in await store.inbox_pending(2)] == [slow]
        assert await store.load_offset(1) == max(ids) + 1
        assert await store.load_offset(2) == slow + 1
    done = db_rows(db, "SELECT COUNT(*) FROM inbox WHERE user_id = 1 AND done_at IS NOT NULL")
    assert done == [(5,)]


async def test_after_a_restart_the_summary_and_each_bot_show_the_same_numbers(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    api = SimulatedBotApi(rng=random.Random(12))
    api.set_faults(FaultProfile(latency=0.04, latency_jitter=0.02))
    health_fields = (
        "handled_updates",
        "replies_sent",
        "dead_letters",
        "total_requests",
        "successful_requests",
        "failed_requests",
        "avg_response_time_ms",
        "rate_limited_count",
        "circuit_state",
        "status",
    )

    def numbers(body: dict[str, Any]) -> dict[str, Any]:
        return {k: body[k] for k in health_fields}

    async with running_fleet(db, [1, 2], api=api) as fleet:
        for n in range(4):
            api.send_user_message(fleet.tokens[1], 5, f"before {n}")
        await trio.sleep(20)
        async with admin_client(fleet) as admin:
            before = {
                uid: numbers((await admin.get(f"/admin/system/bot-health/{uid}")).json())
                for uid in (1, 2)
            }
            summary_before = (await admin.get("/admin/system/bot-health/summary")).json()
    assert before[1]["successful_requests"] > 0
    assert before[1]["handled_updates"] == before[1]["replies_sent"] == 4
    assert before[1]["avg_response_time_ms"] > 0

    async with running_fleet(db, [1, 2], api=api) as fleet, admin_client(fleet) as admin:
        # Before any new call finishes: long polls last 30 s.
        await trio.sleep(1)
        for uid in (1, 2):
            after = numbers((await admin.get(f"/admin/system/bot-health/{uid}")).json())
            assert after == before[uid]
        summary_after = (await admin.get("/admin/system/bot-health/summary")).json()
        for key in (
            "total_bots",
            "by_status",
            "total_requests",
            "failed_requests",
            "handled_updates",
            "replies_sent",
        ):
            assert summary_after[key] == summary_before[key]
    assert api.report().duplicates == 0


async def test_a_fresh_daemon_counts_every_bot_before_their_first_report(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with running_fleet(tmp_path / "p.db", [1, 2, 3]) as fleet:
        assert trio.current_time() == 0  # reports come every 5 s
        summary = fleet.handle.metrics.summary()
        assert summary.total_bots == 3
        assert summary.by_status["healthy"] == 3


# --- botvisor migrate ------------------------------------------------------------------------


def _config_file(tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "botvisor.toml"
    path.write_text(f'[storage]\npath = "{db}"\n', encoding="utf-8")
    return path


def test_migrate_creates_then_reports_a_current_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.db"
    config = _config_file(tmp_path, db)
    assert migrate_command(config) == 0
    assert f"migrated schema 0 -> {SCHEMA_VERSION}" in capsys.readouterr().out
    assert db_rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert migrate_command(config) == 0
    assert f"schema {SCHEMA_VERSION} is current" in capsys.readouterr().out


async def test_migrate_upgrades_a_version_1_file_and_keeps_its_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.db"
    # The file as a version-1 daemon left it: its schema, with history in it.
    old = open_database(db)
    try:
        migrate(old, MIGRATIONS[:1])
        old.table("bot_health_metrics").insert_all(
            [dataclasses.asdict(row(1, EPOCH)), dataclasses.asdict(row(1, EPOCH + 60))]
        )
    finally:
        old.close()

    assert migrate_command(_config_file(tmp_path, db)) == 0
    assert f"migrated schema 1 -> {SCHEMA_VERSION}" in capsys.readouterr().out
    async with open_store(db) as store:
        assert await recorded_times(store, 1) == [0, 60]
        assert await store.latest_counters() == {}


def test_migrate_refuses_a_newer_database_and_leaves_it_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE future (x)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    assert migrate_command(_config_file(tmp_path, db)) == 1
    err = capsys.readouterr().err
    assert str(SCHEMA_VERSION + 1) in err
    assert "newer" in err
    assert db.read_bytes() == before


def test_migrate_refuses_a_file_that_is_not_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.db"
    db.write_bytes(b"not a database, but someone's notes\n" * 100)
    before = db.read_bytes()
    assert migrate_command(_config_file(tmp_path, db)) == 1
    assert "not a SQLite database" in capsys.readouterr().err
    assert db.read_bytes() == before
