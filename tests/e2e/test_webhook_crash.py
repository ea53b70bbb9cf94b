"""``kill -9`` right after a burst of 200s: every acknowledged update is handled after restart.

The test acts as Telegram: it POSTs realistic updates to the real daemon process's webhook
listener, with the bot's derived secret, several at once over keep-alive connections, and
kills the process with SIGKILL the moment the last one was answered 200. A 200 means the
update is committed to SQLite, so the restarted daemon must handle every one of them: each
reply reaches the simulated Bot API (``serve_sim``), where the report matches it to its
message. Waits are bounded; nothing asserts on elapsed time.
"""

from __future__ import annotations

import json
import random
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import trio

from actors import BotToken, derive_secret_token
from actors.simulator import SimulatedBotApi, serve_sim
from tests import payloads
from tests.e2e.durable import ADMIN_ENV, integrity, kill_if_running, query
from tests.e2e.process import DaemonProcess

MASTER = "the master webhook secret of the crash test"
USER_ID = 3001
CHATS = 6
PER_CHAT = 10  # 60 updates in the burst


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_webhook_config(
    path: Path, *, api_base: str, db_path: Path, port: int, token: str
) -> None:
    lines = [
        "[telegram]",
        f'api_base = "{api_base}"',
        "request_timeout = 10",
        "[storage]",
        f'path = "{db_path}"',
        "[admin]",
        'listen = "127.0.0.1:0"',
        "[webhook]",
        f'listen = "127.0.0.1:{port}"',
        f'public_url = "http://127.0.0.1:{port}/tg"',
        "max_connections = 10",
        "[limits]",
        "global_rps = 5000",
        "global_burst = 500",
        "bot_rps = 5000",
        "bot_burst = 500",
        "private_chat_per_second = 1000",
        "group_chat_per_minute = 60000",
        "[supervisor]",
        "graceful_timeout = 2",
        "report_interval = 1",
        "[handlers]",
        'allowed_modules = ["tests"]',
        "[[bots]]",
        f"user_id = {USER_ID}",
        f'token = "{token}"',
        'mode = "webhook"',
        # Each update takes a moment of work, so many are undone when the kill comes.
        'handler = "tests.e2e.handlers:echo_after_work"',
    ]
    path.write_text("\n".join(lines) + "\n")


def burst(api: SimulatedBotApi, token: str) -> list[dict[str, Any]]:
    """CHATS x PER_CHAT updates of Telegram's shapes (private chats, a basic group, a forum
    topic), made known to the simulated Bot API so it accepts and matches the replies; each
    with the id the simulated Bot API gave it."""
    updates: list[dict[str, Any]] = []
    for n in range(PER_CHAT):
        for c in range(CHATS):
            if c == 0:
                update = payloads.group_message(chat_id=-4001, user_id=222)
                update["message"]["text"] = f"group note {n}"
            elif c == 1:
                update = payloads.forum_topic_message(chat_id=-1001234567890, thread_id=77)
                update["message"]["text"] = f"topic question {n}"
            else:
                update = payloads.message(chat_id=9000 + c, text=f"crash {n} in chat {c}")
            update["message"]["message_id"] = 1000 + n * CHATS + c
            update["update_id"] = api.send_update(token, update)
            updates.append(update)
    return updates


async def test_every_update_answered_200_before_a_kill_minus_nine_is_handled_after_restart(
    tmp_path: Path,
) -> None:
    api = SimulatedBotApi(rng=random.Random(41))
    token = SimulatedBotApi.make_token(6_500_000_001, random.Random(42))
    api.add_bot(token)
    db = tmp_path / "hook-crash.db"
    config = tmp_path / "botvisor.toml"
    port = free_port()
    env = {**ADMIN_ENV, "BOTVISOR_WEBHOOK_SECRET": MASTER}
    secret = derive_secret_token(MASTER, BotToken(token).bot_id)
    daemons: list[DaemonProcess] = []
    async with trio.open_nursery() as nursery:
        try:
            api_base = await nursery.start(serve_sim, api)
            write_webhook_config(config, api_base=api_base, db_path=db, port=port, token=token)
            first = DaemonProcess(config, env=env)
            daemons.append(first)
            await first.start(nursery)
            # Up: the listener listens, and the fleet registered the bot with setWebhook.
            with trio.fail_after(30):
                while (  # noqa: ASYNC110
                    "the webhook listener listening on" not in first.text
                    or api.bot(token).webhook is None
                ):
                    await trio.sleep(0.05)
            updates = burst(api, token)
            # Telegram's webhook queues hold the burst now; the test delivers it instead.
            answers: list[int] = []
            # Telegram's queues: one a chat, its next update sent only after the previous one
            # was answered, the chats in parallel (one connection each).
            queues = [updates[c::CHATS] for c in range(CHATS)]

            async def connection(client: httpx.AsyncClient, queue: list[dict[str, Any]]) -> None:
                for update in queue:
                    answer = await client.post(
                        f"/tg/{USER_ID}",
                        content=json.dumps(update),
                        headers={
                            "X-Telegram-Bot-Api-Secret-Token": secret,
                            "Content-Type": "application/json",
                        },
                    )
                    answers.append(answer.status_code)

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                with trio.fail_after(30):
                    async with trio.open_nursery() as senders:
                        for queue in queues:
                            senders.start_soon(connection, client, queue)
                first.kill()  # at once: the last 200 was just answered
            assert answers == [200] * len(updates)
            assert await first.wait() == -signal.SIGKILL
            undone = query(db, "SELECT COUNT(*) FROM inbox WHERE done_at IS NULL")[0][0]
            stored = query(db, "SELECT COUNT(*) FROM inbox")[0][0]
            assert stored == len(updates)  # every 200 was committed
            assert undone > 0  # the kill did cut work off (else this proves nothing)
            assert api.report().unanswered > 0

            second = DaemonProcess(config, env=env)
            daemons.append(second)
            await second.start(nursery)
            with trio.fail_after(30):
                while api.report().unanswered:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0, second.text
            nursery.cancel_scope.cancel()
        finally:
            kill_if_running(*daemons)
    report = api.report()
    print(
        f"\n{undone} of {len(updates)} acknowledged updates undone at the kill; {report.summary()}"
    )
    assert report.user_messages == len(updates)
    assert report.unanswered == 0, report.summary()
    assert report.answered == len(updates)
    assert report.out_of_order == 0, report.summary()
    assert report.misplaced == 0, report.summary()
    # Handled again at most what was undone at the kill.
    assert sum(b.duplicate_replies for b in report.bots) <= undone
    assert integrity(db) == ["ok"]
    assert query(db, "SELECT COUNT(*) FROM inbox WHERE done_at IS NULL") == [(0,)]
    for daemon in daemons:
        assert "Traceback" not in daemon.text, daemon.text
        assert secret not in daemon.text
