"""The one writer: group commit, isolation of failing jobs, and a shutdown that loses nothing."""

from __future__ import annotations

import sqlite3
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from storage import StoreClosedError, StoreWriter, WriterState


class Gate:
    """A job that holds the writer inside its worker thread until released, so that the
    test can queue jobs behind it deterministically."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self._release = threading.Event()

    def job(self, conn: sqlite3.Connection) -> None:
        trio.from_thread.run_sync(self.entered.set)
        if not self._release.wait(timeout=30):
            raise AssertionError("the test never released the gate")

    def release(self) -> None:
        self._release.set()


def exists(path: Path) -> bool:
    return path.exists()


def insert_offset(user_id: int, conn: sqlite3.Connection) -> int:
    conn.execute("INSERT INTO offsets VALUES (?, ?, 0.0)", (user_id, user_id))
    return user_id


def insert_then_fail(user_id: int, conn: sqlite3.Connection) -> int:
    insert_offset(user_id, conn)
    raise ValueError(f"job {user_id} refuses")


def stored_user_ids(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT user_id FROM offsets ORDER BY user_id")]
    finally:
        conn.close()


async def submit_into(writer: StoreWriter, job: Any, outcomes: dict[int, object], key: int) -> None:
    try:
        outcomes[key] = await writer.submit(job)
    except Exception as exc:
        outcomes[key] = exc


async def test_concurrent_submits_commit_in_one_transaction(
    db_path: Path, nursery: trio.Nursery
) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    gate = Gate()
    outcomes: dict[int, object] = {}
    async with trio.open_nursery() as submitters:
        submitters.start_soon(writer.submit, gate.job)
        await gate.entered.wait()
        for user_id in range(500):
            submitters.start_soon(
                submit_into, writer, partial(insert_offset, user_id), outcomes, user_id
            )
        await trio.testing.wait_all_tasks_blocked()
        assert writer.statistics().queued == 500
        gate.release()

    assert outcomes == {user_id: user_id for user_id in range(500)}
    stats = writer.statistics()
    assert (stats.batches, stats.jobs, stats.rows, stats.largest_batch) == (2, 501, 500, 500)
    assert stats.queued == 0
    assert stats.failed_jobs == 0
    assert stored_user_ids(db_path) == list(range(500))


async def test_a_transaction_holds_at_most_max_batch_jobs(
    db_path: Path, nursery: trio.Nursery
) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path, max_batch=100).run)
    gate = Gate()
    async with trio.open_nursery() as submitters:
        submitters.start_soon(writer.submit, gate.job)
        await gate.entered.wait()
        for user_id in range(250):
            writer.submit_nowait(partial(insert_offset, user_id))
        gate.release()
        await writer.stop()

    stats = writer.statistics()
    assert (stats.batches, stats.largest_batch, stats.last_batch_jobs) == (4, 100, 50)
    assert len(stored_user_ids(db_path)) == 250


async def test_a_failing_job_is_rolled_back_alone(db_path: Path, nursery: trio.Nursery) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    gate = Gate()
    outcomes: dict[int, object] = {}
    async with trio.open_nursery() as submitters:
        submitters.start_soon(writer.submit, gate.job)
        await gate.entered.wait()
        for user_id in (1, 3, 5):
            submitters.start_soon(
                submit_into, writer, partial(insert_offset, user_id), outcomes, user_id
            )
        for user_id in (2, 4):
            submitters.start_soon(
                submit_into, writer, partial(insert_then_fail, user_id), outcomes, user_id
            )
        await trio.testing.wait_all_tasks_blocked()
        gate.release()

    assert (outcomes[1], outcomes[3], outcomes[5]) == (1, 3, 5)
    for user_id in (2, 4):
        assert isinstance(outcomes[user_id], ValueError)
        assert str(outcomes[user_id]) == f"job {user_id} refuses"
    assert stored_user_ids(db_path) == [1, 3, 5]
    stats = writer.statistics()
    # The five shared one transaction, after the gate's.
    assert (stats.batches, stats.jobs, stats.failed_jobs, stats.failed_batches) == (2, 4, 2, 0)
    assert stats.rows == 3


def end_transaction_then_fail(conn: sqlite3.Connection) -> None:
    insert_offset(2, conn)
    # What SQLite does on SQLITE_FULL or a RAISE(ROLLBACK): the whole transaction is gone.
    conn.execute("ROLLBACK")
    raise sqlite3.OperationalError("database or disk is full")


def commit_by_itself(conn: sqlite3.Connection) -> None:
    insert_offset(2, conn)
    conn.execute("COMMIT")


async def test_a_job_that_loses_the_transaction_does_not_lose_its_batch_mates(
    db_path: Path, nursery: trio.Nursery
) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    gate = Gate()
    outcomes: dict[int, object] = {}
    async with trio.open_nursery() as submitters:
        submitters.start_soon(writer.submit, gate.job)
        await gate.entered.wait()
        submitters.start_soon(submit_into, writer, partial(insert_offset, 1), outcomes, 1)
        submitters.start_soon(submit_into, writer, end_transaction_then_fail, outcomes, 2)
        submitters.start_soon(submit_into, writer, partial(insert_offset, 3), outcomes, 3)
        await trio.testing.wait_all_tasks_blocked()
        gate.release()

    assert (outcomes[1], outcomes[3]) == (1, 3)
    assert isinstance(outcomes[2], sqlite3.OperationalError)
    assert stored_user_ids(db_path) == [1, 3]


async def test_a_job_may_not_commit_by_itself(db_path: Path, nursery: trio.Nursery) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    with pytest.raises(RuntimeError, match="must not commit or roll back"):
        await writer.submit(commit_by_itself)
    # The writer goes on working.
    assert await writer.submit(partial(insert_offset, 5)) == 5
    assert stored_user_ids(db_path) == [2, 5]


async def test_stop_commits_every_queued_fire_and_forget_job(
    db_path: Path, nursery: trio.Nursery
) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    for user_id in range(1000):
        writer.submit_nowait(partial(insert_offset, user_id))
    await writer.stop()

    assert len(stored_user_ids(db_path)) == 1000
    stats = writer.statistics()
    assert stats.state is WriterState.STOPPED
    # Everything was queued before the writer woke up: one transaction.
    assert (stats.batches, stats.jobs) == (1, 1000)


async def test_no_writes_after_stop(db_path: Path, nursery: trio.Nursery) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    await writer.stop()
    await writer.stop()  # idempotent
    with pytest.raises(StoreClosedError, match=r"is stopped: it accepts no writes after stop\(\)"):
        await writer.submit(partial(insert_offset, 1))
    with pytest.raises(StoreClosedError):
        writer.submit_nowait(partial(insert_offset, 1))
    assert stored_user_ids(db_path) == []


async def test_a_full_queue_refuses_fire_and_forget_jobs(db_path: Path) -> None:
    writer = StoreWriter(db_path, queue_size=2)
    # Jobs may be queued before the writer runs: they wait for the file to open.
    writer.submit_nowait(partial(insert_offset, 1))
    writer.submit_nowait(partial(insert_offset, 2))
    with pytest.raises(trio.WouldBlock):
        writer.submit_nowait(partial(insert_offset, 3))
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.stop()
    assert stored_user_ids(db_path) == [1, 2]


async def test_a_cancelled_writer_fails_the_jobs_it_did_not_run(db_path: Path) -> None:
    writer = StoreWriter(db_path)
    writer_scope = trio.CancelScope()

    async def run_writer(
        *, task_status: trio.TaskStatus[StoreWriter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with writer_scope:
            await writer.run(task_status=task_status)

    gate = Gate()
    outcomes: dict[int, object] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(run_writer)
        nursery.start_soon(writer.submit, gate.job)
        await gate.entered.wait()
        for user_id in range(10):
            nursery.start_soon(
                submit_into, writer, partial(insert_offset, user_id), outcomes, user_id
            )
        await trio.testing.wait_all_tasks_blocked()
        writer_scope.cancel()
        gate.release()

    assert len(outcomes) == 10
    for outcome in outcomes.values():
        assert isinstance(outcome, StoreClosedError)
        assert "stopped before this job ran; it was not written" in str(outcome)
    assert stored_user_ids(db_path) == []
    assert writer.state is WriterState.STOPPED


async def test_a_queued_job_runs_even_if_its_submitter_gives_up(
    db_path: Path, nursery: trio.Nursery
) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    gate = Gate()
    nursery.start_soon(writer.submit, gate.job)
    await gate.entered.wait()
    given_up = trio.CancelScope()

    async def submit_then_give_up() -> None:
        with given_up:
            await writer.submit(partial(insert_offset, 7))

    nursery.start_soon(submit_then_give_up)
    await trio.testing.wait_all_tasks_blocked()
    given_up.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert given_up.cancelled_caught
    gate.release()
    await writer.stop()
    assert stored_user_ids(db_path) == [7]


async def test_a_writer_runs_once(db_path: Path, nursery: trio.Nursery) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    with pytest.raises(RuntimeError, match="is for a new writer, but this one is running"):
        await writer.run()
    await writer.stop()
    with pytest.raises(RuntimeError, match="this one is stopped"):
        await writer.run()


async def test_stopping_a_writer_that_never_ran(db_path: Path) -> None:
    writer = StoreWriter(db_path)
    await writer.stop()
    assert writer.state is WriterState.STOPPED
    assert not exists(db_path)


def test_limits_are_validated(db_path: Path) -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        StoreWriter(db_path, max_batch=0)
    with pytest.raises(ValueError, match="queue_size must be >= 1, got 0"):
        StoreWriter(db_path, queue_size=0)


async def test_a_transaction_that_cannot_start_fails_its_jobs_and_the_writer_goes_on(
    db_path: Path, nursery: trio.Nursery
) -> None:
    writer: StoreWriter = await nursery.start(StoreWriter(db_path).run)
    await writer.submit(lambda conn: conn.execute("PRAGMA busy_timeout = 20"))
    intruder = sqlite3.connect(db_path, isolation_level=None)
    try:
        intruder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            await writer.submit(partial(insert_offset, 1))
        stats = writer.statistics()
        assert stats.failed_batches == 1
        assert stats.last_error == "OperationalError: database is locked"
        intruder.execute("ROLLBACK")
    finally:
        intruder.close()
    assert await writer.submit(partial(insert_offset, 2)) == 2
    assert stored_user_ids(db_path) == [2]
