"""BotSupervisor on a MockClock: the OTP matrix, backoff timings, isolation, shutdown."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

import pytest
import trio
import trio.testing

from actors import BackoffSchedule, ExponentialBackoff, ProportionalJitter
from supervisor.bot_supervisor import (
    BotSupervisor,
    ChildState,
    RestartType,
    SupervisorEvent,
)
from supervisor.config import SupervisorConfig


class Crash(Exception):
    pass


class ScriptedChild:
    """A child whose incarnations follow a script: ('crash', after), ('exit', after),
    ('run', None) runs until stopped. The last step repeats."""

    def __init__(self, script: Iterable[tuple[str, float | None]], *, drain: float = 0) -> None:
        self.script = list(script)
        self.starts: list[float] = []
        self.stop_requested_at: list[float] = []
        self.drain = drain  # seconds of in-flight work it finishes after request_stop
        self.exited_at: float | None = None
        self._stop = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._stop = trio.Event()
        index = min(len(self.starts), len(self.script) - 1)
        self.starts.append(trio.current_time())
        action, after = self.script[index]
        task_status.started()
        try:
            if action == "run":
                await self._stop.wait()
                await trio.sleep(self.drain)
                return
            with trio.move_on_after(after or 0):
                await self._stop.wait()
            if self._stop.is_set():
                return
            if action == "crash":
                raise Crash(f"boom #{len(self.starts)}")
        finally:
            self.exited_at = trio.current_time()

    def request_stop(self) -> None:
        self.stop_requested_at.append(trio.current_time())
        self._stop.set()


def config(**overrides: float) -> SupervisorConfig:
    values: dict[str, float] = dict(
        max_restarts=3,
        restart_period=60.0,
        restart_backoff_min=1.0,
        restart_backoff_max=8.0,
        restart_jitter=0.0,
        backoff_reset_factor=10.0,
        graceful_timeout=5.0,
    )
    values.update(overrides)
    return SupervisorConfig(**values)  # type: ignore[arg-type]


async def run_supervisor(
    nursery: trio.Nursery, cfg: SupervisorConfig, events: list[SupervisorEvent]
) -> BotSupervisor:
    sup = BotSupervisor(cfg, rng=random.Random(1), on_event=events.append)
    await nursery.start(sup.run)
    return sup


def kinds(events: list[SupervisorEvent], child_id: int = 1) -> list[str]:
    return [e.kind for e in events if e.child_id == child_id]


# --- the matrix: restart type × normal exit / crash × within / beyond intensity --------------

MATRIX = [
    # restart type, action, within intensity -> expected final state, expected starts
    (RestartType.PERMANENT, "exit", True, ChildState.RUNNING, 3),
    (RestartType.PERMANENT, "exit", False, ChildState.SUSPENDED, 4),
    (RestartType.PERMANENT, "crash", True, ChildState.RUNNING, 3),
    (RestartType.PERMANENT, "crash", False, ChildState.SUSPENDED, 4),
    (RestartType.TRANSIENT, "exit", True, ChildState.STOPPED, 1),
    (RestartType.TRANSIENT, "exit", False, ChildState.STOPPED, 1),
    (RestartType.TRANSIENT, "crash", True, ChildState.RUNNING, 3),
    (RestartType.TRANSIENT, "crash", False, ChildState.SUSPENDED, 4),
    (RestartType.TEMPORARY, "exit", True, ChildState.STOPPED, 1),
    (RestartType.TEMPORARY, "exit", False, ChildState.STOPPED, 1),
    (RestartType.TEMPORARY, "crash", True, ChildState.FAILED, 1),
    (RestartType.TEMPORARY, "crash", False, ChildState.FAILED, 1),
]


@pytest.mark.parametrize(("restart", "action", "within", "final", "starts"), MATRIX)
async def test_restart_matrix(
    autojump_clock: trio.testing.MockClock,
    restart: RestartType,
    action: str,
    within: bool,
    final: ChildState,
    starts: int,
) -> None:
    # Within intensity: two failures then a healthy run. Beyond: failing forever
    # (max_restarts=3, so the 4th failure within the period suspends).
    script: list[tuple[str, float | None]] = [(action, 0.5)] * 2 + [("run", None)]
    if not within:
        script = [(action, 0.5)]
    child = ScriptedChild(script)
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(), events)
        await sup.start_child(1, child, restart=restart)
        await trio.sleep(100)
        assert sup.child_state(1) is final
        assert len(child.starts) == starts
        await sup.stop()
    if final is ChildState.SUSPENDED:
        assert kinds(events)[-1] == "suspended"
        suspended = next(e for e in events if e.kind == "suspended")
        assert "restart intensity exceeded: 4 restarts within 60 s" in suspended.detail


async def test_backoff_is_exponential_to_the_exact_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    child = ScriptedChild([("crash", 0)])
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(max_restarts=10, restart_period=1000.0), events)
        await sup.start_child(1, child)
        await trio.sleep(200)
        await sup.stop()
    # Crashes at once; waits 1, 2, 4, 8, then capped at 8.
    assert child.starts[:7] == [0, 1, 3, 7, 15, 23, 31]
    delays = [e.delay for e in events if e.kind == "restarting"]
    assert delays[:6] == [1, 2, 4, 8, 8, 8]


async def test_backoff_resets_after_a_long_enough_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Crash twice quickly, then run 10 s (= min × reset factor) before crashing again.
    child = ScriptedChild([("crash", 0), ("crash", 0), ("crash", 10), ("crash", 0), ("run", None)])
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(max_restarts=10), events)
        await sup.start_child(1, child)
        await trio.sleep(100)
        await sup.stop()
    # starts: 0, +1 -> 1, +2 -> 3, runs 10 s -> crash at 13, reset -> +1 -> 14, crash, +2 -> 16
    assert child.starts == [0, 1, 3, 14, 16]


async def test_jitter_stays_within_its_band_and_is_the_retry_modules_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    child = ScriptedChild([("crash", 0)])
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(
            nursery, config(max_restarts=50, restart_period=1.0, restart_jitter=0.5), events
        )
        await sup.start_child(1, child)
        await trio.sleep(300)
        await sup.stop()
    delays = [e.delay for e in events if e.kind == "restarting"]
    assert len(delays) > 20
    assert all(d is not None and 0.5 <= d <= 8 for d in delays)
    assert len(set(delays)) > 10  # really jittered
    # One backoff family: the delays are exactly what a BackoffSchedule with the same settings
    # and the same seeded generator gives, and they are when the child really started again.
    schedule = BackoffSchedule(ExponentialBackoff(1.0, 8.0), ProportionalJitter(0.5), 8.0)
    rng = random.Random(1)
    expected = [schedule.delay(n, None, rng) for n in range(1, len(delays) + 1)]
    assert delays == expected
    restarted = [sum(expected[:n]) for n in range(1, len(child.starts))]
    assert child.starts[1:] == pytest.approx(restarted, abs=1e-9)


async def test_crashing_bot_never_disturbs_its_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    crasher = ScriptedChild([("crash", 0.1)])
    siblings = [ScriptedChild([("run", None)]) for _ in range(5)]
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(), events)
        for i, sibling in enumerate(siblings, start=2):
            await sup.start_child(i, sibling)
        await sup.start_child(1, crasher)
        await trio.sleep(120)
        assert sup.child_state(1) is ChildState.SUSPENDED
        for i, sibling in enumerate(siblings, start=2):
            assert sup.child_state(i) is ChildState.RUNNING
            assert sibling.starts == [0]  # never restarted, never touched
            assert sibling.stop_requested_at == []
        assert {e.child_id for e in events if e.kind != "started"} == {1}
        stats = sup.statistics()
        assert (stats.running, stats.suspended) == (5, 1)
        await sup.stop()


async def test_a_child_can_be_started_and_stopped_at_run_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ScriptedChild([("run", None)]), ScriptedChild([("run", None)])
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(), [])
        await sup.start_child(1, a)
        await trio.sleep(5)
        await sup.start_child(2, b)
        await trio.sleep(5)
        await sup.stop_child(1)
        assert sup.child_state(1) is None
        assert a.stop_requested_at == [10]
        assert sup.child_state(2) is ChildState.RUNNING
        with pytest.raises(RuntimeError, match="already supervised"):
            await sup.start_child(2, b)
        await sup.stop()


async def test_graceful_stop_waits_for_in_flight_work_then_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    quick = ScriptedChild([("run", None)], drain=2)  # finishes its work in 2 s
    slow = ScriptedChild([("run", None)], drain=60)  # would need 60 s: cut at the deadline
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(graceful_timeout=5.0), [])
        await sup.start_child(1, quick)
        await sup.start_child(2, slow)
        await trio.sleep(10)
        await sup.stop()
        assert trio.current_time() == 15
    assert quick.exited_at == 12
    assert slow.exited_at == 15
    assert sup.child_state(1) is ChildState.STOPPED


async def test_stop_during_backoff_does_not_restart(autojump_clock: trio.testing.MockClock) -> None:
    child = ScriptedChild([("crash", 0)])
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(
            nursery, config(restart_backoff_min=30, restart_backoff_max=30), []
        )
        await sup.start_child(1, child)
        await trio.sleep(10)
        assert sup.child_state(1) is ChildState.RESTARTING
        await sup.stop()
        assert trio.current_time() == 10
    assert child.starts == [0]


async def test_starting_after_stop_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(), [])
        await sup.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await sup.start_child(1, ScriptedChild([("run", None)]))


async def test_a_restart_exactly_restart_period_old_no_longer_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Crashes at once, restarted every 10 s (fixed backoff); restart_period = 10 and
    # max_restarts = 1: each crash sees the previous one exactly 10 s old, outside the window,
    # so the child is restarted for ever and never suspended.
    child = ScriptedChild([("crash", 0)])
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(
            nursery,
            config(
                max_restarts=1,
                restart_period=10.0,
                restart_backoff_min=10.0,
                restart_backoff_max=10.0,
            ),
            events,
        )
        await sup.start_child(1, child)
        await trio.sleep(95)
        assert sup.child_state(1) is ChildState.RESTARTING
        assert child.starts == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
        assert "suspended" not in kinds(events)
        await sup.stop()


async def test_one_more_crash_inside_the_window_suspends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The same child with a window a hair longer than the backoff: two crashes 10 s apart
    # are within 10.5 s, more than max_restarts = 1.
    child = ScriptedChild([("crash", 0)])
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(
            nursery,
            config(
                max_restarts=1,
                restart_period=10.5,
                restart_backoff_min=10.0,
                restart_backoff_max=10.0,
            ),
            events,
        )
        await sup.start_child(1, child)
        await trio.sleep(95)
        assert sup.child_state(1) is ChildState.SUSPENDED
        assert child.starts == [0, 10]
        await sup.stop()


async def test_a_crash_is_logged_and_announced_without_the_token_it_carries(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    token = "123456789:AAEhBP0av28bM4Nq2mY9sGkPmQ4DkX0aBcD"

    class LeakyChild(ScriptedChild):
        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            self.starts.append(trio.current_time())
            task_status.started()
            raise Crash(f"GET https://api.telegram.org/bot{token}/getMe: connection reset")

    caplog.set_level(logging.WARNING, logger="botvisor")
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(max_restarts=1), events)
        await sup.start_child(1, LeakyChild([("run", None)]))
        await trio.sleep(30)
        assert sup.child_state(1) is ChildState.SUSPENDED
        await sup.stop()
    secret = token.split(":")[1]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("botvisor")]
    assert any("crashed" in m for m in logged)
    assert any("suspended" in m for m in logged)
    details = [e.detail for e in events if e.kind in ("crashed", "restarting", "suspended")]
    assert details
    for text in [*logged, *details]:
        assert secret not in text
    assert any("bot123456789:…/getMe" in text for text in details)
    stats = sup.child_statistics(1)
    assert stats is not None and secret not in (stats.last_error or "")


class NeverStarts:
    """A child whose run ends (or crashes) before it reports that it started."""

    def __init__(self, crash: bool) -> None:
        self.crash = crash
        self.runs = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        await trio.sleep(0.5)
        if self.crash:
            raise Crash("failed while starting")

    def request_stop(self) -> None:
        pass


@pytest.mark.parametrize("crash", [False, True])
async def test_a_child_that_ends_before_it_started_is_a_crash_and_start_child_returns(
    autojump_clock: trio.testing.MockClock, crash: bool
) -> None:
    # The child runs in its supervising task (no nursery.start): a run that returns without
    # task_status.started() must still be a crash, and start_child must not wait forever.
    child = NeverStarts(crash)
    events: list[SupervisorEvent] = []
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(nursery, config(max_restarts=1), events)
        with trio.fail_after(1):
            await sup.start_child(1, child, restart=RestartType.TEMPORARY)
        assert sup.child_state(1) is ChildState.FAILED
        (crashed,) = [e for e in events if e.kind == "crashed"]
        expected = "failed while starting" if crash else "without reporting that it started"
        assert expected in crashed.detail
        assert "started" not in kinds(events)
        assert child.runs == 1
        await sup.stop()
