"""Delivery: one bot's updates from its chat lanes through the handler to done.

A reply whose call exhausted its quick retries with a retryable error is parked in its lane
(keeping the chat's order) and sent again when the breaker admits calls, after 1, 2, 4 … 30 s
(:data:`PARK_BACKOFF`), until the update's delivery deadline; then it is dead-lettered. An
update is done once handled, dead-lettered, refused for good, or sent (an uncertain send
counts as sent, and is counted as ambiguous). DESIGN.md "Delivery" has the arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from actors.botapi import BotApiClient, BotApiError, ErrorCategory, TelegramError
from actors.chat_migrations import ChatMigrations, migration_announced
from actors.handlers import Handler, HandlerContext
from actors.lanes import chat_key, key_chat_id, lane_name
from actors.pipeline import RequestPipeline
from actors.retry import ExponentialBackoff, forbids_repeat
from actors.secrets import redact
from actors.services import FleetServices
from storage import BotCounters

__all__ = ["PARK_BACKOFF", "Delivery", "DeliveryFailed", "Inbound", "SuspendedWhileHandling"]

log = logging.getLogger("botvisor.bot")

# A parked reply is tried again after 1, 2, 4 … seconds, at most 30 apart (no jitter: the
# breaker's half-open probe, not the parked replies, decides when an outage is over).
PARK_BACKOFF = ExponentialBackoff(base=1.0, cap=30.0)


class DeliveryFailed(Exception):
    """A reply could not be delivered before its deadline, or was refused for good."""


class SuspendedWhileHandling(Exception):
    """The bot was suspended while handling an update: the update stays undone, to be
    handled again after the bot is resumed."""


@dataclass(frozen=True)
class Inbound:
    """An update on its way through a chat lane."""

    update_id: int
    update: Mapping[str, Any]
    received_at: float  # wall clock, when it entered the inbox
    deadline: float  # trio time after which its replies are dead-lettered


class Delivery:
    """Runs the handler on each update of one bot and sends its replies; keeps the counters
    an operator watches (handled, sent, dead-lettered, ambiguous, handler errors)."""

    def __init__(
        self,
        *,
        user_id: int,
        handler: Handler,
        pipeline: RequestPipeline,
        services: FleetServices,
        client: Callable[[], BotApiClient],
        after_call: Callable[[], None],
        context: Callable[[Delivery, Inbound], HandlerContext],
    ) -> None:
        self._user_id = user_id
        self._handler = handler
        self._pipeline = pipeline
        self._services = services
        self._client = client
        # The actor looks at its status after every send (and announces a change).
        self._after_call = after_call
        self._context = context
        self._handled = 0
        self._replies = 0
        self._dead_letters = 0
        self._ambiguous = 0
        self._handler_errors = 0
        self._migrations = ChatMigrations()
        # Updates in a handler now that have had a reply (reply latency is to the first).
        self._replied: set[int] = set()

    @property
    def user_id(self) -> int:
        return self._user_id

    @property
    def handled(self) -> int:
        """Updates done: handled, dead-lettered or refused for good."""
        return self._handled

    @property
    def replies(self) -> int:
        """Replies sent (ambiguous sends included)."""
        return self._replies

    @property
    def dead_letters(self) -> int:
        """Updates given up on, with their reason stored."""
        return self._dead_letters

    @property
    def ambiguous(self) -> int:
        """Sends of unknown outcome, counted as sent."""
        return self._ambiguous

    @property
    def handler_errors(self) -> int:
        """Handler exceptions and Bot API errors a handler let through."""
        return self._handler_errors

    @property
    def pipeline(self) -> RequestPipeline:
        return self._pipeline

    def client(self) -> BotApiClient:
        """The running incarnation's Bot API client (RuntimeError when not running)."""
        return self._client()

    @property
    def migrations(self) -> ChatMigrations:
        """The bot's known chat migrations (old chat id -> new); replies follow them."""
        return self._migrations

    def restore(self, counters: BotCounters) -> None:
        """Seed the counters from the stored ones."""
        self._handled = counters.handled_updates
        self._replies = counters.replies_sent
        self._dead_letters = counters.dead_letters
        self._ambiguous = counters.ambiguous_sends
        self._handler_errors = counters.handler_errors

    async def handle(self, item: Inbound) -> None:
        """A chat lane's handler: run the bot's handler on ``item``, then mark it done."""
        announced = migration_announced(item.update)
        if announced is not None:
            await self.record_migration(*announced)
        try:
            await self._handler(item.update, self._context(self, item))
        except SuspendedWhileHandling:
            self._replied.discard(item.update_id)
            return
        except DeliveryFailed:
            pass  # dead-lettered where it failed
        except BotApiError as exc:
            if exc.category is ErrorCategory.PERMANENT:
                self._replied.discard(item.update_id)
                return  # the bot is suspended; the update stays undone
            # A call the handler made (ctx.call, or a reply refused for good) failed and the
            # handler let it through: the update was not handled as its author meant.
            self._handler_errors += 1
            self._pipeline.usage.count("handler_errors")
            await self.dead_letter(item, f"the handler's {exc.method} call failed: {exc}")
        except Exception as exc:
            # A handler's bug must not crash-loop the bot on the same update: record it.
            self._handler_errors += 1
            self._pipeline.usage.count("handler_errors")
            reason = f"handler raised {type(exc).__name__}: {redact(str(exc))}"
            await self.dead_letter(item, reason)
        self._handled += 1
        self._replied.discard(item.update_id)
        store, now = self._services.store, self._services.wall_clock()
        # The bot's usage since the last write (this update's sends, and those of its other
        # chats so far) goes with the done mark, in its transaction: a crash before the mark
        # commits loses these counts, and the update is handled and its replies counted again.
        usage = self._pipeline.usage.take()
        try:
            store.inbox_done_nowait(self._user_id, [item.update_id], now, usage)
        except trio.WouldBlock:
            await store.inbox_done(self._user_id, [item.update_id], now, usage)

    async def deliver(self, item: Inbound, method: str, params: dict[str, Any]) -> Any:
        """Send a reply; park it through outages until its deadline.

        A reply to a group that became a supergroup goes to the supergroup: straight away if
        the migration is known, else once more after Telegram's 400 names the new chat.
        """
        client = self.client()
        pipeline = self._pipeline
        retry_uncertain = self._services.retry.retry_uncertain_sends
        params = self._to_current_chat(params)
        parked = 0
        followed = False
        while True:
            try:
                result = await pipeline.call(
                    method,
                    partial(client.call, method, params),
                    chat_id=params.get("chat_id"),
                    idempotent=False,
                )
            except BotApiError as exc:
                if forbids_repeat(exc, idempotent=False, retry_uncertain_sends=retry_uncertain):
                    # It may have reached Telegram: count it as sent rather than risk a
                    # duplicate message.
                    self._ambiguous += 1
                    self._replies += 1
                    return None
                error = exc
            else:
                self._replies += 1
                if item.update_id not in self._replied:
                    self._replied.add(item.update_id)
                    latency = self._services.wall_clock() - item.received_at
                    self._pipeline.usage.count_reply_latency(max(0.0, latency))
                return result
            finally:
                self._after_call()
            if isinstance(error, TelegramError) and error.migrate_to_chat_id is not None:
                old = params.get("chat_id")
                if not followed and isinstance(old, int):
                    # Once: a second refusal from the new chat is that chat's answer.
                    followed = True
                    await self.record_migration(old, error.migrate_to_chat_id)
                    params = self._to_current_chat(params)
                    continue
            if error.category is ErrorCategory.PERMANENT:
                raise SuspendedWhileHandling(str(error))
            if not error.category.is_retryable:
                raise error
            if trio.current_time() >= item.deadline:
                reason = f"delivery deadline passed; last error: {error}"
                await self.dead_letter(item, reason)
                raise DeliveryFailed(reason)
            # Parked: keep the chat's order by waiting right here, in its lane.
            parked += 1
            with trio.move_on_at(item.deadline):
                delay = PARK_BACKOFF(parked)
                await trio.sleep(min(delay, max(0.0, item.deadline - trio.current_time())))
                await pipeline.breaker.wait_admitting()
                await pipeline.flood_gate.wait_open()

    async def record_migration(self, old_chat_id: int, new_chat_id: int) -> None:
        """Remember (and store) that chat ``old_chat_id`` is now ``new_chat_id``."""
        if self._migrations.record(old_chat_id, new_chat_id):
            log.info(
                "bot %s: chat %s migrated to %s; replies go there now",
                self._user_id,
                old_chat_id,
                new_chat_id,
            )
            await self._services.store.record_chat_migration(
                self._user_id, old_chat_id, new_chat_id, self._services.wall_clock()
            )

    def _to_current_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` addressed to the chat ``chat_id`` became, if it migrated."""
        old = params.get("chat_id")
        new = self._migrations.resolve(old)
        if new == old:
            return params
        # A quoted message stayed in the old group (message ids start over in the new
        # supergroup): the reply goes without the quote rather than quote a stranger.
        redirected = {
            key: value
            for key, value in params.items()
            if key not in ("reply_parameters", "reply_to_message_id")
        }
        redirected["chat_id"] = new
        return redirected

    async def dead_letter(self, item: Inbound, reason: str) -> None:
        """Give up on ``item``: count it, log it and store it with its (redacted) reason and
        the update itself, so that an operator can redrive it."""
        self._dead_letters += 1
        self._pipeline.usage.count("dead_letters")
        log.warning("bot %s: update %s dead-lettered: %s", self._user_id, item.update_id, reason)
        key = chat_key(item.update)
        await self._services.store.dead_letter(
            self._user_id,
            item.update_id,
            key_chat_id(key),
            redact(reason),
            self._services.wall_clock(),
            update=item.update,
            lane=lane_name(key),
        )
