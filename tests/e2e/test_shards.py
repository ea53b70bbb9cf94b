"""Shards as real processes (issue 16, stage 1): three ``botvisor run --shard i/3`` share one
simulated Bot API (``botvisor sim-server``) and one config file of bots; every bot is polled
by exactly one shard, its owner, and no getUpdates meets a 409. Through real nginx routing
``/s/{i}/`` to shard ``i``, a webhook delivery reaches its owner and another shard's path is
a 421."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from actors import BotToken, jump_hash
from tests.e2e.process import DaemonProcess
from tests.e2e.shards import SimServer, shard_process

SHARDS = 3
log = logging.getLogger("tests.e2e.shards")
BOTS = 450


@asynccontextmanager
async def sim_server(bots: int) -> AsyncIterator[SimServer]:
    sim = SimServer(bots=bots)
    try:
        await sim.start()
        yield sim
    finally:
        with trio.CancelScope(shield=True):
            await sim.stop()


async def start_all(nursery: trio.Nursery, daemons: list[DaemonProcess]) -> list[str]:
    """Start every shard at once; their admin URLs once every one is ready."""
    urls: dict[int, str] = {}

    async def start(index: int) -> None:
        urls[index] = await daemons[index].start(nursery, within=60)

    async with trio.open_nursery() as starting:
        for index in range(len(daemons)):
            starting.start_soon(start, index)
    return [urls[index] for index in range(len(daemons))]


@asynccontextmanager
async def killed_at_exit(daemons: list[DaemonProcess]) -> AsyncIterator[None]:
    """Whatever happens, no shard outlives the test."""
    try:
        yield
    finally:
        for daemon in daemons:
            if daemon.process is not None and daemon.process.returncode is None:
                daemon.kill()


async def stop_all(daemons: list[DaemonProcess]) -> list[int]:
    for daemon in daemons:
        if daemon.process is not None and daemon.process.returncode is None:
            daemon.send_signal(signal.SIGTERM)
    return [await daemon.wait(within=60) for daemon in daemons]


async def test_every_bot_is_polled_by_exactly_its_owner_and_no_poll_meets_a_409(
    tmp_path: Path,
) -> None:
    async with sim_server(BOTS) as sim, httpx.AsyncClient(timeout=30) as http:
        bot_ids = {BotToken(token).bot_id: uid for uid, token in sim.bots.items()}
        owners = {uid: jump_hash(uid, SHARDS) for uid in sim.bots}
        assert set(owners.values()) == set(range(SHARDS))
        daemons = [
            shard_process(tmp_path, i, SHARDS, api_base=sim.url, bots=sim.bots)
            for i in range(SHARDS)
        ]
        async with trio.open_nursery() as nursery, killed_at_exit(daemons):
            started = trio.current_time()
            admins = await start_all(nursery, daemons)
            log.info("%d shards started in %.1f s", SHARDS, trio.current_time() - started)
            # Steady state: every bot's first long poll (2 s) has been answered and it has
            # polled again.
            with trio.fail_after(60):
                while True:
                    seen = (await http.get(f"{sim.url}/sim/pollers")).json()
                    calls = seen["pollers"]
                    if len(calls) == BOTS and all(sum(by.values()) >= 2 for by in calls.values()):
                        break
                    await trio.sleep(0.2)
            log.info("steady state after %.1f s", trio.current_time() - started)
            listed = [(await http.get(f"{url}/admin/bots")).json() for url in admins]
            codes = await stop_all(daemons)
            nursery.cancel_scope.cancel()

    assert codes == [0] * SHARDS, [d.text[-2000:] for d in daemons]
    wrong = {
        bot_ids[int(bot_id)]: by
        for bot_id, by in calls.items()
        if set(by) != {f"shard-{owners[bot_ids[int(bot_id)]]}"}
    }
    assert not wrong, list(wrong.items())[:5]
    assert seen["conflicts"] == {}
    assert seen["statistics"]["conflicts"] == 0
    for index, listing in enumerate(listed):
        assert [bot["user_id"] for bot in listing["bots"]] == sorted(
            uid for uid, owner in owners.items() if owner == index
        )
    for daemon in daemons:
        assert "Traceback" not in daemon.text
