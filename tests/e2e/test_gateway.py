"""The fleet gateway as a real process (issue 16 item 6): ``botvisor gateway`` over three real
``botvisor run --shard i/3`` processes and ``botvisor sim-server``. It lists every bot exactly
once, sends a per-bot read and an added bot to the owner, fans the live events in; with one
shard hung (SIGSTOP) and then dead (SIGKILL), fleet reads still answer with the others' bots
and name the failed shard, and that shard's bots get a 504/502 naming it. Nothing here is
timed: a fleet read that names the hung shard's timeout has answered within it."""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from actors import jump_hash
from supervisor.remote import open_event_stream
from tests.e2e.process import BOTVISOR, DaemonProcess
from tests.e2e.shards import GatewayProcess, SimServer, shard_process
from tests.e2e.test_shards import killed_at_exit, start_all, stop_all

SHARDS = 3
BOTS = 30
TOKEN = "gateway-e2e-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
log = logging.getLogger("tests.e2e.gateway")


@asynccontextmanager
async def sim_server(bots: int) -> AsyncIterator[SimServer]:
    sim = SimServer(bots=bots)
    try:
        await sim.start()
        yield sim
    finally:
        with trio.CancelScope(shield=True):
            await sim.stop()


async def get(http: httpx.AsyncClient, url: str, **params: Any) -> httpx.Response:
    return await http.get(url, params=params, headers=AUTH)


async def test_the_gateway_routes_merges_and_names_a_hung_then_dead_shard(tmp_path: Path) -> None:
    # One bot more than the file declares: the test adds it through the gateway.
    async with sim_server(BOTS + 1) as sim, httpx.AsyncClient(timeout=30) as http:
        *declared, extra = sorted(sim.bots)
        bots = {uid: sim.bots[uid] for uid in declared}
        owner = {uid: jump_hash(uid, SHARDS) for uid in sim.bots}
        daemons = [
            shard_process(tmp_path, i, SHARDS, api_base=sim.url, bots=bots) for i in range(SHARDS)
        ]
        for daemon in daemons:
            daemon.env["BOTVISOR_ADMIN_TOKEN"] = TOKEN
        async with trio.open_nursery() as nursery, killed_at_exit(daemons):
            admins = await start_all(nursery, daemons)
            config = tmp_path / "gateway.toml"
            urls = ", ".join(f'"{url}"' for url in admins)
            config.write_text(
                f'[gateway]\nlisten = "127.0.0.1:0"\nshard_urls = [{urls}]\n'
                "shard_timeout = 2\nevents_reconnect = 0.5\n"
            )
            gateway = GatewayProcess(config, env={"BOTVISOR_ADMIN_TOKEN": TOKEN})
            base = await gateway.start(nursery)
            try:
                await _check(nursery, http, base, admins, daemons, sim, owner, declared, extra)
            finally:
                with trio.CancelScope(shield=True):
                    gateway_code = await gateway.stop()
            codes = await stop_all([d for d in daemons if d.process is not None])
            nursery.cancel_scope.cancel()

    assert gateway_code == 0, gateway.text[-2000:]
    assert codes == [0] * SHARDS
    assert "Traceback" not in gateway.text
    assert TOKEN not in gateway.text
    # The gateway logged each failed shard by its index and reason.
    assert "shard 1 failed: timeout after 2 s" in gateway.text


async def _check(
    nursery: trio.Nursery,
    http: httpx.AsyncClient,
    base: str,
    admins: list[str],
    daemons: list[Any],
    sim: SimServer,
    owner: dict[int, int],
    declared: list[int],
    extra: int,
) -> None:
    # Every declared bot exactly once, in order, from three shards that all answered.
    listing = (await get(http, f"{base}/admin/bots")).json()
    assert [b["user_id"] for b in listing["bots"]] == declared
    assert listing["shards"] == {"total": SHARDS, "ok": SHARDS, "failed": []}
    summary = (await get(http, f"{base}/admin/system/bot-health/summary")).json()
    assert summary["total_bots"] == len(declared)
    # The command-line client works through the gateway as through one daemon.
    listed = await trio.run_process(
        [BOTVISOR, "bots", "--url", base, "list"],
        capture_stdout=True,
        env={**os.environ, "BOTVISOR_ADMIN_TOKEN": TOKEN},
    )
    assert listed.stdout.decode().splitlines()[-1] == f"{len(declared)} bot(s)"
    # For docs/SCALING.md: what a fleet read through the gateway costs over one shard's
    # (logged, not asserted; run with -o log_cli=true --log-cli-level=INFO).
    for path in ("/admin/bots?limit=50", "/admin/system/bot-health/summary"):
        through = [await _timed(http, base + path) for _ in range(20)]
        one_shard = [await _timed(http, admins[0] + path) for _ in range(20)]
        log.info(
            "GET %s: median %.1f ms through the gateway (3 shards), %.1f ms from one shard",
            path,
            statistics.median(through) * 1000,
            statistics.median(one_shard) * 1000,
        )

    # A per-bot read answers from its owner: the other shards refuse that bot with 421.
    uid = declared[0]
    one = await get(http, f"{base}/admin/system/bot-health/{uid}")
    assert one.status_code == 200 and one.json()["user_id"] == uid
    for index, url in enumerate(admins):
        direct = await get(http, f"{url}/admin/system/bot-health/{uid}")
        assert direct.status_code == (200 if index == owner[uid] else 421)

    # A bot added through the gateway lands on its owner, and only there.
    added = await http.post(
        f"{base}/admin/bots", json={"user_id": extra, "token": sim.bots[extra]}, headers=AUTH
    )
    assert added.status_code == 201, added.text
    for index, url in enumerate(admins):
        direct = await get(http, f"{url}/admin/bots/{extra}")
        assert direct.status_code == (200 if index == owner[extra] else 421), index
    everyone = [*declared, extra]
    assert [b["user_id"] for b in (await get(http, f"{base}/admin/bots")).json()["bots"]] == (
        everyone
    )

    victim = 1
    theirs = [u for u in everyone if owner[u] == victim]
    others = [u for u in everyone if owner[u] != victim]
    async with open_event_stream(base, TOKEN) as stream:
        subscribed = json.loads(await stream.get_message())
        assert subscribed["type"] == "subscribed"
        assert subscribed["shards"] == {"total": SHARDS, "ok": SHARDS, "failed": []}
        # One bot's stream is its owner's alone; every event is tagged with its shard.
        async with open_event_stream(base, TOKEN, user_id=theirs[0]) as own:
            first = json.loads(await own.get_message())
            assert first["shards"] == {"total": 1, "ok": 1, "failed": []}
            suspended = await http.post(
                f"{base}/admin/bots/{theirs[0]}/suspend", json={"reason": "e2e"}, headers=AUTH
            )
            assert suspended.status_code == 200, suspended.text
            with trio.fail_after(30):
                mine = json.loads(await own.get_message())
                while mine.get("type") != "lifecycle":
                    mine = json.loads(await own.get_message())
            assert (mine["user_id"], mine["shard"]) == (theirs[0], victim)
        with trio.fail_after(30):
            while True:
                event = json.loads(await stream.get_message())
                if event.get("type") == "lifecycle" and event["user_id"] == theirs[0]:
                    break
        assert event["shard"] == victim

        # Hung: the process is there but answers nothing.
        daemons[victim].send_signal(signal.SIGSTOP)
        started = trio.current_time()
        hung = (await get(http, f"{base}/admin/bots")).json()
        log.info("a fleet read with shard 1 hung answered in %.2f s", trio.current_time() - started)
        assert hung["shards"]["failed"] == [{"shard": victim, "error": "timeout after 2 s"}]
        assert [b["user_id"] for b in hung["bots"]] == others
        one = await get(http, f"{base}/admin/bots/{theirs[0]}")
        assert one.status_code == 504
        assert one.json()["shard"] == victim
        assert f"shard {victim} did not answer (timeout after 2 s)" in one.text
        ok = await get(http, f"{base}/admin/bots/{others[0]}")
        assert ok.status_code == 200

        # Dead: its port refuses connections.
        daemons[victim].kill()
        assert await daemons[victim].wait() == -signal.SIGKILL
        daemons[victim].process = None
        dead = (await get(http, f"{base}/admin/system/bot-health/summary")).json()
        assert dead["shards"]["failed"] == [{"shard": victim, "error": "connection refused"}]
        assert dead["total_bots"] == len(others)
        gone = await get(http, f"{base}/admin/system/circuit-breakers/{theirs[0]}")
        assert gone.status_code == 502
        assert gone.json()["error"]["code"] == "shard_unavailable"
        assert TOKEN not in hung.__repr__() + one.text + gone.text

        # The live stream says the shard went down (it is reopened every 0.5 s meanwhile).
        with trio.fail_after(30):
            while True:
                event = json.loads(await stream.get_message())
                if event.get("type") == "shard":
                    break
        assert event["shard"] == victim and event["state"] == "down"

        # Started again on its port: the stream says it is back, and the fleet is whole.
        config = daemons[victim].config
        port = urlsplit(admins[victim]).port
        config.write_text(
            config.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
        )
        again = DaemonProcess(
            config, args=daemons[victim].args, env={"BOTVISOR_ADMIN_TOKEN": TOKEN}
        )
        daemons.append(again)
        await again.start(nursery, within=60)
        with trio.fail_after(30):
            while True:
                event = json.loads(await stream.get_message())
                if event.get("type") == "shard":
                    break
        assert event["shard"] == victim and event["state"] == "up"
        whole = (await get(http, f"{base}/admin/bots")).json()
        assert whole["shards"] == {"total": SHARDS, "ok": SHARDS, "failed": []}
        assert [b["user_id"] for b in whole["bots"]] == everyone


async def _timed(http: httpx.AsyncClient, url: str) -> float:
    started = trio.current_time()
    answer = await http.get(url, headers=AUTH)
    assert answer.status_code == 200
    return trio.current_time() - started
