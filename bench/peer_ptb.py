"""python-telegram-bot 22 as a benchmark client: one Application per bot, an echo handler.

Runs in the benchmark's own environment (``.venv-bench``), never botvisor's:
``python -m bench.peer_ptb --api URL --tokens-file F``. Each Application is built, initialized
and started the way python-telegram-bot's documentation shows for running several bots in one
process. Prints ``{"event": "imported", ...}`` before building anything, then polls until killed.
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
    ext = import_module("telegram.ext")

    async def echo(update: Any, context: Any) -> None:
        await update.message.reply_text(update.message.text)

    applications = []
    for token in tokens:
        application = ext.ApplicationBuilder().token(token).base_url(f"{args.api}/bot").build()
        application.add_handler(ext.MessageHandler(ext.filters.TEXT, echo))
        await application.initialize()
        await application.updater.start_polling(timeout=args.poll_timeout, poll_interval=0.0)
        await application.start()
        applications.append(application)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_ptb", description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--tokens-file", type=Path, required=True)
    parser.add_argument("--poll-timeout", type=int, default=10)
    args = parser.parse_args(argv)
    raise_fd_limit()
    tokens = json.loads(args.tokens_file.read_text())
    import_module("telegram.ext")
    print(
        json.dumps(
            {
                "event": "imported",
                "rss_kib": self_rss_kib(),
                "version": version("python-telegram-bot"),
            }
        ),
        flush=True,
    )
    asyncio.run(_run(args, tokens))


if __name__ == "__main__":
    main()
