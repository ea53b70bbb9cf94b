"""Update handlers: the built-in ``echo`` and ``autoreply``, or any ``module:function``.

A handler is ``async def handle(update, ctx) -> None``. It answers through ``ctx.reply`` and
``ctx.call``, which go through the bot's request pipeline (limits, retries, breaker) and the
delivery rules: a reply that cannot be sent now is retried until its delivery deadline.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from actors.config import BotConfig

__all__ = [
    "Handler",
    "HandlerContext",
    "HandlerError",
    "answer_callback_query",
    "autoreply_handler",
    "echo",
    "import_handler",
    "load_handler",
]

Update = Mapping[str, Any]


class HandlerContext(Protocol):
    """What a handler may do; each call goes through the bot's request pipeline."""

    @property
    def user_id(self) -> int: ...

    @property
    def chat_id(self) -> int | None: ...

    async def reply(self, text: str, *, quote: bool | str = False, **params: Any) -> Any:
        """Send ``text`` where the update was asked (its chat, forum topic, business
        connection or direct-messages topic); returns the sent message, or None if its
        delivery was ambiguous (the request may have reached Telegram). ``quote=True``
        replies to the update's message; ``params`` (``sendMessage``'s) win over the derived
        ones, and one set to ``None`` is left out."""

    async def call(self, method: str, **params: Any) -> Any:
        """Call any Bot API method as this bot."""


Handler = Callable[[Update, HandlerContext], Awaitable[None]]


class HandlerError(ValueError):
    """A handler path that cannot be used; the message says what to fix."""


# The updates a built-in handler answers with text: people's messages to the bot, and
# customers' messages to a business account that connected it (answered through the
# connection: ctx.reply keeps its business_connection_id).
_ANSWERED = ("message", "edited_message", "business_message", "edited_business_message")


def message_text(update: Update) -> str | None:
    """The text of a message the built-in handlers answer, else None."""
    for kind in _ANSWERED:
        message = update.get(kind)
        if isinstance(message, Mapping):
            text = message.get("text")
            return text if isinstance(text, str) else None
    return None


async def answer_callback_query(update: Update, ctx: HandlerContext) -> bool:
    """Answer a button press (``answerCallbackQuery``), so the user's button stops
    spinning; return whether ``update`` was one."""
    query = update.get("callback_query")
    if not isinstance(query, Mapping) or not isinstance(query.get("id"), str):
        return False
    await ctx.call("answerCallbackQuery", callback_query_id=query["id"])
    return True


async def echo(update: Update, ctx: HandlerContext) -> None:
    """Reply to every text message with the same text; answer button presses."""
    if await answer_callback_query(update, ctx):
        return
    text = message_text(update)
    if text is not None and ctx.chat_id is not None:
        await ctx.reply(text)


def autoreply_handler(bot: BotConfig) -> Handler:
    """Reply with the first rule whose ``contains`` is in the text (case-insensitive)."""
    rules = [(rule.contains.casefold(), rule.reply) for rule in bot.autoreply]
    default = bot.autoreply_default

    async def autoreply(update: Update, ctx: HandlerContext) -> None:
        if await answer_callback_query(update, ctx):
            return
        text = message_text(update)
        if text is None or ctx.chat_id is None:
            return
        folded = text.casefold()
        for needle, reply in rules:
            if needle in folded:
                await ctx.reply(reply)
                return
        if default is not None:
            await ctx.reply(default)

    return autoreply


def load_handler(bot: BotConfig) -> Handler:
    """The handler named by ``bot.handler``; raises HandlerError naming what to fix."""
    if bot.handler == "echo":
        return echo
    if bot.handler == "autoreply":
        return autoreply_handler(bot)
    where = f"bots[user_id={bot.user_id}].handler = {bot.handler!r}"
    handler = import_handler(bot.handler)
    if isinstance(handler, str):
        raise HandlerError(f"{where}: {handler}")
    return handler


def import_handler(path: str) -> Handler | str:
    """Import the ``package.module:function`` handler ``path`` (running the module's code):
    the handler, or the sentence saying why it cannot be used."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        return "write 'package.module:function'"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return f"cannot import module {module_name!r}: {exc}"
    except Exception as exc:  # the module's own code failed: say so, not a traceback
        return f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
    handler = getattr(module, attr, None)
    if handler is None:
        return f"module {module_name!r} has no attribute {attr!r}"
    if not inspect.iscoroutinefunction(handler):
        return f"must be an 'async def {attr}(update, ctx)' function"
    result: Handler = handler
    return result
