"""The poller: one bot's ``getUpdates`` long-poll loop, its offset and the inbox hand-off.

Fetched updates are committed to the durable inbox before the next ``getUpdates`` (whose
advanced offset confirms them to Telegram), so an update is in SQLite before Telegram forgets
it; the new ones then go to their chat lanes. Handing them over never waits: a full lane
leaves them in the inbox and re-reads them later (:meth:`Poller.refill`), so one busy chat
never holds up polling or the bot's other chats.

An empty answer that came back early (``poll_timeout = 0``, or a server that ignores the
timeout) is followed by the next poll no sooner than ``telegram.min_poll_interval`` after the
previous one started; a poll that brought updates is followed by the next at once. Polls are
``poll=True`` calls of the pipeline: their health and breaker run are kept apart from the
bot's other calls (:mod:`actors.health`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import Any

import trio

from actors.botapi import (
    BotApiClient,
    BotApiError,
    CircuitOpenError,
    ErrorCategory,
    TelegramError,
)
from actors.delivery import Inbound
from actors.lanes import ChatLanes, chat_key, key_chat_id, lane_name, usage_kind
from actors.pipeline import RequestPipeline
from actors.services import FleetServices
from storage import InboxEntry, is_database_failure

__all__ = ["POLL_ERROR_PAUSE", "Poller", "webhook_is_set"]

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
        allowed_updates: Sequence[str],
        on_webhook_conflict: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._user_id = user_id
        # Sent on every poll: Telegram would otherwise keep a list another deployment sent.
        self._allowed_updates = tuple(allowed_updates)
        self._pipeline = pipeline
        self._services = services
        # The actor looks at its status after every poll (and announces a change).
        self._after_call = after_call
        # getUpdates answered 409 because a webhook is set: delete it, then poll again.
        self._on_webhook_conflict = on_webhook_conflict
        # A shard's: getUpdates 409 "terminated by other getUpdates request" ends the loop
        # at once (no retry) and is reported with the bot's user_id.
        self._on_poll_conflict = services.on_poll_conflict
        self._offset: int | None = None
        self._stop = trio.Event()
        self._scope: trio.CancelScope | None = None

    @property
    def offset(self) -> int | None:
        """The next ``getUpdates`` offset; None before the first update."""
        return self._offset

    def arm(self) -> None:
        """At the end of an incarnation: not stopped, for the next one (a :meth:`stop` from
        then on holds for it, even one asked before it begins)."""
        self._stop = trio.Event()

    def prepare(self, offset: int | None) -> None:
        """Poll from ``offset`` (the stored one) on."""
        self._offset = offset

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    async def wait_stop(self) -> None:
        """Return once :meth:`stop` was called (a webhook bot's incarnation, which does not
        poll, waits on this)."""
        await self._stop.wait()

    def stop(self) -> None:
        """End the loop now, cancelling a long poll in flight."""
        self._stop.set()
        if self._scope is not None:
            self._scope.cancel()

    async def dispatch(
        self,
        lanes: ChatLanes[Inbound],
        update: Mapping[str, Any],
        received_at: float,
        key: Hashable | None = None,
    ) -> None:
        """Hand one inbox update to its chat lane (never waits: a full lane leaves it in the
        inbox and re-reads it); ``key`` is its ``chat_key`` when the caller has it already."""
        lane = chat_key(update) if key is None else key
        await lanes.dispatch(lane, self._inbound(update, received_at))

    def dispatch_nowait(
        self,
        lanes: ChatLanes[Inbound],
        update: Mapping[str, Any],
        received_at: float,
        key: Hashable,
    ) -> None:
        """:meth:`dispatch` for a synchronous caller (a webhook delivery just committed)."""
        lanes.dispatch_nowait(key, self._inbound(update, received_at))

    def redrive_nowait(
        self,
        lanes: ChatLanes[Inbound],
        update: Mapping[str, Any],
        received_at: float,
        *,
        forget: bool = True,
    ) -> None:
        """Hand an update an operator redrove (undone in the inbox again, received at
        ``received_at``) to its chat lane, in its place in the chat's order."""
        lanes.redrive_nowait(chat_key(update), self._inbound(update, received_at), forget=forget)

    async def dispatch_pending(
        self, lanes: ChatLanes[Inbound], pending: list[dict[str, Any]]
    ) -> None:
        """At a start: name the lanes of the undone updates (``inbox_pending`` rows) by the
        current rule, so each lane's re-read finds its own, then dispatch them in order."""
        keys = [chat_key(row["update"]) for row in pending]
        await self._services.store.inbox_name_lanes(
            self._user_id,
            [(row["update_id"], lane_name(key)) for row, key in zip(pending, keys, strict=True)],
        )
        for row, key in zip(pending, keys, strict=True):
            await self.dispatch(lanes, row["update"], row["received_at"], key)

    async def refill(self, key: Hashable, after: Inbound, limit: int) -> tuple[list[Inbound], bool]:
        """A full lane's next undone updates from the inbox (the lanes' ``refill``)."""
        name, after_id = lane_name(key), after.update_id
        while True:
            rows = await self._services.store.inbox_lane_undone(
                self._user_id, name, after_id, limit
            )
            # Rows stored without a lane name (before it was recorded) are checked by the rule.
            items = [
                self._inbound(row["update"], row["received_at"])
                for row in rows
                if row["lane"] is not None or chat_key(row["update"]) == key
            ]
            exhausted = len(rows) < limit
            if items or exhausted:
                return items, exhausted
            # A page of other lanes' unnamed rows only: read on past it.
            after_id = rows[-1]["update_id"]

    def _inbound(self, update: Mapping[str, Any], received_at: float) -> Inbound:
        """``update`` on its way to a lane, with its delivery deadline."""
        age = self._services.wall_clock() - received_at
        deadline = trio.current_time() + self._services.retry.delivery_deadline - age
        return Inbound(int(update["update_id"]), update, received_at, deadline)

    async def run(self, client: BotApiClient, lanes: ChatLanes[Inbound]) -> None:
        """Poll until stopped, or until a permanent error (the bot is suspended then)."""
        timeout = self._services.telegram.poll_timeout
        min_interval = self._services.telegram.min_poll_interval
        breaker = self._pipeline.breaker
        while not self._stop.is_set():
            with trio.CancelScope() as self._scope:
                if self._stop.is_set():
                    break
                started = trio.current_time()
                try:
                    updates: list[dict[str, Any]] = await self._pipeline.call(
                        "getUpdates",
                        partial(
                            client.get_updates,
                            offset=self._offset,
                            timeout=timeout,
                            allowed_updates=self._allowed_updates,
                        ),
                        rate_limited=False,
                        measure_latency=False,
                        poll=True,
                        final=None if self._on_poll_conflict is None else poll_taken_over,
                    )
                except CircuitOpenError:
                    self._after_call()
                    await breaker.wait_admitting(poll=True)
                    continue
                except BotApiError as exc:
                    self._after_call()
                    if exc.category is ErrorCategory.PERMANENT:
                        break
                    if self._on_poll_conflict is not None and poll_taken_over(exc):
                        log.warning(
                            "bot %s: getUpdates answered 409, another process polls this bot: "
                            "stopped polling it",
                            self._user_id,
                        )
                        self._on_poll_conflict(self._user_id)
                        break
                    if self._on_webhook_conflict is not None and webhook_is_set(exc):
                        log.warning(
                            "bot %s: getUpdates refused, a webhook is set: deleting it "
                            "(pending updates kept) and polling again",
                            self._user_id,
                        )
                        await self._on_webhook_conflict()
                        continue
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
                elif trio.current_time() < started + min_interval:
                    # An empty answer that came early: space the polls. After a real long
                    # poll, which took poll_timeout seconds, the next starts at once (a
                    # sleep_until in the past would still cost a cancel scope and a trip
                    # through the scheduler every poll).
                    await trio.sleep_until(started + min_interval)
            self._scope = None

    async def _accept(self, lanes: ChatLanes[Inbound], updates: list[dict[str, Any]]) -> None:
        """Commit fetched updates to the inbox, then hand the new ones to their lanes."""
        now = self._services.wall_clock()
        next_offset = max(int(u["update_id"]) for u in updates) + 1
        store = self._services.store
        # The chat rule once per update: the inbox row's chat and lane and the dispatch share it.
        keys = [chat_key(update) for update in updates]
        entries = [
            InboxEntry(update, key_chat_id(key), lane_name(key), *usage_kind(update))
            for update, key in zip(updates, keys, strict=True)
        ]
        new_ids = set(await store.inbox_add(self._user_id, entries, next_offset, now))
        self._offset = next_offset
        instruments = self._services.instruments
        for entry, key in zip(entries, keys, strict=True):
            if int(entry.update["update_id"]) in new_ids:
                instruments.count_update(entry.kind)
                await self.dispatch(lanes, entry.update, now, key)


def webhook_is_set(exc: BotApiError) -> bool:
    """Whether a failed getUpdates says a webhook is active (409 "can't use getUpdates method
    while webhook is active"), not that another poller took over (409 "terminated by other
    getUpdates request", left alone: one poller per bot)."""
    return (
        isinstance(exc, TelegramError)
        and exc.error_code == 409
        and "webhook" in exc.description.lower()
    )


def poll_taken_over(exc: BotApiError) -> bool:
    """Whether a failed getUpdates says another poller of the bot ended this one (409
    "Conflict: terminated by other getUpdates request"), not that a webhook is set."""
    return (
        isinstance(exc, TelegramError)
        and exc.error_code == 409
        and "terminated by other" in exc.description.lower()
    )
