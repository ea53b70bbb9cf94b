"""The poller: one bot's ``getUpdates`` long-poll loop, its offset and the inbox hand-off.

Fetched updates are committed to the durable inbox before the next ``getUpdates`` (whose
advanced offset confirms them to Telegram), so an update is in SQLite before Telegram forgets
it; the new ones then go to their chat lanes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import trio

from actors.botapi import BotApiClient, BotApiError, CircuitOpenError, ErrorCategory
from actors.delivery import Inbound
from actors.lanes import ChatLanes, chat_key, update_chat_id
from actors.pipeline import RequestPipeline
from actors.services import FleetServices
from storage import InboxEntry, is_database_failure

__all__ = ["POLL_ERROR_PAUSE", "Poller"]

log = logging.getLogger("botvisor.bot")

# After a failed poll whose quick retries are spent, wait this long before polling again;
# the breaker takes over if failures go on.
POLL_ERROR_PAUSE = 1.0


class Poller:
    """Long-polls one bot's updates into its inbox and lanes until stopped."""

    def __init__(
        self,
        *,
        user_id: int,
        pipeline: RequestPipeline,
        services: FleetServices,
        after_call: Callable[[], None],
    ) -> None:
        self._user_id = user_id
        self._pipeline = pipeline
        self._services = services
        # The actor looks at its status after every poll (and announces a change).
        self._after_call = after_call
        self._offset: int | None = None
        self._stop = trio.Event()
        self._scope: trio.CancelScope | None = None

    @property
    def offset(self) -> int | None:
        """The next ``getUpdates`` offset; None before the first update."""
        return self._offset

    def arm(self) -> None:
        """At the start of an incarnation: not stopped (a later :meth:`stop` holds)."""
        self._stop = trio.Event()

    def prepare(self, offset: int | None) -> None:
        """Poll from ``offset`` (the stored one) on."""
        self._offset = offset

    def stop(self) -> None:
        """End the loop now, cancelling a long poll in flight."""
        self._stop.set()
        if self._scope is not None:
            self._scope.cancel()

    async def dispatch(
        self, lanes: ChatLanes[Inbound], update: Mapping[str, Any], received_at: float
    ) -> None:
        """Hand one inbox update to its chat lane, with its delivery deadline."""
        age = self._services.wall_clock() - received_at
        deadline = trio.current_time() + self._services.retry.delivery_deadline - age
        item = Inbound(int(update["update_id"]), update, received_at, deadline)
        await lanes.dispatch(chat_key(update), item)

    async def run(self, client: BotApiClient, lanes: ChatLanes[Inbound]) -> None:
        """Poll until stopped, or until a permanent error (the bot is suspended then)."""
        timeout = self._services.telegram.poll_timeout
        breaker = self._pipeline.breaker
        while not self._stop.is_set():
            with trio.CancelScope() as self._scope:
                if self._stop.is_set():
                    break
                try:
                    updates: list[dict[str, Any]] = await self._pipeline.call(
                        "getUpdates",
                        partial(client.get_updates, offset=self._offset, timeout=timeout),
                        rate_limited=False,
                        measure_latency=False,
                    )
                except CircuitOpenError:
                    self._after_call()
                    await breaker.wait_admitting()
                    continue
                except BotApiError as exc:
                    self._after_call()
                    if exc.category is ErrorCategory.PERMANENT:
                        break
                    log.info("bot %s: polling failed: %s", self._user_id, exc)
                    await trio.sleep(POLL_ERROR_PAUSE)
                    continue
                self._after_call()
                if updates:
                    try:
                        await self._accept(lanes, updates)
                    except Exception as exc:
                        if not is_database_failure(exc):
                            raise
                        # A full disk or an I/O error: the offset was not advanced, so
                        # Telegram sends these updates again; nothing is lost, and the bot
                        # does not crash into its restart intensity over the store.
                        log.warning(
                            "bot %s: cannot store updates (%s: %s); polling them again in %g s",
                            self._user_id,
                            type(exc).__name__,
                            exc,
                            POLL_ERROR_PAUSE,
                        )
                        await trio.sleep(POLL_ERROR_PAUSE)
            self._scope = None

    async def _accept(self, lanes: ChatLanes[Inbound], updates: list[dict[str, Any]]) -> None:
        """Commit fetched updates to the inbox, then hand the new ones to their lanes."""
        now = self._services.wall_clock()
        next_offset = max(int(u["update_id"]) for u in updates) + 1
        store = self._services.store
        entries = [InboxEntry(update, update_chat_id(update)) for update in updates]
        new_ids = set(await store.inbox_add(self._user_id, entries, next_offset, now))
        self._offset = next_offset
        for update in updates:
            if int(update["update_id"]) in new_ids:
                await self.dispatch(lanes, update, now)
