"""The real ``botvisor run`` process: answers over HTTP, stops cleanly on SIGTERM."""

from __future__ import annotations

import random
import signal
import sqlite3
from pathlib import Path

import httpx
import trio

from actors.simulator import SimulatedBotApi, serve_sim
from tests.e2e.process import BOTVISOR, DaemonProcess, write_config


async def test_sigterm_stops_the_daemon_cleanly_with_exit_zero(tmp_path: Path) -> None:
    rng = random.Random(7)
    api = SimulatedBotApi(rng=random.Random(8))
    tokens = {1001 + i: SimulatedBotApi.make_token(6_100_000_001 + i, rng) for i in range(3)}
    for token in tokens.values():
        api.add_bot(token)
    db = tmp_path / "daemon.db"
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sim, api)
        config = write_config(tmp_path / "botvisor.toml", api_base=url, db_path=db, bots=tokens)
        daemon = DaemonProcess(config)
        admin = await daemon.start(nursery)
        for token in tokens.values():
            api.send_user_message(token, 77, "are you there?")
        with trio.fail_after(30):
            while api.report().answered < 3:  # noqa: ASYNC110
                await trio.sleep(0.05)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{admin}/healthz")
            assert health.status_code == 200
        daemon.send_signal(signal.SIGTERM)
        code = await daemon.wait()
        nursery.cancel_scope.cancel()

    assert code == 0, daemon.text
    assert "Traceback" not in daemon.text
    assert "shutdown complete" in daemon.text
    for token in tokens.values():
        assert token not in daemon.text
        assert token.split(":")[1] not in daemon.text
    # The final snapshot of every bot was written on the way out.
    with sqlite3.connect(db) as conn:
        (rows,) = conn.execute("select count(distinct user_id) from bot_health_metrics").fetchone()
        (check,) = conn.execute("pragma integrity_check").fetchone()
    assert rows == 3
    assert check == "ok"


async def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    rng = random.Random(9)
    api = SimulatedBotApi(rng=random.Random(10))
    tokens = {2001: SimulatedBotApi.make_token(6_200_000_001, rng)}
    api.add_bot(tokens[2001])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sim, api)
        config = write_config(
            tmp_path / "botvisor.toml",
            api_base=url,
            db_path=tmp_path / "d.db",
            bots=tokens,
            # A handler busy for 100 s and a 600 s grace: only a second signal ends it soon.
            handler="tests.handlers_for_tests:slow_echo",
            graceful_timeout=600,
        )
        daemon = DaemonProcess(config)
        await daemon.start(nursery)
        api.send_user_message(tokens[2001], 5, "keep me busy")
        # Confirmed means the bot committed it to its inbox and polled again: its handler
        # is now busy with it.
        with trio.fail_after(30):
            while api.statistics().updates_confirmed == 0:  # noqa: ASYNC110
                await trio.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            while "shutting down" not in daemon.text:  # noqa: ASYNC110
                await trio.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        code = await daemon.wait(within=30)
        nursery.cancel_scope.cancel()
    assert code == 130, daemon.text
    assert "received again: exiting now" in daemon.text
    assert "Traceback" not in daemon.text


async def test_a_bad_config_exits_one_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\nglobal_rps = 0\n[[bots]]\nuser_id = 1\ntoken_env = 'NOPE_X'\n")
    result = await trio.run_process(
        [BOTVISOR, "run", "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "limits.global_rps must be from 0.01 to 100000, got 0" in err
    assert "bots[0].token_env: the environment variable NOPE_X is not set" in err
    assert "Traceback" not in err
