"""Bot management end to end: the real daemon process, driven by the ``botvisor bots`` client,
against the simulated Bot API served over HTTP by the test process (real clock, bounded
waits, no timed assertions)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import httpx
import trio

from actors import BotToken
from actors.simulator import SimulatedBotApi, serve_sim
from tests.admin.helpers import ADMIN_TOKEN, AUTH
from tests.e2e.durable import query
from tests.e2e.process import BOTVISOR, DaemonProcess, write_config
from tests.harness import bot_token

LIMIT = 60
ENV = {"BOTVISOR_ADMIN_TOKEN": ADMIN_TOKEN}


async def botvisor(
    url: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``botvisor bots --url URL ARGS`` and return what it did."""
    return await trio.run_process(
        [BOTVISOR, "bots", "--url", url, *args],
        env={**os.environ, **ENV, **(env or {})},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def answered(api: SimulatedBotApi, token: str, count: int) -> None:
    """Wait (bounded by the caller) until the bot has answered ``count`` messages."""
    bot_id = BotToken(token).bot_id
    for _ in range(LIMIT * 20):
        if api.report().bot(bot_id).answered >= count:
            return
        await trio.sleep(0.05)
    raise AssertionError(f"bot {bot_id} answered {api.report().bot(bot_id).answered}, not {count}")


async def test_bots_are_added_checked_removed_and_kept_across_a_restart(tmp_path: Path) -> None:
    api = SimulatedBotApi(rng=random.Random(11))
    config_token, valid, doomed, unknown = (bot_token(uid) for uid in (1, 7, 9, 8))
    for token in (config_token, valid, doomed):
        api.add_bot(token)
    db = tmp_path / "bots.db"
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sim_url = await nursery.start(serve_sim, api)
            config = write_config(
                tmp_path / "botvisor.toml", api_base=sim_url, db_path=db, bots={1: config_token}
            )

            daemon = DaemonProcess(config, env=ENV)
            url = await daemon.start(nursery)
            # A valid token: checked with getMe, stored, and the bot answers at once.
            added = await botvisor(
                url,
                *("add", "7", "--token-env", "T7", "--allowed-updates", "message,callback_query"),
                env={"T7": valid},
            )
            assert added.returncode == 0, added.stderr.decode()
            assert b"running" in added.stdout and valid.encode() not in added.stdout
            api.send_user_message(valid, 42, "hello new bot")
            await answered(api, valid, 1)

            # A token Telegram does not know: 422 with the reason, nothing stored.
            refused = await botvisor(url, "add", "8", "--token-env", "T8", env={"T8": unknown})
            assert refused.returncode == 1
            assert b"422" in refused.stderr and b"rejected the token" in refused.stderr
            assert unknown.encode() not in refused.stderr

            # A bot that will be removed: it answers, its health is persisted...
            stdin_add = await trio.run_process(
                [BOTVISOR, "bots", "--url", url, "add", "9", "--token-stdin"],
                stdin=(doomed + "\n").encode(),
                env={**daemon.env, **ENV},
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert stdin_add.returncode == 0, stdin_add.stderr.decode()
            api.send_user_message(doomed, 43, "before removal")
            await answered(api, doomed, 1)
            async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as http:
                persisted = await http.post("/admin/system/bot-health/persist-now")
                assert persisted.json()["rows_written"] == 3

            # ...then removed: it stops, and its history stays.
            removed = await botvisor(url, "remove", "9")
            assert removed.returncode == 0, removed.stderr.decode()
            api.send_user_message(doomed, 43, "after removal")
            api.send_user_message(valid, 42, "second")
            await answered(api, valid, 2)
            async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as http:
                assert (await http.get("/admin/bots/9")).status_code == 404
                history = (await http.get("/admin/system/bot-health/history/9")).json()
                assert history["count"] >= 1
            listing = await botvisor(url, "list", "--json")
            bots = {b["user_id"]: b for b in json.loads(listing.stdout)}
            assert sorted(bots) == [1, 7]
            assert bots[7]["source"] == "api" and bots[1]["source"] == "config"

            daemon.send_signal(signal.SIGTERM)
            assert await daemon.wait() == 0
            assert api.report().bot(BotToken(doomed).bot_id).answered == 1
            assert query(db, "SELECT user_id, source FROM bots ORDER BY user_id") == [
                (1, "config"),
                (7, "api"),
            ]
            assert query(db, "SELECT COUNT(*) FROM bot_health_metrics WHERE user_id = 9")[0][0] >= 1

            # Restart: the bot added through the API comes back and answers.
            again = DaemonProcess(config, env=ENV)
            url = await again.start(nursery)
            listing = await botvisor(url, "list", "--json")
            bots = {b["user_id"]: b for b in json.loads(listing.stdout)}
            assert sorted(bots) == [1, 7]
            assert (bots[7]["source"], bots[7]["state"]) == ("api", "running")
            # Its allowed_updates were stored with it.
            assert bots[7]["allowed_updates"] == ["message", "callback_query"]
            api.send_user_message(valid, 42, "after the restart")
            await answered(api, valid, 3)
            again.send_signal(signal.SIGTERM)
            assert await again.wait() == 0
            for text in (daemon.text, again.text):
                for secret in (config_token, valid, doomed, unknown):
                    assert secret not in text
            nursery.cancel_scope.cancel()
