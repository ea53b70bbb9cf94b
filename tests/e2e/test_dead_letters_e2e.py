"""Dead letters end to end: the real daemon process and its SQLite file, the simulated Bot API
served over HTTP, and ``botvisor dead-letters`` driving the admin API (real clock, bounded
waits, no timed assertions). A user blocks the bot, its reply is dead-lettered; once the
user unblocks it, a redrive sends the reply, in order with the chat's later messages."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import trio

from actors import BotToken
from actors.simulator import SimulatedBotApi, serve_sim
from tests.admin.helpers import ADMIN_TOKEN, AUTH
from tests.e2e.process import BOTVISOR, DaemonProcess, write_config
from tests.harness import bot_token

LIMIT = 90
ENV = {"BOTVISOR_ADMIN_TOKEN": ADMIN_TOKEN}
CHAT = 4242


async def botvisor(url: str, command: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``botvisor COMMAND --url URL ARGS``."""
    return await trio.run_process(
        [BOTVISOR, command, "--url", url, *args],
        env={**os.environ, **ENV},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def ok(url: str, command: str, *args: str) -> str:
    done = await botvisor(url, command, *args)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def listed(url: str, count: int) -> list[dict[str, Any]]:
    """Wait (bounded by the caller) until bot 1 has ``count`` dead letters; newest first."""
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
        while True:
            response = await http.get("/admin/bots/1/dead-letters")
            assert response.status_code == 200, response.text
            letters: list[dict[str, Any]] = response.json()["dead_letters"]
            if len(letters) >= count:
                return letters
            await trio.sleep(0.05)


def replies(api: SimulatedBotApi, token: str) -> list[str]:
    sent = api.bot(token).sent
    assert sent is not None
    return [m.text for m in sent if m.chat_id == CHAT]


async def replied(api: SimulatedBotApi, token: str, count: int) -> list[str]:
    """Wait (bounded by the caller) until the bot has sent ``count`` replies to the chat."""
    for _ in range(LIMIT * 20):
        if len(replies(api, token)) >= count:
            break
        await trio.sleep(0.05)
    return replies(api, token)


async def test_a_blocked_reply_is_redriven_once_in_its_chats_order(tmp_path: Path) -> None:
    api = SimulatedBotApi(rng=random.Random(19), record=True)
    token = bot_token(1)
    api.add_bot(token)
    db = tmp_path / "dead.db"
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sim_url = await nursery.start(serve_sim, api)
            config = write_config(
                tmp_path / "botvisor.toml", api_base=sim_url, db_path=db, bots={1: token}
            )
            daemon = DaemonProcess(config, env=ENV)
            url = await daemon.start(nursery)

            # The user blocked the bot: the echo is refused (403) and dead-lettered.
            api.block(token, CHAT)
            first_id = api.send_user_message(token, CHAT, "first")
            (letter,) = await listed(url, 1)
            assert letter["update_id"] == first_id and letter["update_type"] == "message"
            assert letter["payload"]["message"]["text"] == "first"
            assert "blocked by the user" in letter["reason"]
            table = await ok(url, "dead-letters", "list", "1")
            assert f"update {first_id}" in table and "1 of 1 dead letter(s)" in table

            # Unblocked: the running bot takes the redriven update and the reply is sent.
            api.unblock(token, CHAT)
            redrove = await ok(url, "dead-letters", "redrive", "1", "--ids", str(letter["id"]))
            assert "redrove 1 dead letter(s) of bot 1; refused 0" in redrove
            assert await replied(api, token, 1) == ["first"]

            # Handled again: a second redrive is refused, saying so.
            again = await botvisor(url, "dead-letters", "redrive", "1", "--ids", str(letter["id"]))
            assert again.returncode == 1, "a redrive that refused a dead letter exits 1"
            assert "redrove 0" in again.stdout.decode()
            assert "and handled again" in again.stdout.decode()

            # Blocked again: "fourth" dead-letters. While the bot is suspended the chat's
            # next message waits at Telegram; the redrive waits in the inbox; resumed, the
            # bot answers "fourth" first, then "fifth".
            api.block(token, CHAT)
            api.send_user_message(token, CHAT, "fourth")
            await listed(url, 2)
            async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
                assert (await http.post("/admin/bots/1/suspend", json={})).status_code == 200
            api.send_user_message(token, CHAT, "fifth")
            api.unblock(token, CHAT)
            redrove = await ok(url, "dead-letters", "redrive", "1", "--reason", "BLOCKED")
            assert "redrove 1 dead letter(s)" in redrove
            async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
                assert (await http.post("/admin/bots/1/resume")).status_code == 200
            assert await replied(api, token, 3) == ["first", "fourth", "fifth"]
            report = api.report().bot(BotToken(token).bot_id)
            assert report.duplicates == 0 and report.out_of_order == 0

            discarded = await ok(url, "dead-letters", "discard", "1", "--all")
            assert "discarded 2 dead letter(s) of bot 1" in discarded
            assert await listed(url, 0) == []
            daemon.send_signal(signal.SIGTERM)
            assert await daemon.wait() == 0
            nursery.cancel_scope.cancel()
    assert "dead letters redriven: 1, refused: 0" in daemon.text
