"""Ownership at start as an operator meets it: real processes, exit codes, messages."""

from __future__ import annotations

import random
import signal
import sqlite3
from pathlib import Path

import trio

from actors.simulator import SimulatedBotApi, serve_sim
from tests.e2e.process import BOTVISOR, DaemonProcess, write_config


async def botvisor(*args: str, cwd: Path) -> tuple[int, str]:
    result = await trio.run_process(
        [BOTVISOR, *args], capture_stdout=True, capture_stderr=True, check=False, cwd=cwd
    )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


def demo(bots: int, *extra: str) -> tuple[str, ...]:
    options = ("--duration", "1", "--drain", "0", "--admin-port", "0")
    return ("demo", "--bots", str(bots), *options, *extra)


def stored_bots(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [uid for (uid,) in conn.execute("select user_id from bots order by user_id")]


async def test_the_demo_starts_from_a_fresh_database_unless_db_names_one(tmp_path: Path) -> None:
    _, first = await botvisor(*demo(3), cwd=tmp_path)
    assert "database botvisor-demo.db (fresh; --db PATH keeps one across runs)" in first
    _, second = await botvisor(*demo(1), cwd=tmp_path)
    assert "unregistering" not in second, second
    assert "botvisor running: 1 bots" in second
    assert len(stored_bots(tmp_path / "botvisor-demo.db")) == 1

    # A database the operator names is kept: the bots a smaller run no longer has are
    # unregistered, one warning each.
    kept = tmp_path / "kept.db"
    await botvisor(*demo(3, "--db", str(kept)), cwd=tmp_path)
    _, smaller = await botvisor(*demo(1, "--db", str(kept)), cwd=tmp_path)
    assert smaller.count("is no longer declared in the config file: unregistering it") == 2
    assert len(stored_bots(kept)) == 1


async def test_a_file_without_bots_unregisters_the_stored_ones_only_with_the_flag(
    tmp_path: Path,
) -> None:
    db = tmp_path / "o.db"
    api = SimulatedBotApi(rng=random.Random(4))
    tokens = {1: SimulatedBotApi.make_token(6_300_000_001, random.Random(5))}
    api.add_bot(tokens[1])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sim, api)
        config = write_config(tmp_path / "botvisor.toml", api_base=url, db_path=db, bots=tokens)
        first = DaemonProcess(config)
        await first.start(nursery)
        first.send_signal(signal.SIGTERM)
        assert await first.wait() == 0, first.text

        write_config(config, api_base=url, db_path=db, bots={})
        code, refused = await botvisor("run", "--config", str(config), cwd=tmp_path)
        assert code == 1, refused
        assert "start once with --prune-config-bots" in refused
        assert "Traceback" not in refused
        assert stored_bots(db) == [1]

        pruned = DaemonProcess(config, args=("--prune-config-bots",))
        await pruned.start(nursery)
        assert stored_bots(db) == []
        pruned.send_signal(signal.SIGTERM)
        assert await pruned.wait() == 0, pruned.text
        nursery.cancel_scope.cancel()
