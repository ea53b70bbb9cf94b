"""The writer and the store when SQLite fails on the file: every path reaches STOPPED and the
failure is one StorageError naming the file (real corrupt files and a full disk: the
end-to-end tests in tests/e2e/test_database_faults.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
import trio
import trio.testing

import storage.writer
from storage import (
    DatabaseFailedError,
    StorageError,
    Store,
    StoreWriter,
    WriterState,
    migrate_file,
    run_inline,
)


def _failing_close(db: sqlite_utils.Database) -> None:
    # What PRAGMA optimize does on a corrupt file; the connection is closed first, as _close does.
    db.close()
    raise sqlite3.DatabaseError("database disk image is malformed")


async def test_a_failing_close_still_stops_the_writer_and_is_raised_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.writer, "_close", _failing_close)
    writer = StoreWriter(tmp_path / "w.db", offload=run_inline)
    with trio.fail_after(10):  # the old writer never reported stopped: this would time out
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            with pytest.raises(DatabaseFailedError) as caught:
                await writer.stop()
    assert writer.state is WriterState.STOPPED
    assert str(caught.value) == (
        f"{tmp_path / 'w.db'}: closing the database failed: SQLite says 'database disk image is "
        "malformed'; restore the file from a backup or point storage.path at a new file"
    )
    await writer.stop()  # raised once; stopping again is quiet


async def test_a_store_whose_close_fails_ends_its_nursery(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.writer, "_close", _failing_close)
    store = Store(tmp_path / "s.db", offload=run_inline)
    failed: list[BaseException] = []
    with trio.fail_after(10):
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run)
                await store.stop()
        except* DatabaseFailedError as group:
            failed += group.exceptions
    assert len(failed) == 1
    assert store.writer.state is WriterState.STOPPED


def test_migrating_a_corrupt_file_is_one_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    migrate_file(path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("create table filler (x)")
        conn.executemany("insert into filler values (?)", [("x" * 500,)] * 100)
    conn.close()  # the last connection: the WAL is checkpointed into the file
    data = bytearray(path.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # everything after the 100-byte header
    data[60:64] = (1).to_bytes(4, "big")  # user_version 1: a migration must read the schema
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError) as caught:
        migrate_file(path)
    assert str(path) in str(caught.value)
    assert "SQLite says" in str(caught.value)
