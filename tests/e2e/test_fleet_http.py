"""50 bots over real HTTP on 127.0.0.1: every message answered exactly once, in chat order."""

from __future__ import annotations

import random
from pathlib import Path

import trio

from actors import BotConfig, BotToken, LimitsConfig, TelegramConfig
from actors.simulator import SimulatedBotApi, serve_sim
from admin import AdminConfig
from storage import StorageConfig
from supervisor import Config, SupervisorConfig
from supervisor.clock import system_wall_clock
from supervisor.daemon import Daemon

BOTS = 50
CHATS = 3
MESSAGES = 4


async def test_fifty_bots_answer_every_message_once_in_order(tmp_path: Path) -> None:
    rng = random.Random(50)
    api = SimulatedBotApi(rng=random.Random(51))
    tokens = [SimulatedBotApi.make_token(8_000_000_001 + i, rng) for i in range(BOTS)]
    for token in tokens:
        api.add_bot(token)
    async with trio.open_nursery() as outer:
        url = await outer.start(serve_sim, api)
        config = Config(
            telegram=TelegramConfig(api_base=url, poll_timeout=5),
            storage=StorageConfig(path=str(tmp_path / "fleet.db")),
            admin=AdminConfig(enabled=False),
            # The simulated API has no global limit; the default 25 rps would only add waiting.
            limits=LimitsConfig(global_rps=1000, global_burst=100),
            supervisor=SupervisorConfig(graceful_timeout=2.0),
            bots=tuple(
                BotConfig(user_id=1001 + i, token=BotToken(t)) for i, t in enumerate(tokens)
            ),
        )
        daemon = Daemon(config, wall_clock=system_wall_clock(), rng=random.Random(52))
        async with trio.open_nursery() as inner:
            handle = await inner.start(daemon.run)
            # Messages go out interleaved across bots and chats, as users would write them.
            for n in range(MESSAGES):
                for token in tokens:
                    for chat in range(CHATS):
                        chat_id = 10_000 + chat
                        api.send_user_message(token, chat_id, f"c{chat_id} n{n} {rng.random()}")
                await trio.sleep(0.05)
            with trio.fail_after(60):
                while api.report().answered < BOTS * CHATS * MESSAGES:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            daemon.request_shutdown()
        outer.cancel_scope.cancel()
    # Read after the shutdown: a handler counts its update once its reply has gone out, so
    # right after the last reply arrived the last count may still be on its way.
    handled = sum(a.statistics().handled_updates for a in handle.fleet.actors())

    report = api.report()
    assert report.user_messages == BOTS * CHATS * MESSAGES
    assert report.answered == report.user_messages
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == 0, report.summary()
    assert handled == report.user_messages
