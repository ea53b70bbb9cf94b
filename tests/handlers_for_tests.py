"""Handlers that tests name as ``tests.handlers_for_tests:<name>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from actors import HandlerContext


def _text(update: Mapping[str, Any]) -> str:
    return str(update.get("message", {}).get("text", ""))


async def slow_echo(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Echo after 100 seconds of 'work'."""
    await trio.sleep(100)
    await ctx.reply(_text(update))


async def explode_on_boom(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Raise for a message containing 'boom'; echo the rest."""
    text = _text(update)
    if "boom" in text:
        raise ValueError("the handler cannot take 'boom'")
    await ctx.reply(text)


async def refuse_everything(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Raise for every update, whatever its kind: each one is dead-lettered."""
    raise ValueError("the handler refuses every update")


def not_async(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Wrong on purpose: handlers must be async."""


async def call_a_misspelled_method(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Call a method Telegram does not know (it answers 404), then echo 'after' if it could."""
    await ctx.call("sendMesage", chat_id=ctx.chat_id, text=_text(update))
    await ctx.reply("after")


async def call_then_echo(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """``ctx.call`` a message to chat 999 (which never wrote to the bot: 400), then echo."""
    await ctx.call("sendMessage", chat_id=999, text="to nobody")
    await ctx.reply(_text(update))


# A token-shaped secret a handler's own error may carry (a URL of its own Bot API call).
LEAKED_TOKEN = "123456789:AAEhBP0av28bM4Nq2mY9sGkPmQ4DkX0aBcD"


async def leak_a_token(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Raise an error whose message carries a bot token, as a careless handler's would."""
    raise RuntimeError(f"POST https://api.telegram.org/bot{LEAKED_TOKEN}/sendPhoto failed")


async def call_send_message(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Reply through ``ctx.call`` (not ``ctx.reply``): a Bot API error reaches the handler."""
    await trio.sleep(50)
    await ctx.call("sendMessage", chat_id=ctx.chat_id, text=_text(update))
