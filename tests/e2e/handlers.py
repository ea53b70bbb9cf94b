"""Handlers the end-to-end daemons load as ``tests.e2e.handlers:<name>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from actors import HandlerContext

# Long enough that a few updates are always being handled while users write, short enough
# that a chat's lane keeps up with its users.
WORK_SECONDS = 0.05


async def echo_after_work(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Echo the text after ``WORK_SECONDS`` of 'work', as a real handler takes a moment."""
    await trio.sleep(WORK_SECONDS)
    await ctx.reply(str(update.get("message", {}).get("text", "")))
