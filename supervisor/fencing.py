"""Fencing a shard: while shard ``i`` runs, it holds Postgres's advisory lock
``(FENCE_KEY, i)`` on a session of its own.

Telegram allows one poller per bot, so two processes that both believe they are shard ``i``
(a pod rescheduled while the old one still runs, an operator's typo) would end each other's
long polls with 409 forever. The lock makes the second one refuse to start. Postgres
releases a session's advisory locks when the session ends, so a shard whose session dies
(Postgres restarted, the network cut, ``pg_terminate_backend``) may already have a
successor: it stops every bot at once and exits non-zero, and never takes the lock again on
its own (the orchestrator restarts it, and the restarted process takes the lock, or waits
for the successor to go).

Every call on the session runs in a worker thread (psycopg, like asyncpg, does not run on
Trio), one at a time through the fence's CapacityLimiter.

Exceptions::

    FencingError
    ├── ShardHeld          another process holds this shard's lock (at start)
    ├── FenceUnavailable   Postgres cannot be reached, or the lock taken, at start
    └── FenceLost          the lock's session died while the shard ran
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import trio

from actors import Shard
from supervisor.cluster import ClusterConfig, redact_url

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

__all__ = [
    "FENCE_KEY",
    "FenceLost",
    "FenceUnavailable",
    "FencingError",
    "LockHolder",
    "SessionGone",
    "ShardFence",
    "ShardHeld",
    "watch_session",
]

log = logging.getLogger("botvisor.fencing")

T = TypeVar("T")

# The first half of every botvisor shard lock's two-int4 key ("botv"), so other
# applications' advisory locks in the same database do not meet ours; the second is the
# shard index.
FENCE_KEY = 0x626F7476


class FencingError(Exception):
    """A shard's fencing lock could not be held; the message says what to do."""


@dataclass(frozen=True)
class LockHolder:
    """The session holding a shard's lock, as pg_locks and pg_stat_activity show it."""

    backend_pid: int
    application_name: str
    client_addr: str | None

    def __str__(self) -> str:
        name = self.application_name or "an unnamed client"
        where = f" from {self.client_addr}" if self.client_addr else ""
        return f"{name}; Postgres backend {self.backend_pid}{where}"


class ShardHeld(FencingError):
    def __init__(self, shard: Shard, holder: LockHolder | None) -> None:
        self.shard = shard
        self.holder = holder
        held_by = f" ({holder})" if holder is not None else ""
        super().__init__(
            f"shard {shard} is already running: another process holds its lock{held_by}; "
            f"refusing to start a second owner of its bots (stop that one, or check --shard)"
        )


class FenceUnavailable(FencingError):
    pass


class FenceLost(FencingError):
    def __init__(self, shard: Shard, reason: str) -> None:
        self.shard = shard
        self.reason = reason
        super().__init__(
            f"shard {shard} lost its lock: {reason}; every bot stopped polling and the daemon "
            f"exits so that its orchestrator restarts it (another process may hold the shard now)"
        )


class SessionGone(Exception):
    """A check found the lock's session gone; the message says how."""


async def watch_session(
    check: Callable[[], Awaitable[None]], *, interval: float, check_timeout: float
) -> str:
    """Run ``check`` every ``interval`` seconds until it raises SessionGone or takes longer
    than ``check_timeout``; return why the session counts as gone. (The check, not this loop,
    talks to Postgres: tests inject one.)"""
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(check_timeout):
            try:
                await check()
            except SessionGone as exc:
                return str(exc)
            continue
        return f"its Postgres session did not answer a check within {check_timeout:g} s"


_HOLDER = """
SELECT a.pid, a.application_name, host(a.client_addr)
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = %s::oid AND l.objid = %s::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LIMIT 1
"""


class ShardFence:
    """Shard ``shard``'s lock on a dedicated Postgres session: :meth:`acquire` at start,
    :meth:`watch` while running, :meth:`release` at the end."""

    def __init__(self, config: ClusterConfig, shard: Shard) -> None:
        if config.database_url is None:
            raise ValueError("cluster.database_url must be set (the loader reads it)")
        self._config = config
        self._url = config.database_url
        self.shard = shard
        self._limiter = trio.CapacityLimiter(1)
        self._connection: psycopg.Connection[TupleRow] | None = None
        # Named so that the refusal of a second process can say who holds the shard.
        self.application_name = (
            f"botvisor shard {shard} pid {os.getpid()} on {socket.gethostname()}"
        )[:63]

    def _clean(self, text: str) -> str:
        """An error's text with the URL's password taken out, whatever quoted it."""
        password = _password(self._url)
        return text.replace(password, "***") if password else text

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(work, limiter=self._limiter, abandon_on_cancel=True)

    async def acquire(self) -> None:
        """Connect and take the lock; ShardHeld if another session has it, FenceUnavailable
        if Postgres cannot be reached."""
        import psycopg

        def take() -> tuple[bool, LockHolder | None]:
            connection = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._config.connect_timeout,
                application_name=self.application_name,
                # A dead peer is noticed by the watchdog's SELECT 1 (with its timeout); the
                # keepalives make the kernel give up on the socket too.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
            try:
                row = connection.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (FENCE_KEY, self.shard.index)
                ).fetchone()
                if row is not None and row[0] is True:
                    self._connection = connection
                    return True, None
                found = connection.execute(_HOLDER, (FENCE_KEY, self.shard.index)).fetchone()
            except BaseException:
                connection.close()
                raise
            connection.close()
            holder = (
                None
                if found is None
                else LockHolder(int(str(found[0])), str(found[1] or ""), _text_or_none(found[2]))
            )
            return False, holder

        try:
            with trio.fail_after(self._config.connect_timeout + self._config.lock_check_timeout):
                taken, holder = await self._in_thread(take)
        except trio.TooSlowError:
            raise FenceUnavailable(
                f"cluster: Postgres at {redact_url(self._url)} did not answer within "
                f"{self._config.connect_timeout + self._config.lock_check_timeout:g} s: "
                f"shard {self.shard} cannot take its lock"
            ) from None
        except psycopg.Error as exc:
            raise FenceUnavailable(
                f"cluster: cannot take shard {self.shard}'s lock on Postgres at "
                f"{redact_url(self._url)}: {self._clean(str(exc).strip())}"
            ) from None
        if not taken:
            raise ShardHeld(self.shard, holder)
        log.info(
            "shard %s holds its lock on Postgres at %s (checked every %g s)",
            self.shard,
            redact_url(self._url),
            self._config.lock_check_interval,
        )

    async def check(self) -> None:
        """A ``SELECT 1`` on the lock's session; SessionGone if it fails."""
        import psycopg

        connection = self._connection
        if connection is None:
            raise SessionGone("its Postgres session is closed")
        try:
            await self._in_thread(lambda: connection.execute("SELECT 1").fetchone())
        except psycopg.Error as exc:
            detail = self._clean(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            raise SessionGone(
                f"its Postgres session failed a check ({type(exc).__name__}: {detail})"
            ) from None

    async def watch(self) -> str:
        """Return once the session is gone, with why."""
        return await watch_session(
            self.check,
            interval=self._config.lock_check_interval,
            check_timeout=self._config.lock_check_timeout,
        )

    async def release(self) -> None:
        """End the session (Postgres then releases the lock). Bounded: a session that hangs
        is left to the process's exit."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with trio.move_on_after(self._config.lock_check_timeout):
            await self._in_thread(connection.close)


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)
