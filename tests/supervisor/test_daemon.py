"""The daemon's tree: graceful shutdown order and what it leaves behind, on a MockClock."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import TelegramConfig
from actors.simulator import SimulatedBotApi
from storage import WriterState
from supervisor import Config, SupervisorConfig
from tests.harness import EPOCH, running_fleet


def slow_handlers(config: Config) -> Config:
    bots = tuple(
        b.model_copy(update={"handler": "tests.handlers_for_tests:slow_echo"}) for b in config.bots
    )
    return config.model_copy(update={"bots": bots})


async def test_shutdown_stops_admin_then_bots_then_metrics_then_storage(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="botvisor")
    api = SimulatedBotApi(rng=random.Random(1))
    async with running_fleet(
        tmp_path / "d.db", [1, 2], api=api, admin=True, configure=slow_handlers
    ) as fleet:
        api.send_user_message(fleet.tokens[1], 5, "busy for 100 s")
        await trio.sleep(10)
        store = fleet.handle.store
        shutdown_at = trio.current_time()
    # The in-flight handler got exactly the grace period (5 s), then the rest stopped at once.
    assert trio.current_time() == shutdown_at + 5

    steps = [
        "shutting down",
        "shutdown: admin API stopped",
        "shutdown: bots stopped",
        "shutdown: final health snapshot written",
        "shutdown complete: database closed",
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == "botvisor"]
    positions = [next(i for i, m in enumerate(messages) if m.startswith(s)) for s in steps]
    assert positions == sorted(positions)
    assert store.writer.state is WriterState.STOPPED


class _PollsAtAdminStop(logging.Handler):
    """Reads the simulator's poll counters when the daemon logs that its admin API stopped."""

    def __init__(self, api: SimulatedBotApi) -> None:
        super().__init__()
        self.api = api
        self.seen: tuple[int, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("shutdown: admin API stopped"):
            stats = self.api.statistics()
            self.seen = (stats.waiting_polls, stats.calls_by_method.get("getUpdates", 0))


async def test_every_bot_stops_polling_at_once_when_shutdown_begins(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(3))
    watcher = _PollsAtAdminStop(api)
    logger = logging.getLogger("botvisor")
    logger.addHandler(watcher)
    try:
        async with running_fleet(tmp_path / "d.db", [1, 2, 3], api=api, admin=True) as fleet:
            await trio.sleep(10)
            assert api.statistics().waiting_polls == 3
            polls_before = api.statistics().calls_by_method["getUpdates"]
            assert fleet.handle.admin_url is not None
    finally:
        logger.removeHandler(watcher)
    # Before the admin API (stopped early in a shutdown) was down, no long poll was left
    # waiting at Telegram and none had started since the shutdown began.
    assert watcher.seen == (0, polls_before)
    assert api.statistics().calls_by_method["getUpdates"] == polls_before


async def test_no_bot_starts_a_get_updates_after_the_stop_request(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # One-second polls cycle all the time, and a handler 100 s busy keeps the shutdown in its
    # 8 s grace: a bot still polling during it would add getUpdates calls at the server.
    api = SimulatedBotApi(rng=random.Random(4))
    bots = list(range(1, 21))
    async with running_fleet(
        tmp_path / "d.db",
        bots,
        api=api,
        configure=slow_handlers,
        telegram=TelegramConfig(api_base="http://sim.invalid", poll_timeout=1),
        supervisor=SupervisorConfig(graceful_timeout=8.0, restart_jitter=0.0),
    ) as fleet:
        api.send_user_message(fleet.tokens[1], 42, "take your time")
        await trio.sleep(5.5)
        assert api.statistics().waiting_polls == len(bots)
        assert fleet.handle.fleet.get(1).statistics().lanes is not None
        fleet.daemon.request_shutdown()
        asked_at = trio.current_time()
        polls_at_request = api.statistics().calls_by_method["getUpdates"]
        await trio.sleep(4)  # half the grace: the busy handler keeps the daemon up
        assert api.statistics().calls_by_method["getUpdates"] == polls_at_request
        assert api.statistics().waiting_polls == 0
    assert api.statistics().calls_by_method["getUpdates"] == polls_at_request
    # The grace ran from the request: the busy handler was cancelled at its end.
    assert trio.current_time() == pytest.approx(asked_at + 8.0)
    assert api.report().answered == 0


async def test_the_final_snapshot_is_taken_after_the_bots_stopped(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    from storage import Store, run_inline

    api = SimulatedBotApi(rng=random.Random(2))
    db = tmp_path / "d.db"
    async with running_fleet(db, [1], api=api, configure=slow_handlers) as fleet:
        api.send_user_message(fleet.tokens[1], 5, "busy for 100 s")
        await trio.sleep(10)
    store = Store(db, offload=run_inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        history = await store.history(1, since=0)
        await store.stop()
    # One row, written when the bot had stopped: 10 s of running + 5 s of grace.
    assert [row.recorded_at for row in history] == [EPOCH + 15]


async def test_a_taken_admin_address_is_a_setup_error_naming_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    from admin import AdminConfig
    from supervisor.daemon import setup_error

    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        def on_taken_port(config: Config) -> Config:
            return config.model_copy(update={"admin": AdminConfig(listen=f"127.0.0.1:{port}")})

        with pytest.raises(BaseException) as failure:
            async with running_fleet(tmp_path / "d.db", [1], configure=on_taken_port):
                pass
    error = setup_error(failure.value)
    assert error is not None
    assert f"cannot listen on 127.0.0.1:{port}" in str(error)
    assert "change admin.listen" in str(error)


async def test_the_fleet_is_built_with_the_collector_paused_and_it_runs_again_after(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from supervisor import fleet as fleet_module

    seen: list[bool] = []
    original = fleet_module.Fleet.load

    async def load(self: fleet_module.Fleet, *args: object, **kwargs: object) -> None:
        seen.append(gc.isenabled())
        await original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fleet_module.Fleet, "load", load)
    assert gc.isenabled()
    async with running_fleet(tmp_path / "d.db", [1, 2]) as fleet:
        assert len(fleet.handle.fleet.actors()) == 2
        assert gc.isenabled()
    assert seen == [False]


def test_a_daemon_that_owns_its_process_freezes_the_fleet_and_makes_full_collections_rare() -> None:
    import gc

    from supervisor.daemon import FULL_COLLECTION_EVERY, _collector_paused

    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    try:
        with _collector_paused(freeze=False):
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_threshold() == before
        with _collector_paused(freeze=True):
            assert not gc.isenabled()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
        assert gc.get_threshold() == (*before[:2], FULL_COLLECTION_EVERY)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_the_polls_of_a_bot_stopped_by_the_end_of_its_grace_are_counted(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # No tick writes usage here (report_interval an hour), and a handler busy for 100 s
    # makes the shutdown end the bot by its 8 s grace (a cancellation): the polls it made
    # must still reach the usage table, as they reached Telegram.
    from storage import Store, run_inline

    api = SimulatedBotApi(rng=random.Random(6))
    db = tmp_path / "d.db"
    async with running_fleet(
        db,
        [1],
        api=api,
        configure=slow_handlers,
        telegram=TelegramConfig(api_base="http://sim.invalid", poll_timeout=1),
        supervisor=SupervisorConfig(
            graceful_timeout=8.0, restart_jitter=0.0, report_interval=3600.0
        ),
    ) as fleet:
        api.send_user_message(fleet.tokens[1], 42, "take your time")
        await trio.sleep(5.5)
        polls = api.statistics().calls_by_method["getUpdates"]
        assert polls >= 3
    store = Store(db, offload=run_inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        rows = await store.usage("hour", 0, 1e12, user_id=1)
        await store.stop()
    assert api.statistics().calls_by_method["getUpdates"] == polls
    counted = sum(row.counts.get("calls.getUpdates.ok", 0) for row in rows)
    # Every poll answered is counted; the one in flight when the stop came was cancelled
    # with no answer, so it has no outcome to count.
    assert counted == polls - 1
