"""The registry as real processes on the throwaway Postgres (issue 16, stage 2b): two shards
share it; a bot added through shard 0's API is in the registry with its token sealed (no
plaintext in the table, nor in the shard's SQLite cache), its token is refused under
another user_id by the other shard; a stray second poller of that bot makes its owner stop
polling and come back after the hold-off; and shard 0 restarted while Postgres cannot
answer registry reads (the bots table locked) starts its bots, the API-added one included,
from its cache."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import httpx
import psycopg
import trio

from actors import BotToken, jump_hash
from tests.e2e.process import DaemonProcess
from tests.e2e.shards import SimServer, shard_process
from tests.e2e.test_shards import killed_at_exit, pollers, sim_server, start_all
from tests.postgres import cluster_environment

BOTS = 12
CLUSTER = (
    "[cluster]\nlock_check_interval = 0.5\nlock_check_timeout = 5\n"
    "registry_timeout = 2\nconflict_holdoff = 3"
)


def shard(
    tmp_path: Path, index: int, sim_url: str, bots: dict[int, str], url: str
) -> DaemonProcess:
    made = shard_process(tmp_path, index, 2, api_base=sim_url, bots=bots, extra=CLUSTER)
    return DaemonProcess(made.config, args=made.args, env=cluster_environment(url))


async def polls_of(http: httpx.AsyncClient, sim: SimServer, token: str) -> int:
    """Shard 0's answered getUpdates of the bot, as the simulator counts them."""
    by_client = (await pollers(http, sim))["pollers"].get(str(BotToken(token).bot_id), {})
    return int(by_client.get("shard-0", 0))


async def stray_poll(
    http: httpx.AsyncClient, sim_url: str, token: str, daemon: DaemonProcess, seen: str
) -> None:
    """Poll the bot as another process would until ``seen`` is in the owner's log: 1 s long
    polls (without an offset, so they confirm nothing), retried at once when the simulator
    answers 409 because the owner's poll is waiting. One poll is not enough: while updates
    are pending it is answered at once, and the owner never meets it."""
    with trio.fail_after(60):
        while seen not in daemon.text:
            await http.post(f"{sim_url}/c/stray/bot{token}/getUpdates", json={"timeout": 1})
            await trio.sleep(0.005)


async def test_a_shards_registry_seals_tokens_refuses_duplicates_and_answers_a_409(
    tmp_path: Path, postgres_url: str
) -> None:
    async with sim_server(BOTS) as sim, httpx.AsyncClient(timeout=30) as http:
        # One bot of shard 0 is left out of the file, to be added through its API.
        added = next(uid for uid in sorted(sim.bots) if jump_hash(uid, 2) == 0)
        token = sim.bots[added]
        # A user id of shard 1 that no bot has.
        other = next(uid for uid in range(900_001, 901_000) if jump_hash(uid, 2) == 1)
        in_file = {uid: t for uid, t in sim.bots.items() if uid != added}
        daemons = [shard(tmp_path, i, sim.url, in_file, postgres_url) for i in (0, 1)]
        async with trio.open_nursery() as nursery, killed_at_exit(daemons):
            urls = await start_all(nursery, daemons)
            answer = await http.post(
                f"{urls[0]}/admin/bots", json={"user_id": added, "token": token}
            )
            assert answer.status_code == 201, answer.text
            # The other shard refuses the same token under one of its own user ids: the
            # registry holds every shard's bots.
            taken = await http.post(
                f"{urls[1]}/admin/bots", json={"user_id": other, "token": token}
            )
            assert taken.status_code == 409, taken.text
            assert f"already registered for user_id {added}" in taken.text
            assert token not in taken.text

            with trio.fail_after(60):
                while await polls_of(http, sim, token) == 0:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            await stray_poll(
                http, sim.url, token, daemons[0], f"bot {added}: getUpdates answered 409"
            )
            before = await polls_of(http, sim, token)
            with trio.fail_after(60):
                while f"bot {added}: another process polled it" not in daemons[0].text:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            # Back after the hold-off (3 s to 4.5 s): shard 0 polls it again.
            with trio.fail_after(60):
                while await polls_of(http, sim, token) <= before:  # noqa: ASYNC110
                    await trio.sleep(0.2)

            # Shard 0 restarted while the registry cannot be read (its bots table locked
            # by another session; the fencing lock still works): it starts from its cache.
            daemons[0].send_signal(signal.SIGTERM)
            assert await daemons[0].wait(within=60) == 0, daemons[0].text[-2000:]
            with psycopg.connect(postgres_url) as blocker:
                blocker.execute("LOCK TABLE botvisor_bots IN ACCESS EXCLUSIVE MODE")
                again = shard(tmp_path, 0, sim.url, in_file, postgres_url)
                daemons.append(again)
                url = await again.start(nursery, within=60)
                listed = (await http.get(f"{url}/admin/bots")).json()
                # A change now is refused: the registry is written first.
                refused = await http.post(f"{url}/admin/bots/{added}/suspend", json={})
                blocker.rollback()
            again.send_signal(signal.SIGTERM)
            codes = [await again.wait(within=60), daemons[1]]
            daemons[1].send_signal(signal.SIGTERM)
            codes[1] = await daemons[1].wait(within=60)
            nursery.cancel_scope.cancel()

    assert codes == [0, 0], again.text[-3000:]
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(
            "SELECT user_id, token_sealed, token_key_id, token_digest, source FROM botvisor_bots"
        ).fetchall()
        topology = connection.execute("SELECT epoch, shard_count FROM botvisor_topology").fetchall()
    assert topology == [(1, 2)]
    # Every bot of both shards is registered, the added one from the API, none in plaintext.
    assert sorted(row[0] for row in rows) == sorted(sim.bots)
    assert {row[0]: row[4] for row in rows}[added] == "api"
    assert not any(t in str(rows) for t in sim.bots.values())
    assert all(str(row[1]).startswith(f"v1.{row[2]}.") and len(row[3]) == 64 for row in rows)
    with sqlite3.connect(tmp_path / "shard-0.db") as cache:
        cached = dict(cache.execute("SELECT user_id, token FROM bots").fetchall())
    assert added in cached and all(t.startswith("v1.") for t in cached.values())
    assert "starting from the cached registry" in again.text
    assert added in [bot["user_id"] for bot in listed["bots"]]
    assert refused.status_code == 503, refused.text
    assert "nothing was changed" in refused.text
    for daemon in daemons:
        assert token not in daemon.text
        assert "Traceback" not in daemon.text
