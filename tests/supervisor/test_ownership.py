"""Who owns a bot: the config file owns the bots it declares, the admin API those it added
(in process, MockClock)."""

from __future__ import annotations

import logging
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
from tests.harness import EPOCH, admin_client, bot_token, make_config, running_fleet


async def test_the_api_refuses_to_remove_a_config_bot_but_suspends_and_resumes_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with running_fleet(tmp_path / "o.db", [1]) as fleet, admin_client(fleet) as admin:
        refused = await admin.delete("/admin/bots/1")
        assert refused.status_code == 409, refused.text
        message = refused.json()["error"]["message"]
        assert message == (
            "user_id 1 is declared in the config file, which owns it: remove its [[bots]] "
            "entry and restart to unregister it (suspend and resume work here)"
        )
        assert (await admin.get("/admin/bots/1")).json()["state"] == "running"
        assert await fleet.handle.store.get_bot(1) is not None
        assert (await admin.post("/admin/bots/1/suspend")).status_code == 200
        assert (await admin.post("/admin/bots/1/resume")).status_code == 200
        assert (await admin.get("/admin/bots/1")).json()["state"] == "running"


async def test_a_config_bot_with_the_user_id_of_an_api_bot_stops_the_start_naming_both(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "o.db"
    api = SimulatedBotApi(rng=random.Random(1))
    api_token = bot_token(7)
    api.add_bot(api_token)
    async with running_fleet(db, [1], api=api) as fleet, admin_client(fleet) as admin:
        added = await admin.post("/admin/bots", json={"user_id": 7, "token": api_token})
        assert added.status_code == 201, added.text
        before = await fleet.handle.store.list_bots()

    file_token = bot_token(8)
    api.add_bot(file_token)

    def declaring_seven(config: Config) -> Config:
        bots = (*config.bots, BotConfig(user_id=7, token=BotToken(file_token)))
        return config.model_copy(update={"bots": bots})

    with pytest.raises(BaseException) as refused:  # Trio wraps it in exception groups
        async with running_fleet(db, [1], api=api, configure=declaring_seven):
            pass
    error = setup_error(refused.value)
    assert error is not None, refused.value
    assert str(error) == (
        "bots[1] (user_id 7) has the user_id of a bot added through the admin API (user_id 7, "
        f"token {BotToken(api_token).redacted}): a config file does not take over an API bot; "
        "remove the API bot (DELETE /admin/bots/{user_id}) or give the [[bots]] entry another "
        "user_id"
    )
    assert api_token not in str(error) and file_token not in str(error)
    # Nothing stored changed: the API bot keeps its token and its source.
    async with running_fleet(db, [1], api=api) as fleet:
        assert await fleet.handle.store.list_bots() == before


async def test_bots_no_longer_in_the_file_are_unregistered_with_a_warning_each(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "o.db"
    async with running_fleet(db, [1, 2, 3]):
        pass
    with caplog.at_level(logging.WARNING, logger="botvisor.fleet"):
        async with running_fleet(db, [1]) as fleet:
            assert [record.user_id for record in await fleet.handle.store.list_bots()] == [1]
    warned = [r.getMessage() for r in caplog.records if r.name == "botvisor.fleet"]
    assert warned == [
        f"bot {uid} is no longer declared in the config file: unregistering it "
        "(its health history stays)"
        for uid in (2, 3)
    ]


def daemon_without_bots(db: Path, *, prune: bool) -> Daemon:
    api = SimulatedBotApi(rng=random.Random(2))
    return Daemon(
        make_config(db, [], tokens={}),
        wall_clock=anchored_wall_clock(EPOCH),
        rng=random.Random(3),
        transport=SimulatedTransport(api),
        store_offload=run_inline,
        prune_config_bots=prune,
    )


async def test_a_file_with_no_bots_unregisters_the_stored_ones_only_with_the_flag(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "o.db"
    async with running_fleet(db, [1, 2]) as fleet:
        before = await fleet.handle.store.list_bots()

    with pytest.raises(BaseException) as refused:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon_without_bots(db, prune=False).run)
    error = setup_error(refused.value)
    assert error is not None, refused.value
    assert str(error) == (
        "the config file declares no [[bots]], but 2 bot(s) registered from it are stored "
        "(user_id 1, 2); starting would unregister every one of them. If that is what you "
        "want, start once with --prune-config-bots; otherwise put the [[bots]] back"
    )
    async with running_fleet(db, [1, 2]) as fleet:
        assert await fleet.handle.store.list_bots() == before

    daemon = daemon_without_bots(db, prune=True)
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(daemon.run)
        assert await handle.store.list_bots() == []
        daemon.request_shutdown()
