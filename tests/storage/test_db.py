"""Opening the file and migrating its schema: what an operator's botvisor.db goes through."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest
import sqlite_utils
import trio

from storage import (
    HEALTH_COLUMNS,
    SCHEMA_VERSION,
    Migration,
    NotADatabaseError,
    SchemaTooNewError,
    StorageError,
    Store,
    migrate,
    migrate_file,
    open_database,
)
from storage.migrations import MIGRATIONS


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
    conn.close()
    return rows


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        conn.close()


def test_fresh_file_gets_the_whole_schema(db_path: Path) -> None:
    db = open_database(db_path)
    try:
        assert migrate(db) == (0, SCHEMA_VERSION)
        assert set(db.table_names()) == {
            "bots",
            "bot_health_metrics",
            "inbox",
            "offsets",
            "dead_letters",
            "bot_counters",
            "chat_migrations",
            "usage_buckets",
            "usage_metrics",
            "webhook_registrations",
        }
        columns = [c.name for c in db.table("bot_health_metrics").columns]
        assert columns == ["id", *HEALTH_COLUMNS]
        assert len(columns) == 17
        assert db.table("bot_health_metrics").pks == ["id"]
        indexes = {tuple(i.columns) for i in db.table("bot_health_metrics").indexes}
        assert indexes == {("user_id", "recorded_at"), ("status", "recorded_at"), ("recorded_at",)}
        assert db.table("inbox").pks == ["user_id", "update_id"]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # 1 = NORMAL
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()
    assert user_version(db_path) == SCHEMA_VERSION


def test_undone_inbox_lookup_uses_its_index(db_path: Path) -> None:
    db = open_database(db_path)
    try:
        migrate(db)
        plan = " ".join(
            str(row[3])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT update_id FROM inbox "
                "WHERE user_id = 1 AND done_at IS NULL ORDER BY update_id"
            )
        )
    finally:
        db.close()
    assert "idx_inbox_undone" in plan


def test_migrating_again_changes_nothing(db_path: Path) -> None:
    assert migrate_file(db_path) == (0, SCHEMA_VERSION)
    before = schema_of(db_path)
    assert migrate_file(db_path) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert schema_of(db_path) == before


def test_migrations_apply_in_order_and_a_failing_one_rolls_back(db_path: Path) -> None:
    def add_notes(db: sqlite_utils.Database) -> None:
        db.table("notes").create({"id": int, "text": str}, pk="id")

    def broken(db: sqlite_utils.Database) -> None:
        db.table("half_done").create({"id": int}, pk="id")
        raise RuntimeError("the last migration is broken")

    n = len(MIGRATIONS)
    steps = [*MIGRATIONS, Migration(n + 1, "notes", add_notes), Migration(n + 2, "broken", broken)]
    db = open_database(db_path)
    try:
        with pytest.raises(RuntimeError, match="the last migration is broken"):
            migrate(db, steps)
        # The notes migration committed on its own; the broken one left nothing behind.
        assert user_version(db_path) == n + 1
        assert "notes" in db.table_names()
        assert "half_done" not in db.table_names()
        assert migrate(db, steps[: n + 1]) == (n + 1, n + 1)
    finally:
        db.close()


def test_migrations_must_be_numbered_in_order(db_path: Path) -> None:
    db = open_database(db_path)
    n = len(MIGRATIONS)
    try:
        steps = [*MIGRATIONS, Migration(n + 2, "skips one", lambda db: None)]
        with pytest.raises(
            ValueError,
            match=re.escape(f"1, 2, 3... in order; position {n + 1} holds version {n + 2}"),
        ):
            migrate(db, steps)
        assert user_version(db_path) == 0
    finally:
        db.close()


def test_a_newer_schema_is_refused_and_the_file_left_untouched(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = db_path.read_bytes()
    mtime = os.stat(db_path).st_mtime_ns

    with pytest.raises(SchemaTooNewError) as caught:
        open_database(db_path)
    assert str(caught.value) == (
        f"{db_path} was written by a newer botvisor (schema {SCHEMA_VERSION + 1}, this one "
        f"knows up to {SCHEMA_VERSION}); upgrade botvisor or use another storage.path"
    )
    assert isinstance(caught.value, StorageError)
    with pytest.raises(SchemaTooNewError):
        migrate_file(db_path)
    with pytest.raises(SchemaTooNewError):
        open_database(db_path, readonly=True)

    assert db_path.read_bytes() == before
    assert os.stat(db_path).st_mtime_ns == mtime
    # Not switched to WAL: that would have rewritten the header.
    assert not Path(f"{db_path}-wal").exists()


async def test_the_store_refuses_a_newer_schema_at_start(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = file_bytes(db_path)
    store = Store(db_path)
    async with trio.open_nursery() as nursery:
        with pytest.raises(SchemaTooNewError, match="schema 99"):
            await nursery.start(store.run)
    assert file_bytes(db_path) == before
    assert store.writer.statistics().state.value == "stopped"


def test_a_file_that_is_not_sqlite_is_refused_by_name(db_path: Path) -> None:
    db_path.write_text("[storage]\npath = 'oops, this is the config file'\n" * 20)
    before = db_path.read_bytes()
    with pytest.raises(NotADatabaseError) as caught:
        open_database(db_path)
    message = str(caught.value)
    assert message.startswith(f"{db_path} is not a SQLite database")
    assert "storage.path" in message
    assert db_path.read_bytes() == before


def test_a_directory_or_missing_parent_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(NotADatabaseError, match=f"cannot open {tmp_path}"):
        open_database(tmp_path)
    missing = tmp_path / "no" / "such" / "dir" / "botvisor.db"
    with pytest.raises(NotADatabaseError, match="No such file or directory"):
        open_database(missing)


def test_another_programs_database_is_not_adopted(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    before = db_path.read_bytes()
    with pytest.raises(NotADatabaseError, match=r"another program .* customers"):
        migrate_file(db_path)
    assert db_path.read_bytes() == before
    assert schema_of(db_path) == [
        ("table", "customers", "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    ]


def test_the_file_and_its_wal_are_private(db_path: Path) -> None:
    db = open_database(db_path)
    try:
        migrate(db)
        db.execute("INSERT INTO offsets VALUES (1, 10, 0.0)")
        assert mode_of(db_path) == 0o600
        for suffix in ("-wal", "-shm"):
            side = Path(f"{db_path}{suffix}")
            assert side.exists()
            assert mode_of(side) == 0o600
    finally:
        db.close()


def test_a_world_readable_file_is_tightened(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    migrate_file(db_path)
    os.chmod(db_path, 0o644)
    with caplog.at_level(logging.WARNING, logger="botvisor.storage"):
        open_database(db_path).close()
    assert mode_of(db_path) == 0o600
    assert "had mode 0644; tightened to 0600" in caplog.text


def test_readonly_never_creates_or_writes(db_path: Path) -> None:
    with pytest.raises(NotADatabaseError, match=f"cannot open {db_path}"):
        open_database(db_path, readonly=True)
    assert not db_path.exists()

    migrate_file(db_path)
    reader = open_database(db_path, readonly=True)
    try:
        assert reader.execute("SELECT COUNT(*) FROM bots").fetchone()[0] == 0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("INSERT INTO offsets VALUES (1, 1, 0.0)")
    finally:
        reader.close()
