"""At start: a config bot whose token a bot added through the API already has is refused, and
the open-files check counts the bots that will poll (in process, MockClock)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import BotConfig, BotToken
from actors.simulator import SimulatedBotApi, SimulatedTransport
from storage import run_inline
from supervisor import Config
from supervisor.clock import anchored_wall_clock
from supervisor.daemon import Daemon, setup_error
from supervisor.fdlimit import OpenFilesLimit, OpenFilesLimitError
from tests.harness import EPOCH, admin_client, bot_token, make_config, running_fleet


async def test_a_config_bot_with_the_token_of_an_api_bot_is_refused_and_nothing_changes(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "t.db"
    api = SimulatedBotApi(rng=random.Random(1))
    taken = bot_token(7)
    api.add_bot(taken)
    async with running_fleet(db, [1], api=api) as fleet, admin_client(fleet) as admin:
        added = await admin.post("/admin/bots", json={"user_id": 7, "token": taken})
        assert added.status_code == 201, added.text
        before = await fleet.handle.store.list_bots()

    def with_taken_token(config: Config) -> Config:
        bots = (*config.bots, BotConfig(user_id=2, token=BotToken(taken)))
        return config.model_copy(update={"bots": bots})

    with pytest.raises(BaseException) as refused:  # Trio wraps it in exception groups
        async with running_fleet(db, [1], api=api, configure=with_taken_token):
            pass
    error = setup_error(refused.value)
    assert error is not None, refused.value
    assert str(error) == (
        f"bots[1].token (user_id 2): the token {BotToken(taken).redacted} is already "
        "registered for user_id 7, added through the admin API; one bot serves one tenant: "
        "remove user_id 7 (DELETE /admin/bots/7) or this [[bots]] entry"
    )
    assert taken not in str(error)

    async with running_fleet(db, [1], api=api) as fleet:
        assert await fleet.handle.store.list_bots() == before
        assert [a.user_id for a in fleet.handle.fleet.actors()] == [1, 7]


async def run_with_limit(
    db: Path, user_ids: list[int], soft: int, *, suspend: tuple[int, ...] = ()
) -> None:
    """Start the daemon with the open-files limit ``soft``, suspend ``suspend``, stop it."""
    api = SimulatedBotApi(rng=random.Random(2))
    tokens = {uid: bot_token(uid) for uid in user_ids}
    for token in tokens.values():
        api.add_bot(token)
    daemon = Daemon(
        make_config(db, user_ids, tokens=tokens),
        wall_clock=anchored_wall_clock(EPOCH),
        rng=random.Random(3),
        transport=SimulatedTransport(api),
        store_offload=run_inline,
        open_files=OpenFilesLimit(soft=soft, hard=soft, before=soft),
    )
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(daemon.run)
        for user_id in suspend:
            await handle.fleet.suspend(user_id)
        daemon.request_shutdown()


async def test_the_daemon_starts_when_the_fleet_fits_and_refuses_one_bot_more(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # 64 + 4 × 9 = 100 open files.
    await run_with_limit(tmp_path / "a.db", list(range(1, 10)), soft=100)
    with pytest.raises(BaseException) as refused:  # Trio wraps it in exception groups
        await run_with_limit(tmp_path / "b.db", list(range(1, 11)), soft=100)
    error = setup_error(refused.value)
    assert isinstance(error, OpenFilesLimitError), refused.value
    assert str(error).startswith("10 polling bots need about 104 open files")


async def test_suspended_bots_do_not_count_against_the_open_files_limit(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "s.db"
    await run_with_limit(db, list(range(1, 11)), soft=1000, suspend=(10,))
    # 10 bots, one of them suspended: 9 poll, and 100 open files are enough.
    await run_with_limit(db, list(range(1, 11)), soft=100)
