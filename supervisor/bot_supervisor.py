"""BotSupervisor: a dynamic one_for_one supervisor over tenant bots (Erlang/OTP semantics).

Each child is supervised on its own: its crash restarts only itself, after a per-child
exponential backoff; more than ``max_restarts`` restarts within ``restart_period`` seconds
suspend that child (its siblings never notice). Children are added and removed at run time.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from actors import BackoffSchedule, ExponentialBackoff, ProportionalJitter, redact
from supervisor.config import SupervisorConfig

__all__ = [
    "BotSupervisor",
    "Child",
    "ChildState",
    "ChildStatistics",
    "RestartType",
    "SupervisorEvent",
    "SupervisorStatistics",
    "describe_crash",
]

log = logging.getLogger("botvisor.supervisor")


class RestartType(enum.Enum):
    PERMANENT = "permanent"  # restarted whenever it exits, normally or not
    TRANSIENT = "transient"  # restarted only after a crash (tenant bots)
    TEMPORARY = "temporary"  # never restarted


class ChildState(enum.Enum):
    STARTING = "starting"  # run() called, not yet reported ready
    RUNNING = "running"  # reported ready, working
    RESTARTING = "restarting"  # crashed; waiting its backoff before the next start
    STOPPING = "stopping"  # asked to stop; finishing in-flight work within the grace period
    STOPPED = "stopped"  # exited normally or was removed; not restarted
    FAILED = "failed"  # a temporary child crashed; not restarted
    SUSPENDED = "suspended"  # restart intensity exceeded; waits for an operator


class Child(Protocol):
    """What the supervisor runs: an actor with the ``nursery.start`` shape."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until done; call ``task_status.started()`` when really ready."""

    def request_stop(self) -> None:
        """Stop taking new work and return from ``run`` once in-flight work is done."""


@dataclass(frozen=True)
class SupervisorEvent:
    """Something that happened to a child: ``kind`` is started, crashed, restarting,
    suspended, stopped or failed."""

    child_id: int
    kind: str
    at: float
    detail: str = ""
    delay: float | None = None


@dataclass(frozen=True)
class ChildStatistics:
    child_id: int
    state: ChildState
    restart_type: RestartType
    restarts: int
    crashes: int
    last_error: str | None
    started_at: float | None
    next_start_at: float | None


@dataclass(frozen=True)
class SupervisorStatistics:
    children: int
    running: int
    restarting: int
    suspended: int
    total_restarts: int
    total_crashes: int


def describe_crash(exc: BaseException) -> str:
    """One redacted line naming the error, looking through single-exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return redact(f"{type(exc).__name__}: {exc}")


class _StartStatus:
    """The ``task_status`` a child's run is given: its ``started()`` marks the child RUNNING
    (what ``nursery.start`` returning did, without the nursery)."""

    __slots__ = ("_supervised", "_supervisor", "started_once")

    def __init__(self, supervisor: BotSupervisor, supervised: _Supervised) -> None:
        self._supervisor = supervisor
        self._supervised = supervised
        self.started_once = False

    def started(self, value: None = None) -> None:
        if self.started_once:
            raise RuntimeError("called 'started' twice on the same task status")
        self.started_once = True
        self._supervisor._started(self._supervised)


class _Supervised:
    """The supervisor's book-keeping for one child."""

    __slots__ = (
        "again",
        "backoff_step",
        "cancel_scope",
        "child",
        "child_id",
        "crashes",
        "done",
        "first_start",
        "forget",
        "last_error",
        "next_start_at",
        "restart",
        "restart_times",
        "restarts",
        "started_at",
        "state",
        "stop_requested",
    )

    def __init__(self, child_id: int, child: Child, restart: RestartType) -> None:
        self.child_id = child_id
        self.child = child
        self.restart = restart
        self.state = ChildState.STARTING
        self.cancel_scope = trio.CancelScope()
        # The restarts within restart_period, oldest first (a list: an empty deque costs a
        # 0.7 KiB block per bot, and a bot restarts rarely).
        self.restart_times: list[float] = []
        # Restarts since the backoff last reset: the next one waits the schedule's delay for
        # attempt backoff_step + 1.
        self.backoff_step = 0
        self.restarts = 0
        self.crashes = 0
        self.last_error: str | None = None
        self.started_at: float | None = None
        self.next_start_at: float | None = None
        self.stop_requested = False
        self.done = trio.Event()
        self.first_start = trio.Event()
        # Woken while its run was finishing: run it once more (a dormant webhook bot).
        self.again = False
        # Forgotten once it ends on its own (a dormant webhook bot keeps no book-keeping).
        self.forget = False

    def statistics(self) -> ChildStatistics:
        return ChildStatistics(
            child_id=self.child_id,
            state=self.state,
            restart_type=self.restart,
            restarts=self.restarts,
            crashes=self.crashes,
            last_error=self.last_error,
            started_at=self.started_at,
            next_start_at=self.next_start_at,
        )


class BotSupervisor:
    """Dynamic one_for_one supervision of tenant bots.

    ``run`` owns the nursery the children live in; ``start_child`` and ``stop_child`` may be
    called at any time while it runs.
    """

    def __init__(
        self,
        config: SupervisorConfig,
        *,
        rng: random.Random,
        on_event: Callable[[SupervisorEvent], None] | None = None,
    ) -> None:
        self._config = config
        self._rng = rng
        # The retry module's family, so a restart waits as a retry would with these settings.
        self._restart_delays = BackoffSchedule(
            ExponentialBackoff(config.restart_backoff_min, config.restart_backoff_max),
            ProportionalJitter(config.restart_jitter),
            max_delay=config.restart_backoff_max,
        )
        self._on_event = on_event
        self._children: dict[int, _Supervised] = {}
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._stop = trio.Event()

    # --- lifecycle -----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[BotSupervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Supervise children until ``stop`` has stopped them all."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    def begin_stop(self, graceful_timeout: float | None = None) -> None:
        """The start of a shutdown, without waiting: no child is started any more, every
        running child is asked to stop at once (its long poll is cancelled now, so no bot
        starts another while the rest of the daemon shuts down) and its in-flight work gets
        the grace period from now. :meth:`stop` then waits for them."""
        self._stopping = True
        timeout = self._config.graceful_timeout if graceful_timeout is None else graceful_timeout
        for supervised in reversed(list(self._children.values())):
            self._request_stop(supervised, timeout)

    async def stop(self, graceful_timeout: float | None = None) -> None:
        """Stop every child (in parallel, each within the grace period), then return."""
        self._stopping = True
        timeout = self._config.graceful_timeout if graceful_timeout is None else graceful_timeout
        async with trio.open_nursery() as nursery:
            for supervised in reversed(list(self._children.values())):
                nursery.start_soon(self._stop_supervised, supervised, timeout)
        self._stop.set()

    # --- children ------------------------------------------------------------------------

    async def start_child(
        self,
        child_id: int,
        child: Child,
        *,
        restart: RestartType = RestartType.TRANSIENT,
        forget: bool = False,
    ) -> ChildState:
        """Start supervising ``child``; return its state after its first start attempt.
        ``forget``: drop it from the book-keeping once it ends on its own (a webhook bot
        going dormant), as :meth:`wake` does."""
        if self._nursery is None or self._stopping:
            raise RuntimeError("the supervisor is not running; bots can't be started now")
        existing = self._children.get(child_id)
        if existing is not None and not existing.done.is_set():
            raise RuntimeError(f"bot {child_id} is already supervised ({existing.state.value})")
        supervised = _Supervised(child_id, child, restart)
        supervised.forget = forget
        self._children[child_id] = supervised
        self._nursery.start_soon(self._supervise, supervised)
        await supervised.first_start.wait()
        return supervised.state

    def wake(
        self, child_id: int, child: Child, *, restart: RestartType = RestartType.TRANSIENT
    ) -> None:
        """Start ``child`` now without waiting for it (a dormant webhook bot a delivery woke);
        if its previous run is still finishing, run it once more right after. Nothing while
        the supervisor is stopping (the caller's work waits for the next start). A child
        started here is forgotten once it ends on its own."""
        if self._nursery is None or self._stopping:
            return
        existing = self._children.get(child_id)
        if existing is not None and not existing.done.is_set():
            existing.again = True
            return
        supervised = _Supervised(child_id, child, restart)
        supervised.forget = True
        self._children[child_id] = supervised
        self._nursery.start_soon(self._supervise, supervised)

    async def stop_child(self, child_id: int, graceful_timeout: float | None = None) -> None:
        """Stop one child (gracefully, within the grace period) and forget it."""
        supervised = self._children.get(child_id)
        if supervised is None:
            raise KeyError(child_id)
        timeout = self._config.graceful_timeout if graceful_timeout is None else graceful_timeout
        await self._stop_supervised(supervised, timeout)
        if self._children.get(child_id) is supervised:
            del self._children[child_id]

    def child_ids(self) -> list[int]:
        """The children supervised now (running, starting, restarting or stopping; a dormant
        webhook bot is not one), oldest first."""
        return list(self._children)

    def child_state(self, child_id: int) -> ChildState | None:
        supervised = self._children.get(child_id)
        return None if supervised is None else supervised.state

    def child_statistics(self, child_id: int) -> ChildStatistics | None:
        supervised = self._children.get(child_id)
        return None if supervised is None else supervised.statistics()

    def statistics(self) -> SupervisorStatistics:
        states = [s.state for s in self._children.values()]
        return SupervisorStatistics(
            children=len(states),
            running=states.count(ChildState.RUNNING),
            restarting=states.count(ChildState.RESTARTING),
            suspended=states.count(ChildState.SUSPENDED),
            total_restarts=sum(s.restarts for s in self._children.values()),
            total_crashes=sum(s.crashes for s in self._children.values()),
        )

    # --- internals -----------------------------------------------------------------------

    def _request_stop(self, supervised: _Supervised, grace: float) -> None:
        """Ask one child to stop now; its in-flight work gets ``grace`` seconds from now (a
        child asked already keeps its earlier deadline)."""
        if supervised.done.is_set():
            supervised.stop_requested = True
            return
        if supervised.state in (ChildState.STARTING, ChildState.RUNNING):
            supervised.stop_requested = True
            supervised.state = ChildState.STOPPING
            supervised.child.request_stop()
            # In-flight work gets a deadline, not an instant cancel.
            supervised.cancel_scope.deadline = min(
                supervised.cancel_scope.deadline, trio.current_time() + grace
            )
        elif supervised.state is ChildState.STOPPING and supervised.stop_requested:
            pass  # asked already: its deadline stands
        else:
            supervised.stop_requested = True
            supervised.cancel_scope.cancel()

    async def _stop_supervised(self, supervised: _Supervised, grace: float) -> None:
        self._request_stop(supervised, grace)
        await supervised.done.wait()

    def _emit(
        self, supervised: _Supervised, kind: str, detail: str = "", delay: float | None = None
    ) -> None:
        if self._on_event is not None:
            self._on_event(
                SupervisorEvent(supervised.child_id, kind, trio.current_time(), detail, delay)
            )

    async def _supervise(self, supervised: _Supervised) -> None:
        try:
            with supervised.cancel_scope:
                await self._supervise_loop(supervised)
        finally:
            if supervised.state not in (ChildState.SUSPENDED, ChildState.FAILED):
                supervised.state = ChildState.STOPPED
            supervised.next_start_at = None
            supervised.first_start.set()
            supervised.done.set()
            if (
                supervised.forget
                and supervised.state is ChildState.STOPPED
                and not supervised.stop_requested
                and self._children.get(supervised.child_id) is supervised
            ):
                del self._children[supervised.child_id]

    async def _supervise_loop(self, supervised: _Supervised) -> None:
        while True:
            supervised.state = ChildState.STARTING
            supervised.again = False
            crashed: BaseException | None = None
            started_at = trio.current_time()
            try:
                await self._run_once(supervised)
            except Exception as exc:  # a bot's crash is contained here, never propagated
                crashed = exc
            ran_for = trio.current_time() - started_at
            supervised.first_start.set()

            if supervised.stop_requested:
                self._emit(supervised, "stopped")
                return
            if crashed is not None:
                supervised.crashes += 1
                supervised.last_error = describe_crash(crashed)
                log.warning("bot %s crashed: %s", supervised.child_id, supervised.last_error)
                self._emit(supervised, "crashed", supervised.last_error)
                if supervised.restart is RestartType.TEMPORARY:
                    supervised.state = ChildState.FAILED
                    return
            elif supervised.restart is not RestartType.PERMANENT:
                if supervised.again:
                    continue  # woken while it was finishing: its next run reads the inbox
                self._emit(supervised, "stopped")
                return

            if not self._admit_restart(supervised):
                return
            delay = self._backoff(supervised, ran_for)
            supervised.state = ChildState.RESTARTING
            supervised.next_start_at = trio.current_time() + delay
            self._emit(supervised, "restarting", supervised.last_error or "", delay)
            await trio.sleep_until(supervised.next_start_at)
            supervised.next_start_at = None
            supervised.restarts += 1

    async def _run_once(self, supervised: _Supervised) -> None:
        # The child runs in this task, with a status of its own instead of nursery.start's:
        # a nursery and a second task per bot (3 KiB and a scheduling step each) for nothing,
        # since this task only waits for the child anyway.
        status = _StartStatus(self, supervised)
        await supervised.child.run(task_status=status)
        if not status.started_once:
            raise RuntimeError("the bot's run returned without reporting that it started")

    def _started(self, supervised: _Supervised) -> None:
        supervised.state = ChildState.RUNNING
        supervised.started_at = trio.current_time()
        supervised.first_start.set()
        self._emit(supervised, "started")

    def _admit_restart(self, supervised: _Supervised) -> bool:
        """Apply restart intensity: more than max_restarts in restart_period suspends."""
        now = trio.current_time()
        times = supervised.restart_times
        times.append(now)
        horizon = now - self._config.restart_period
        if times[0] <= horizon:
            times[:] = [t for t in times if t > horizon]
        if len(times) > self._config.max_restarts:
            supervised.state = ChildState.SUSPENDED
            reason = (
                f"restart intensity exceeded: {len(times)} restarts within "
                f"{self._config.restart_period:g} s (max_restarts = {self._config.max_restarts})"
            )
            if supervised.last_error:
                reason += f"; last error: {supervised.last_error}"
            log.error("bot %s suspended: %s", supervised.child_id, reason)
            self._emit(supervised, "suspended", reason)
            return False
        return True

    def _backoff(self, supervised: _Supervised, ran_for: float) -> float:
        """Exponential from restart_backoff_min to restart_backoff_max, with jitter; back to
        the start after a run of restart_backoff_min × backoff_reset_factor."""
        config = self._config
        if ran_for >= config.restart_backoff_min * config.backoff_reset_factor:
            supervised.backoff_step = 0
        supervised.backoff_step += 1
        return self._restart_delays.delay(supervised.backoff_step, None, self._rng)
