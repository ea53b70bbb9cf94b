"""Fencing as real processes on the throwaway Postgres (issue 16, stage 2a): while
``botvisor run --shard 0/2`` runs, a second one with the same database refuses to start,
naming the holder; once the first one's lock session is terminated, it stops polling (the
simulator's per-client records show no getUpdates from it afterwards) and exits non-zero."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import trio

from actors import jump_hash
from tests.e2e.process import BOTVISOR, DaemonProcess, write_config
from tests.e2e.shards import shard_process
from tests.e2e.test_shards import killed_at_exit, pollers, sim_server
from tests.postgres import cluster_environment, terminate_lock_session

BOTS = 20
CLUSTER = "[cluster]\nlock_check_interval = 0.5\nlock_check_timeout = 5"


async def test_a_held_shard_refuses_a_second_process_and_a_lost_lock_stops_the_first(
    tmp_path: Path, postgres_url: str
) -> None:
    env = cluster_environment(postgres_url)
    async with sim_server(BOTS) as sim, httpx.AsyncClient(timeout=30) as http:
        first = shard_process(tmp_path, 0, 2, api_base=sim.url, bots=sim.bots, extra=CLUSTER)
        first = DaemonProcess(first.config, args=first.args, env=env)
        # Another process that believes it is shard 0/2: its own file, database and name at
        # the simulator, the same Postgres.
        second_config = write_config(
            tmp_path / "second.toml",
            api_base=f"{sim.url}/c/second",
            db_path=tmp_path / "second.db",
            bots=sim.bots,
            extra=CLUSTER,
        )
        async with trio.open_nursery() as nursery, killed_at_exit([first]):
            await first.start(nursery, within=60)
            owned = [uid for uid in sim.bots if jump_hash(uid, 2) == 0]
            assert owned
            with trio.fail_after(60):
                while len((await pollers(http, sim))["pollers"]) < len(owned):  # noqa: ASYNC110
                    await trio.sleep(0.2)

            refused = await trio.run_process(
                [BOTVISOR, "run", "--config", str(second_config), "--shard", "0/2"],
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, **env},
            )

            assert first.process is not None
            assert await trio.to_thread.run_sync(terminate_lock_session, postgres_url, 0) == 1
            with trio.fail_after(60):
                while "lost its lock" not in first.text:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            at_loss = (await pollers(http, sim))["pollers"]
            code = await first.wait(within=60)
            after = (await pollers(http, sim))["pollers"]
            # The lock is free again: the orchestrator's restart takes it.
            again = DaemonProcess(second_config, args=("--shard", "0/2"), env=env)
            await again.start(nursery, within=60)
            again.send_signal(signal.SIGTERM)
            again_code = await again.wait(within=60)
            nursery.cancel_scope.cancel()

    lines = refused.stderr.decode().strip().splitlines()
    assert refused.returncode == 75, lines  # EX_TEMPFAIL: its supervisor tries again
    assert len(lines) == 1, lines
    holder = f"botvisor shard 0/2 pid {first.process.pid} on {socket.gethostname()}"[:63]
    assert (
        f"shard 0/2 is already running: another process holds its lock ({holder}; Postgres backend "
    ) in lines[0]
    assert "from 127.0.0.1); refusing to start a second owner of its bots" in lines[0]
    assert "second" not in str(after)  # the refused process never polled
    # No getUpdates from the first shard after it noticed the loss, and it exited non-zero
    # saying why.
    assert {"shard-0"} == {name for calls in at_loss.values() for name in calls}
    assert after == at_loss
    assert code == 3, first.text[-3000:]
    assert "botvisor stopped: shard 0/2 lost its lock: its Postgres session failed a check" in (
        first.text
    )
    assert "Traceback" not in first.text
    assert again_code == 0, again.text[-2000:]
