"""aiogram 3 as a benchmark client: several bots on one Dispatcher, an echo handler.

Runs in the benchmark's own environment (``.venv-bench``), never botvisor's:
``python -m bench.peer_aiogram --api URL --tokens-file F [--shared-session]``. By default every
Bot has its own ``AiohttpSession``, as aiogram's documentation shows; ``--shared-session`` gives
all bots one session (one connection pool, its limit raised to the number of bots + 100),
aiogram's lightest setup. Prints ``{"event": "imported", ...}`` before building anything, then
polls until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from importlib import import_module
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import raise_fd_limit, self_rss_kib

__all__ = ["main"]


async def _run(args: argparse.Namespace, tokens: list[str]) -> None:
    aiogram = import_module("aiogram")
    sessions = import_module("aiogram.client.session.aiohttp")
    server = import_module("aiogram.client.telegram").TelegramAPIServer.from_base(args.api)
    dispatcher = aiogram.Dispatcher()

    async def echo(message: Any) -> None:
        await message.answer(message.text)

    dispatcher.message.register(echo)
    # aiohttp's default limit (100 connections a session) cannot hold one long poll per bot
    # once there are more bots: every call queued behind the polls times out (at 1,000 bots
    # aiogram cannot even finish its getMe round). A shared session gets room for them all.
    shared = (
        sessions.AiohttpSession(api=server, limit=len(tokens) + 100)
        if args.shared_session
        else None
    )
    bots = [
        aiogram.Bot(token, session=shared or sessions.AiohttpSession(api=server))
        for token in tokens
    ]
    await dispatcher.start_polling(
        *bots, polling_timeout=args.poll_timeout, handle_signals=False, close_bot_session=False
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_aiogram", description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--tokens-file", type=Path, required=True)
    parser.add_argument("--poll-timeout", type=int, default=10)
    parser.add_argument("--shared-session", action="store_true")
    args = parser.parse_args(argv)
    raise_fd_limit()
    tokens = json.loads(args.tokens_file.read_text())
    import_module("aiogram")
    import_module("aiogram.client.session.aiohttp")
    print(
        json.dumps({"event": "imported", "rss_kib": self_rss_kib(), "version": version("aiogram")}),
        flush=True,
    )
    asyncio.run(_run(args, tokens))


if __name__ == "__main__":
    main()
