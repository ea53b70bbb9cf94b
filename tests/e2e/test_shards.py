"""Shards as real processes (issue 16, stage 1): three ``botvisor run --shard i/3`` share one
simulated Bot API (``botvisor sim-server``) and one config file of bots; every bot is polled
by exactly one shard, its owner, and no getUpdates meets a 409. Through real nginx routing
``/s/{i}/`` to shard ``i``, a webhook delivery reaches its owner and another shard's path is
a 421."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import BotToken, derive_secret_token, jump_hash
from tests import payloads
from tests.e2e.process import DaemonProcess
from tests.e2e.shards import (
    SimServer,
    free_port,
    nginx_binary,
    nginx_config,
    shard_process,
    write_webhook_shard_config,
)

SHARDS = 3
log = logging.getLogger("tests.e2e.shards")
# The scale: about 2,000 bots over three shards.
BOTS = 2000


@asynccontextmanager
async def sim_server(
    bots: int, *, rate: float = 0.02, messages: int | None = None
) -> AsyncIterator[SimServer]:
    sim = SimServer(bots=bots, rate=rate, messages=messages)
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
            shard_process(tmp_path, i, SHARDS, api_base=sim.url, bots=sim.bots, poll_timeout=10)
            for i in range(SHARDS)
        ]
        async with trio.open_nursery() as nursery, killed_at_exit(daemons):
            started = trio.current_time()
            admins = await start_all(nursery, daemons)
            log.info("%d shards started in %.1f s", SHARDS, trio.current_time() - started)
            # Steady state: every bot's first long poll has been answered (by an update or
            # its 10 s timeout) and it has polled again.
            with trio.fail_after(120):
                while True:
                    seen = (await http.get(f"{sim.url}/sim/pollers")).json()
                    calls = seen["pollers"]
                    if len(calls) == BOTS and all(sum(by.values()) >= 2 for by in calls.values()):
                        break
                    await trio.sleep(0.2)
            log.info("steady state after %.1f s", trio.current_time() - started)
            listed = [(await http.get(f"{url}/admin/bots")).json() for url in admins]
            scraped = [(await http.get(f"{url}/metrics")).text for url in admins]
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
    for index, text in enumerate(scraped):
        series = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert series
        assert all(f'shard="{index}"' in line for line in series), index
    for daemon in daemons:
        assert "Traceback" not in daemon.text


async def pollers(http: httpx.AsyncClient, sim: SimServer) -> dict[str, Any]:
    answer: dict[str, Any] = (await http.get(f"{sim.url}/sim/pollers")).json()
    return answer


def restarts(metrics: str) -> float:
    (value,) = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("botvisor_supervisor_restarts_total")
    ]
    return value


async def report(http: httpx.AsyncClient, sim: SimServer) -> dict[str, Any]:
    answer: dict[str, Any] = (await http.get(f"{sim.url}/sim/report")).json()
    return answer


async def test_kill_9_of_one_shard_under_load_restarts_nothing_elsewhere_and_loses_nothing(
    tmp_path: Path,
) -> None:
    # Each bot's one user writes `messages` times (mostly messages; a few edits and button
    # presses) at `rate` a second; shard 1 is killed once a third are answered, and started
    # again on its own database.
    bots, rate, messages = 600, 0.2, 3
    async with (
        sim_server(bots, rate=rate, messages=messages) as sim,
        httpx.AsyncClient(timeout=30) as http,
    ):
        owners = {BotToken(token).bot_id: jump_hash(uid, SHARDS) for uid, token in sim.bots.items()}
        daemons = [
            shard_process(tmp_path, i, SHARDS, api_base=sim.url, bots=sim.bots)
            for i in range(SHARDS)
        ]
        victim = 1
        async with trio.open_nursery() as nursery, killed_at_exit(daemons):
            admins = await start_all(nursery, daemons)
            with trio.fail_after(120):
                while (await report(http, sim))["answered"] < bots:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            daemons[victim].kill()
            assert await daemons[victim].wait() == -signal.SIGKILL
            at_kill = await report(http, sim)
            before = (await pollers(http, sim))["pollers"]
            # The same shard again, on its own database.
            again = DaemonProcess(daemons[victim].config, args=daemons[victim].args)
            daemons.append(again)
            await again.start(nursery, within=60)
            # Every bot of the killed shard polls again, from the restarted shard; every user
            # is done writing and every update is handled.
            name = f"shard-{victim}"
            its_bots = {str(bot_id) for bot_id, owner in owners.items() if owner == victim}
            done = False
            with trio.move_on_after(180):
                while not done:
                    await trio.sleep(0.2)
                    now = (await pollers(http, sim))["pollers"]
                    seen = await report(http, sim)
                    back = sum(now[b].get(name, 0) > before[b].get(name, 0) for b in its_bots)
                    done = (
                        back == len(its_bots)
                        and seen["active_chats"] == 0
                        and seen["updates_pending"] == 0
                        and seen["unanswered"] == 0
                    )
            summary = {k: v for k, v in seen.items() if k != "bots"}
            assert done, f"{back} of {len(its_bots)} bots back on {name}; {summary}"
            polled = await pollers(http, sim)
            survivors = [admins[i] for i in range(SHARDS) if i != victim]
            scraped = [(await http.get(f"{url}/metrics")).text for url in survivors]
            codes = await stop_all([d for i, d in enumerate(daemons) if i != victim])
            nursery.cancel_scope.cancel()

    assert codes == [0] * SHARDS
    log.info(
        "killed with %d of %d answered; %d duplicates after its restart",
        at_kill["answered"],
        seen["user_messages"],
        seen["duplicates"],
    )
    # Every message answered, in order, and once but for the killed shard's updates in
    # flight (handled, not yet marked done): at most one per bot, as each bot's one chat is
    # handled one update at a time.
    assert seen["answered"] == seen["user_messages"]
    assert seen["out_of_order"] == 0
    duplicated = {
        bot_id: bot["duplicates"] for bot_id, bot in seen["bots"].items() if bot["duplicates"]
    }
    assert set(duplicated) <= its_bots, set(duplicated) - its_bots
    assert all(count == 1 for count in duplicated.values()), duplicated
    # The other shards restarted nothing, and no bot had a second poller, not even across
    # the kill and the restart.
    assert [restarts(text) for text in scraped] == [0.0, 0.0]
    for bot_id, by in polled["pollers"].items():
        assert set(by) == {f"shard-{owners[int(bot_id)]}"}, (bot_id, by)
    assert polled["conflicts"] == {}
    assert polled["statistics"]["conflicts"] == 0


NGINX = nginx_binary()
MASTER = "the webhook master secret of the nginx shard test"


@asynccontextmanager
async def running_nginx(conf: Path, port: int) -> AsyncIterator[None]:
    """nginx in the foreground on ``conf`` until the block ends; ready once it accepts."""
    assert NGINX is not None
    process = await trio.lowlevel.open_process(
        [NGINX, "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(30):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    assert process.returncode is None, (conf.parent / "logs/error.log").read_text()
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGQUIT)
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed: apt-get install nginx")
async def test_through_nginx_the_registered_url_reaches_the_owner_and_another_shards_is_421(
    tmp_path: Path,
) -> None:
    count = 2
    async with sim_server(12) as sim, httpx.AsyncClient(timeout=30) as http:
        owners = {uid: jump_hash(uid, count) for uid in sim.bots}
        assert set(owners.values()) == {0, 1}
        nginx_port = free_port()
        hook_ports = {i: free_port() for i in range(count)}
        public_url = f"http://127.0.0.1:{nginx_port}/tg"
        conf = nginx_config(tmp_path / "nginx", port=nginx_port, path="/tg", shards=hook_ports)
        daemons = [
            DaemonProcess(
                write_webhook_shard_config(
                    tmp_path / f"hook-{i}.toml",
                    api_base=sim.url,
                    db_path=tmp_path / f"hook-{i}.db",
                    bots=sim.bots,
                    listen_port=hook_ports[i],
                    public_url=public_url,
                ),
                env={"BOTVISOR_WEBHOOK_SECRET": MASTER},
                args=("--shard", f"{i}/{count}"),
            )
            for i in range(count)
        ]
        user_id = min(sim.bots)
        owner, other = owners[user_id], 1 - owners[user_id]
        secret = derive_secret_token(MASTER, BotToken(sim.bots[user_id]).bot_id)
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret, "content-type": "application/json"}
        async with (
            running_nginx(conf, nginx_port),
            trio.open_nursery() as nursery,
            killed_at_exit(daemons),
        ):
            admins = await start_all(nursery, daemons)
            with trio.fail_after(30):
                for url in admins:
                    while (await http.get(f"{url}/readyz")).status_code != 200:  # noqa: ASYNC110
                        await trio.sleep(0.05)
            # Each shard registered its own bots, and only those, at its shard's URL.
            bot_ids = {BotToken(token).bot_id: uid for uid, token in sim.bots.items()}
            with trio.fail_after(30):
                while True:
                    hooks = (await http.get(f"{sim.url}/sim/webhooks")).json()["webhooks"]
                    if len(hooks) == len(sim.bots):
                        break
                    await trio.sleep(0.05)
            registered = {bot_ids[int(bot_id)]: url for bot_id, url in hooks.items()}
            assert registered == {uid: f"{public_url}/s/{owners[uid]}/{uid}" for uid in sim.bots}
            wrong = await http.post(
                f"{public_url}/s/{other}/{user_id}",
                content=json.dumps(payloads.message(1, chat_id=77, text="to the wrong shard")),
                headers=headers,
            )
            right = await http.post(
                registered[user_id],
                content=json.dumps(payloads.message(2, chat_id=77, text="to its owner")),
                headers=headers,
            )
            health = f"{admins[owner]}/admin/system/bot-health/{user_id}"
            with trio.fail_after(30):
                while (await http.get(health)).json()["handled_updates"] < 1:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            elsewhere = await http.get(f"{admins[other]}/admin/system/bot-health/{user_id}")
            codes = await stop_all(daemons)
            nursery.cancel_scope.cancel()

    assert wrong.status_code == 421, wrong.text
    assert f"belongs to shard {owner}" in wrong.text
    assert right.status_code == 200, right.text
    assert elsewhere.status_code == 421
    assert elsewhere.json()["owner_shard"] == owner
    assert codes == [0] * count, [d.text[-2000:] for d in daemons]
    # The misdirected update was stored nowhere; the other is in its owner's inbox, done.
    for index in range(count):
        with sqlite3.connect(tmp_path / f"hook-{index}.db") as db:
            rows = db.execute(
                "select update_id from inbox where user_id = ? order by update_id", (user_id,)
            ).fetchall()
        assert rows == ([(2,)] if index == owner else [])
    for daemon in daemons:
        assert "Traceback" not in daemon.text
        assert secret not in daemon.text
