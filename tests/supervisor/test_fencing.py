"""Fencing a shard (supervisor/fencing.py): the watchdog's timing on a MockClock with an
injected check, and the lock itself on the throwaway Postgres (tests/postgres.py)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import Shard
from supervisor.cluster import ClusterConfig, database_url_problem, redact_url
from supervisor.fencing import (
    FenceUnavailable,
    SessionGone,
    ShardFence,
    ShardHeld,
    watch_session,
)
from tests.postgres import terminate_lock_session


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Checks:
    """A check that succeeds ``ok`` times, then fails (or hangs) forever."""

    def __init__(self, ok: int, *, hang: bool = False) -> None:
        self.ok = ok
        self.hang = hang
        self.at: list[float] = []

    async def __call__(self) -> None:
        self.at.append(trio.current_time())
        if len(self.at) <= self.ok:
            return
        if self.hang:
            await trio.sleep_forever()
        raise SessionGone("its Postgres session failed a check (OperationalError: gone)")


async def test_the_watchdog_checks_every_interval_and_reports_the_first_failed_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    checks = Checks(ok=3)
    with trio.fail_after(100):
        reason = await watch_session(checks, interval=5, check_timeout=2)
    assert checks.at == [5.0, 10.0, 15.0, 20.0]
    assert trio.current_time() == 20.0
    assert reason == "its Postgres session failed a check (OperationalError: gone)"


async def test_a_check_that_does_not_answer_counts_as_a_gone_session_after_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    checks = Checks(ok=1, hang=True)
    with trio.fail_after(100):
        reason = await watch_session(checks, interval=5, check_timeout=2)
    assert checks.at == [5.0, 10.0]
    assert trio.current_time() == 12.0
    assert reason == "its Postgres session did not answer a check within 2 s"


async def test_a_healthy_session_is_watched_forever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    checks = Checks(ok=10**9)
    with trio.move_on_after(3601):
        await watch_session(checks, interval=5, check_timeout=2)
        raise AssertionError("the watchdog gave up on a healthy session")
    assert len(checks.at) == 720


def test_a_database_url_is_shown_without_its_password() -> None:
    assert redact_url("postgresql://bv:s3cret@db:5432/fleet") == "postgresql://bv:***@db:5432/fleet"
    assert (
        redact_url("postgresql://db/fleet?sslmode=require&password=s3cret")
        == "postgresql://db/fleet?sslmode=require&password=***"
    )
    assert redact_url("postgresql://db/fleet") == "postgresql://db/fleet"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://bv:pw@db:5432/fleet", None),
        ("postgres://db/fleet", None),
        (
            "mysql://bv:pw@db/fleet",
            "must be a postgresql:// URL (postgresql://user:password@host:5432/database), "
            "its scheme is 'mysql'",
        ),
        ("postgresql:///fleet", "names no host (postgresql://user:password@HOST:5432/database)"),
        (
            "postgresql://db:port/fleet",
            "is not a URL (Port could not be cast to integer value as 'port')",
        ),
    ],
)
def test_a_database_url_is_checked_without_connecting(url: str, problem: str | None) -> None:
    assert database_url_problem(url) == problem


def cluster(url: str) -> ClusterConfig:
    return ClusterConfig(
        database_url=url, connect_timeout=5, lock_check_interval=0.2, lock_check_timeout=5
    )


async def test_a_second_fence_of_the_same_shard_is_refused_naming_the_holder(
    postgres_url: str,
) -> None:
    first = ShardFence(cluster(postgres_url), Shard(0, 2))
    await first.acquire()
    try:
        # Another shard's lock is another lock.
        other = ShardFence(cluster(postgres_url), Shard(1, 2))
        await other.acquire()
        await other.release()
        second = ShardFence(cluster(postgres_url), Shard(0, 2))
        with pytest.raises(ShardHeld) as refused:
            await second.acquire()
    finally:
        await first.release()
    message = str(refused.value)
    assert message.startswith("shard 0/2 is already running: another process holds its lock (")
    assert first.application_name in message
    assert "from 127.0.0.1" in message
    # Released with the session: now the shard can be taken.
    again = ShardFence(cluster(postgres_url), Shard(0, 2))
    await again.acquire()
    await again.release()


async def test_a_terminated_lock_session_fails_the_next_check(postgres_url: str) -> None:
    fence = ShardFence(cluster(postgres_url), Shard(1, 3))
    await fence.acquire()
    try:
        await fence.check()
        assert await trio.to_thread.run_sync(terminate_lock_session, postgres_url, 1) == 1
        with trio.fail_after(30):
            reason = await fence.watch()
    finally:
        await fence.release()
    assert reason.startswith("its Postgres session failed a check (")


async def test_postgres_away_at_start_is_a_refusal_without_the_password() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://bv:s3cret-pw@127.0.0.1:{port}/fleet"
    with pytest.raises(FenceUnavailable) as refused:
        await ShardFence(cluster(url), Shard(0, 1)).acquire()
    message = str(refused.value)
    assert message.startswith(
        "cluster: cannot take shard 0/1's lock on Postgres at "
        f"postgresql://bv:***@127.0.0.1:{port}/fleet: "
    )
    assert "s3cret-pw" not in message
