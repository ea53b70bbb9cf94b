"""The one writer: every write to the database is a job run by :class:`StoreWriter`.

A job is a plain function ``job(conn) -> T`` over the write connection. Jobs queue in a bounded
Trio memory channel; the writer takes everything queued at that moment (up to ``max_batch``)
and runs it as ONE transaction in a worker thread, so a burst of small writes costs one commit
and the event loop never waits on the disk. A job that raises is rolled back alone and its
exception goes back to its submitter, while the other jobs of the batch commit (they run again,
each under a SAVEPOINT; see ``_run_batch``).

Shutdown: ``stop()`` refuses new jobs, lets the writer drain and commit everything already
queued, closes the connection and returns. If ``run`` is cancelled instead, jobs still queued
fail with :class:`StoreClosedError` (their submitters are told, nobody waits forever).

Failures of the file itself: SQLite failing to open or migrate it (corrupt pages, a full
disk, an I/O error) raises :class:`DatabaseFailedError` with SQLite's message, one line. The
writer reaches STOPPED on every path, even when closing the connection fails (``PRAGMA
optimize`` on a corrupt file raises): the connection is closed anyway, and the first
``stop()`` to return afterwards raises that :class:`DatabaseFailedError`, so the daemon's
shutdown ends instead of waiting for a writer that never reports stopped.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import sqlite_utils
import trio

from storage.db import open_database
from storage.errors import DatabaseFailedError, StoreClosedError, is_database_failure
from storage.migrations import migrate

__all__ = ["Job", "Offload", "StoreWriter", "WriterState", "WriterStatistics", "run_inline"]

logger = logging.getLogger("botvisor.storage")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]
# How blocking SQLite work is run: in a worker thread (the default, so the event loop never
# stalls on disk) or inline (``run_inline``: for tests on a MockClock, where a thread would let
# the autojumping clock race ahead while the thread works).
Offload = Callable[..., Awaitable[Any]]


async def run_inline(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn`` on the event loop's thread (tests on a MockClock only)."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


_SAVEPOINT = "botvisor_job"


class WriterState(enum.Enum):
    """Lifecycle of a :class:`StoreWriter`."""

    NEW = "new"  # constructed; jobs submitted now wait in the queue for the file to open
    OPENING = "opening"  # opening and migrating the file in a worker thread
    RUNNING = "running"  # committing batches as jobs arrive
    STOPPING = "stopping"  # stop() was called: no new jobs; queued ones are being committed
    STOPPED = "stopped"  # connection closed; every accepted job has its outcome


@dataclass(frozen=True)
class WriterStatistics:
    """A snapshot of the writer's counters."""

    state: WriterState
    batches: int  # transactions committed
    jobs: int  # jobs committed
    failed_jobs: int  # jobs that raised or whose transaction failed
    failed_batches: int  # transactions that could not be committed at all
    rows: int  # rows inserted, updated or deleted by committed jobs
    queued: int  # jobs waiting for the next batch
    queue_size: int
    max_batch: int
    largest_batch: int  # most jobs ever committed in one transaction
    last_batch_jobs: int
    last_commit_seconds: float  # Trio time of the last batch, thread hop included
    last_error: str | None  # the last failed transaction's error


class _Job(Generic[T]):
    """A queued job and, once its batch is over, its outcome."""

    __slots__ = ("error", "finished", "fn", "result")

    def __init__(self, fn: Job[T], finished: trio.Event | None) -> None:
        self.fn = fn
        self.finished = finished  # None: fire and forget
        self.result: T | None = None
        self.error: BaseException | None = None


@dataclass
class _BatchReport:
    committed: int = 0
    failed: int = 0
    rows: int = 0
    error: Exception | None = None


def _run_batch(conn: sqlite3.Connection, jobs: list[_Job[Any]]) -> _BatchReport:
    """Run ``jobs`` in one transaction (in a worker thread); every job gets an outcome.

    Optimistic: jobs run bare, because a SAVEPOINT per job makes SQLite copy every page a job
    touches into a statement journal (measured: ~25% more CPU for snapshot inserts). When a
    job fails, the transaction is rolled back and the others run again, each under its own
    savepoint, so that further failures cost nothing more than their own rollback.
    """
    report = _BatchReport()
    pending = jobs
    isolate = False
    while pending:
        ran: list[_Job[Any]] = []
        rows = 0
        restart: list[_Job[Any]] | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for index, job in enumerate(pending):
                job.error = None
                if isolate:
                    conn.execute(f"SAVEPOINT {_SAVEPOINT}")
                before = conn.total_changes
                try:
                    job.result = job.fn(conn)
                except Exception as exc:
                    job.error = exc
                    job.result = None
                    report.failed += 1
                    if isolate and conn.in_transaction:
                        conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
                        conn.execute(f"RELEASE {_SAVEPOINT}")
                        continue
                    # Without a savepoint, or when the error ended the whole transaction (disk
                    # full, a RAISE(ROLLBACK)), the jobs before it are undone too: run them
                    # again without it.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    restart = ran + pending[index + 1 :]
                    isolate = True
                    break
                if not conn.in_transaction:
                    # The job committed (or rolled back) by itself; what it and the jobs before
                    # it did cannot be undone or told apart now, so count them as committed.
                    job.error = RuntimeError(
                        "a store job must not commit or roll back: the writer owns the transaction"
                    )
                    report.failed += 1
                    report.committed += len(ran)
                    report.rows += rows
                    logger.error("%s (job %r)", job.error, job.fn)
                    restart = pending[index + 1 :]
                    break
                if isolate:
                    conn.execute(f"RELEASE {_SAVEPOINT}")
                rows += conn.total_changes - before
                ran.append(job)
            else:
                conn.execute("COMMIT")
                report.committed += len(ran)
                report.rows += rows
        except Exception as exc:
            # BEGIN, COMMIT or a savepoint statement failed (locked for longer than
            # busy_timeout, I/O error): nothing of this attempt is in the file, so every job of
            # it that did not fail on its own fails with that error. On a corrupt file the
            # ROLLBACK can fail too; the transaction is over either way, and the writer must
            # live on to tell every submitter.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for job in pending:
                if job.error is None:
                    job.error = exc
                    job.result = None
                    report.failed += 1
            report.error = exc
            return report
        pending = restart or []
    return report


class StoreWriter:
    """Owns the only write connection and group-commits the jobs submitted to it.

    ``submit`` waits for the commit and returns the job's result (or raises its exception);
    ``submit_nowait`` queues a job and returns at once (for writes nobody waits on, such as
    marking updates done): it raises ``trio.WouldBlock`` when the queue is full, so the caller
    decides between waiting (``submit``) and dropping. Submitting after ``stop()`` raises
    :class:`StoreClosedError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_batch: int = 5_000,
        queue_size: int = 20_000,
        offload: Offload = trio.to_thread.run_sync,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.path = os.fspath(path)
        self._offload = offload
        self._max_batch = max_batch
        self._queue_size = queue_size
        self._send, self._receive = trio.open_memory_channel[_Job[Any]](queue_size)
        self._state = WriterState.NEW
        self._db: sqlite_utils.Database | None = None
        self._serving = False
        self._opening = False
        self._stopped = trio.Event()
        # Closing the connection failed: raised once, by the first stop() to see it.
        self._close_error: DatabaseFailedError | None = None
        # The file's last failure (disk full, I/O) while no write has succeeded since: the
        # store is not ready although an empty probe transaction would still commit.
        self._failing: str | None = None
        self._batches = 0
        self._jobs = 0
        self._failed_jobs = 0
        self._failed_batches = 0
        self._rows = 0
        self._largest_batch = 0
        self._last_batch_jobs = 0
        self._last_commit_seconds = 0.0
        self._last_error: str | None = None

    @property
    def state(self) -> WriterState:
        return self._state

    @property
    def failing(self) -> str | None:
        """Why writes fail now (``"OperationalError: database or disk is full"``), or None:
        set when a transaction or a job fails on the file itself, cleared by the next batch
        that writes rows."""
        return self._failing

    # --- lifecycle -----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[StoreWriter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open and migrate the file, report ``started(self)``, then commit jobs until stopped."""
        await self.open()
        task_status.started(self)
        await self.serve()

    async def open(self) -> None:
        """Open and migrate the file in a worker thread (``run`` does this first)."""
        if self._state is not WriterState.NEW:
            raise RuntimeError(
                f"StoreWriter.open() is for a new writer, but this one is {self._state.value}; "
                "a writer owns one connection and runs once"
            )
        self._state = WriterState.OPENING
        self._opening = True
        try:
            # Shielded: a cancellation arriving while the thread runs must not leak the
            # connection it opened.
            with trio.CancelScope(shield=True):
                self._db = await self._offload(self._open_and_migrate)
        except BaseException:
            self._opening = False
            await self._finish()
            raise
        self._opening = False
        if self._state is WriterState.OPENING:
            self._state = WriterState.RUNNING

    async def serve(self) -> None:
        """Commit queued jobs batch by batch until ``stop()`` (``run`` calls this)."""
        if self._db is None or self._serving:
            raise RuntimeError(
                f"StoreWriter.serve() needs an opened writer that is not serving yet; this one "
                f"is {self._state.value}{' and serving' if self._serving else ''}"
            )
        self._serving = True
        try:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._commit(batch)
        finally:
            await self._finish()

    async def stop(self) -> None:
        """Accept no more jobs, commit every queued one, close the connection, return.

        After it returns, every job submitted before the call has been committed (or has
        failed on its own). Idempotent. Raises :class:`DatabaseFailedError` (once) if closing
        the connection failed; the writer is STOPPED and the connection closed all the same.
        """
        if self._state is WriterState.NEW:
            await self._finish()
        else:
            if self._state in (WriterState.RUNNING, WriterState.OPENING):
                self._state = WriterState.STOPPING
            self._send.close()
            if self._serving or self._opening:
                await self._stopped.wait()
            elif self._db is not None:
                # Opened but never served (its owner failed to start): drain it here.
                await self.serve()
        error, self._close_error = self._close_error, None
        if error is not None:
            raise error

    # --- submitting ----------------------------------------------------------------------

    async def submit(self, job: Job[T], *, wait_for_room: bool = True) -> T:
        """Queue ``job``, wait until its transaction committed, return its result.

        Re-raises the job's own exception (its changes rolled back, its batch mates kept).
        Waits while the queue is full, or with ``wait_for_room=False`` raises
        ``trio.WouldBlock`` at once (nothing queued: a caller that can ask its client to come
        back later, like the webhook receiver, refuses instead of piling up). If the caller is
        cancelled after the job was queued,
        the job still runs. A job may run twice (when a batch mate fails, the transaction is
        rolled back and the others run again), so it must act only through the connection.
        """
        item = _Job(job, trio.Event())
        self._check_accepting()
        try:
            if wait_for_room:
                await self._send.send(item)
            else:
                self._send.send_nowait(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed_error() from None
        assert item.finished is not None
        await item.finished.wait()
        if item.error is not None:
            raise item.error
        return cast(T, item.result)

    def submit_nowait(self, job: Job[Any]) -> None:
        """Queue ``job`` without waiting for it; its failure is logged and counted.

        Raises ``trio.WouldBlock`` if the queue is full and :class:`StoreClosedError` after
        ``stop()``.
        """
        self._check_accepting()
        try:
            self._send.send_nowait(_Job(job, None))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed_error() from None

    def statistics(self) -> WriterStatistics:
        """Counters for the admin API and tests."""
        return WriterStatistics(
            state=self._state,
            batches=self._batches,
            jobs=self._jobs,
            failed_jobs=self._failed_jobs,
            failed_batches=self._failed_batches,
            rows=self._rows,
            queued=self._receive.statistics().current_buffer_used,
            queue_size=self._queue_size,
            max_batch=self._max_batch,
            largest_batch=self._largest_batch,
            last_batch_jobs=self._last_batch_jobs,
            last_commit_seconds=self._last_commit_seconds,
            last_error=self._last_error,
        )

    # --- internals -----------------------------------------------------------------------

    def _check_accepting(self) -> None:
        if self._state in (WriterState.STOPPING, WriterState.STOPPED):
            raise self._closed_error()

    def _closed_error(self) -> StoreClosedError:
        return StoreClosedError(
            f"the store writer of {self.path} is {self._state.value}: it accepts no writes "
            "after stop() or after its task ended"
        )

    def _open_and_migrate(self) -> sqlite_utils.Database:
        try:
            db = open_database(self.path)
        except sqlite3.DatabaseError as exc:
            raise DatabaseFailedError(self.path, "opening the database", exc) from None
        try:
            before, after = migrate(db)
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise DatabaseFailedError(self.path, "migrating the schema", exc) from None
            raise
        if before != after:
            logger.info("%s: schema migrated from version %d to %d", self.path, before, after)
        return db

    async def _commit(self, batch: list[_Job[Any]]) -> None:
        assert self._db is not None
        started = trio.current_time()
        try:
            # The thread cannot be abandoned anyway; the shield makes sure that once it is done
            # its outcomes reach the submitters before any cancellation lands.
            with trio.CancelScope(shield=True):
                report = await self._offload(_run_batch, self._db.conn, batch)
        except BaseException as exc:
            for job in batch:
                if job.error is None:
                    job.error = exc
            raise
        finally:
            for job in batch:
                if job.finished is not None:
                    job.finished.set()
        self._last_commit_seconds = trio.current_time() - started
        self._last_batch_jobs = len(batch)
        self._largest_batch = max(self._largest_batch, len(batch))
        self._jobs += report.committed
        self._failed_jobs += report.failed
        self._rows += report.rows
        file_error = report.error or next(
            (job.error for job in batch if is_database_failure(job.error)), None
        )
        if file_error is not None:
            self._failing = f"{type(file_error).__name__}: {file_error}"
        elif report.rows:
            self._failing = None
        if report.error is None:
            self._batches += 1
        else:
            self._failed_batches += 1
            self._last_error = f"{type(report.error).__name__}: {report.error}"
            logger.error("%s: a write transaction failed: %s", self.path, self._last_error)
        for job in batch:
            if job.finished is None and job.error is not None and job.error is not report.error:
                logger.error(
                    "%s: a store job nobody waits for failed: %s: %s",
                    self.path,
                    type(job.error).__name__,
                    job.error,
                )

    async def _finish(self) -> None:
        """Fail whatever is still queued, close the connection, mark the writer stopped."""
        if self._state is WriterState.STOPPED:
            return
        self._state = WriterState.STOPPED
        self._send.close()
        failed = StoreClosedError(
            f"the store writer of {self.path} stopped before this job ran; it was not written"
        )
        while True:
            try:
                job = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            job.error = failed
            self._failed_jobs += 1
            if job.finished is not None:
                job.finished.set()
        self._receive.close()
        db, self._db = self._db, None
        try:
            if db is not None:
                with trio.CancelScope(shield=True):
                    await self._offload(_close, db)
        except Exception as exc:
            self._close_error = DatabaseFailedError(self.path, "closing the database", exc)
            self._last_error = f"{type(exc).__name__}: {exc}"
            logger.error("%s", self._close_error)
        finally:
            self._serving = False
            self._stopped.set()


def _close(db: sqlite_utils.Database) -> None:
    """``PRAGMA optimize`` then close; the connection is closed even when optimize fails
    (it does on a corrupt file), and that failure is raised afterwards."""
    try:
        # Keeps the query planner's statistics fresh for the next start; cheap when unneeded.
        db.execute("PRAGMA optimize")
    finally:
        db.close()
