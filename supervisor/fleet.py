"""Fleet: the registry of tenant bots, their actors and their supervision.

The admin API and the daemon manage bots only through the Fleet: it validates a token before
anything is stored, persists the registry, restores each bot's health at start, and turns the
supervisor's decisions (a bot that exceeded its restart intensity) into suspensions.

The actors own their lifecycle: they suspend and resume themselves and announce it; the fleet
persists what they announce (:meth:`Fleet._queue_suspensions`, the one place that stores a
suspension). A request the bot's state does not allow raises :class:`actors.LifecycleError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from actors import (
    DEFAULT_ALLOWED_UPDATES,
    ActorState,
    AutoreplyRule,
    BotActor,
    BotApiClient,
    BotApiError,
    BotConfig,
    BotExists,
    BotMode,
    BotToken,
    ConfigBotsVanished,
    ErrorCategory,
    FleetError,
    FleetServices,
    HandlerError,
    HandlerNotAllowed,
    LifecycleEvent,
    NotOwned,
    OwnedByConfig,
    OwnershipConflict,
    RegistryUnavailable,
    RetiredCounters,
    Shard,
    TelegramUnreachable,
    TokenInUse,
    TokenRejected,
    UnknownBot,
    WebhookCertificate,
    derive_secret_token,
    handler_module_problem,
    import_handler,
    load_handler,
    redact,
    secret_fingerprint,
)
from storage import BotRecord, HealthRow, StoreClosedError, WebhookRegistration
from supervisor.bot_supervisor import BotSupervisor, ChildState, RestartType, SupervisorEvent
from supervisor.registration import RegistrationRetries

if TYPE_CHECKING:
    from supervisor.shard_registry import ShardRegistry

__all__ = ["REGISTRATION_CONCURRENCY", "TICK_CHUNK", "Fleet"]

log = logging.getLogger("botvisor.fleet")

# The fleet's getWebhookInfo checks begin this long after the start (or one info_interval,
# if shorter), then go round the webhook bots every info_interval.
FIRST_WEBHOOK_CHECK_DELAY = 60.0

# How long removing a webhook bot waits for its deleteWebhook before going on without it.
DELETE_WEBHOOK_TIMEOUT = 10.0

# setWebhook calls in flight at once, fleet-wide: registering 100,000 bots the first time
# needs no running bot, and does not hold 100,000 connections open.
REGISTRATION_CONCURRENCY = 16
# The fleet's tick looks at this many bots between two yields to the event loop (about a
# millisecond of work: the loop stays responsive at 10,000 bots).
TICK_CHUNK = 500
# The stored chat migrations of a bot that has none (read-only, shared by every such bot).
_NO_MIGRATIONS: Mapping[int, int] = MappingProxyType({})


# A bot in these states has no incarnation to write its usage counts.
_NO_INCARNATION = frozenset({ActorState.IDLE, ActorState.SUSPENDED})


@dataclass(frozen=True)
class _Registered:
    actor: BotActor
    source: str


def bot_record(bot: BotConfig, source: str, now: float, suspended: str | None = None) -> BotRecord:
    settings: dict[str, Any] = {
        "autoreply": [{"contains": r.contains, "reply": r.reply} for r in bot.autoreply],
        "autoreply_default": bot.autoreply_default,
        "rps": bot.rps,
        "allowed_updates": list(bot.allowed_updates),
        "mode": bot.mode.value,
    }
    return BotRecord(
        user_id=bot.user_id,
        token=bot.token.reveal(),
        handler=bot.handler,
        settings=settings,
        source=source,
        suspended_reason=suspended,
        created_at=now,
        updated_at=now,
    )


def bot_config(record: BotRecord) -> BotConfig:
    settings = record.settings or {}
    return BotConfig(
        user_id=record.user_id,
        token=BotToken(record.token),
        handler=record.handler,
        autoreply=tuple(AutoreplyRule(**rule) for rule in settings.get("autoreply", [])),
        autoreply_default=settings.get("autoreply_default"),
        rps=settings.get("rps"),
        # A bot stored before allowed_updates existed gets the default.
        allowed_updates=tuple(settings.get("allowed_updates") or DEFAULT_ALLOWED_UPDATES),
        mode=BotMode(settings.get("mode") or BotMode.POLLING.value),
    )


def _refuse_shared_tokens(configured: list[BotConfig], stored: Iterable[BotRecord]) -> None:
    """TokenInUse if a config file's bot has the bot of a bot added through the API under
    another user_id (the config file itself cannot repeat one: its validation refuses it).
    Nothing is stored or started then: the operator decides which tenant keeps the bot."""
    owners = {
        BotToken(record.token).bot_id: record.user_id
        for record in stored
        if record.source != "config"
    }
    for index, bot in enumerate(configured):
        owner = owners.get(bot.token.bot_id)
        if owner is not None and owner != bot.user_id:
            raise TokenInUse(
                f"bots[{index}].token (user_id {bot.user_id}): the token {bot.token.redacted} "
                f"is already registered for user_id {owner}, added through the admin API; "
                f"one bot serves one tenant: remove user_id {owner} "
                f"(DELETE /admin/bots/{owner}) or this [[bots]] entry",
                owner=owner,
            )


def _sentence(problem: str) -> str:
    """A rule's text after a subject: ``: module … is not allowed`` or `` must be …``."""
    return problem if problem[:1] == ":" else f" {problem}"


def _listing(user_ids: list[int], most: int = 10) -> str:
    shown = ", ".join(str(uid) for uid in user_ids[:most])
    return shown + (f", … ({len(user_ids) - most} more)" if len(user_ids) > most else "")


def _refuse_taken_user_ids(configured: list[BotConfig], stored: dict[int, BotRecord]) -> None:
    """OwnershipConflict naming every ``[[bots]]`` entry whose user_id belongs to a bot added
    through the admin API: the file does not take a bot over (its token, its handler)."""
    taken = [
        (index, bot.user_id)
        for index, bot in enumerate(configured)
        if bot.user_id in stored and stored[bot.user_id].source != "config"
    ]
    if taken:
        raise OwnershipConflict(
            "; ".join(
                f"bots[{index}] (user_id {user_id}) has the user_id of a bot added through the "
                f"admin API (user_id {user_id}, token {BotToken(stored[user_id].token).redacted})"
                for index, user_id in taken
            )
            + ": a config file does not take over an API bot; remove the API bot "
            "(DELETE /admin/bots/{user_id}) or give the [[bots]] entry another user_id"
        )


class Fleet:
    """Every tenant bot of the daemon, supervised by one BotSupervisor."""

    def __init__(
        self,
        supervisor: BotSupervisor,
        services: FleetServices,
        *,
        webhook_certificate: WebhookCertificate | None = None,
        shard: Shard | None = None,
        registry: ShardRegistry | None = None,
        conflict_holdoff: float = 30.0,
    ) -> None:
        self._supervisor = supervisor
        # A shard's registry ([cluster]): operators' changes are written to it first, then
        # to the store (its cache, holding the tokens sealed). None: the store is the registry.
        self._registry = registry
        # After another process's poll ended a bot's (409), wait this long (+ up to half of
        # it at random) before polling it again, if the registry says it is still ours.
        self._conflict_holdoff = conflict_holdoff
        # Bots stopped by a 409 and not yet decided about; suspensions (and resumptions) the
        # bots announced that the registry has not been told yet (user_id -> reason).
        self._conflicted: set[int] = set()
        self._registry_unsaved: dict[int, str | None] = {}
        self._conflict_send, self._conflict_receive = trio.open_memory_channel[int](math.inf)
        # This process's shard: it registers, runs and stores only the bots it owns (None:
        # one process owns every bot).
        self._shard = shard
        self._services = services
        # The listener's self-signed certificate (direct TLS), uploaded with each setWebhook.
        self._certificate = webhook_certificate
        self._bots: dict[int, _Registered] = {}
        # Adds in progress (user_id -> the token's bot id), reserved while getMe runs.
        self._adding: dict[int, int] = {}
        # Announced suspensions not yet queued to the store (user_id -> reason, None for a
        # resumption; the latest announcement of a bot wins).
        self._unsaved: dict[int, str | None] = {}
        # Webhook bots: each bot's derived secret_token, derived once (user_id -> token), and
        # what setWebhook was last told (as stored).
        self._secrets: dict[int, str] = {}
        self._registrations: dict[int, WebhookRegistration] = {}
        # Webhook bots waiting for setWebhook (user ids; the registration task takes them).
        self._register_send, self._register_receive = trio.open_memory_channel[int](math.inf)
        # Webhook bots whose setWebhook failed, tried again with a backoff.
        self._retries = RegistrationRetries(services.rng)
        # Bots with webhook deliveries counted in memory since the fleet last wrote them (a
        # dormant bot's are not written by the bot: it has no incarnation to flush them).
        self._usage_waiting: set[int] = set()
        self._tasks_scope: trio.CancelScope | None = None
        # The counters of bots removed since start (the fleet's sums never go down).
        self.retired = RetiredCounters()

    # --- start-up ------------------------------------------------------------------------

    async def load(
        self, configured: Iterable[BotConfig], *, prune_config_bots: bool = False
    ) -> list[HealthRow]:
        """Register the config file's bots and those added through the API, restore their
        health from the latest snapshots, and start every bot that is not suspended.

        The file owns the bots it declares, the API those it added: a ``[[bots]]`` user_id of
        an API bot is OwnershipConflict, and a file with no ``[[bots]]`` while bots of an
        earlier file are stored is ConfigBotsVanished unless ``prune_config_bots``; either
        way before anything stored changes. Stored config bots the file no longer declares
        are unregistered, each with a warning."""
        store = self._services.store
        now = self._services.wall_clock()
        declared = list(configured)
        # The file declares every shard's bots (one ConfigMap for all of them); each shard
        # takes those it owns. ``wanted`` is every bot the file declares, so a bot of another
        # shard is not mistaken for one the file no longer declares.
        configured = [bot for bot in declared if self.owns(bot.user_id)]
        stored = {record.user_id: record for record in await store.list_bots()}
        wanted = {bot.user_id for bot in declared}
        foreign = sorted(uid for uid in stored if not self.owns(uid))
        if self._registry is not None:
            # The cache holds the tokens sealed; another shard's rows stay as they are.
            opened = self._registry.open
            stored = {uid: r if uid in foreign else opened(r) for uid, r in stored.items()}
        if foreign:
            # Stored here when the shard count was another (a later resize hands them over);
            # their owner runs them now: this shard neither starts nor unregisters them.
            log.warning(
                "%d stored bot(s) belong to other shards now (user_id %s): not started here",
                len(foreign),
                _listing(foreign),
            )
            for uid in foreign:
                del stored[uid]
        if self._shard is not None:
            log.info(
                "shard %s: %d of the file's %d bots are this shard's",
                self._shard,
                len(configured),
                len(declared),
            )
        _refuse_taken_user_ids(configured, stored)
        _refuse_shared_tokens(configured, stored.values())
        self._refuse_disallowed_handlers(configured, stored.values())
        self._registrations = await store.load_webhook_registrations()
        vanished = sorted(
            uid for uid, record in stored.items() if record.source == "config" and uid not in wanted
        )
        if vanished and not declared and not prune_config_bots:
            raise ConfigBotsVanished(
                f"the config file declares no [[bots]], but {len(vanished)} bot(s) registered "
                f"from it are stored (user_id {_listing(vanished)}); starting would unregister "
                "every one of them. If that is what you want, start once with "
                "--prune-config-bots; otherwise put the [[bots]] back"
            )
        for user_id in vanished:
            log.warning(
                "bot %s is no longer declared in the config file: unregistering it "
                "(its health history stays)",
                user_id,
            )
            if user_id in self._registrations or (
                (stored[user_id].settings or {}).get("mode") == BotMode.WEBHOOK.value
            ):
                await self._delete_webhook(user_id, BotToken(stored[user_id].token))
            await store.remove_bot(user_id)
        records = []
        for bot in configured:
            previous = stored.get(bot.user_id)
            suspended = previous.suspended_reason if previous is not None else None
            records.append(bot_record(bot, "config", now, suspended))
        await store.upsert_bots([self._cached(record) for record in records])
        stored.update((record.user_id, record) for record in records)
        latest = await store.latest_snapshots()
        counters = await store.latest_counters()
        offsets = await store.load_offsets()
        pending = await store.inbox_pending_all()
        migrations = await store.load_chat_migrations()
        for record in stored.values():
            if record.source == "config" and record.user_id not in wanted:
                continue
            actor = self._new_actor(bot_config(record))
            row = latest.get(record.user_id)
            if row is not None:
                actor.restore(row)
            if record.user_id in counters:
                actor.restore_counters(counters[record.user_id])
            if record.suspended_reason:
                actor.restore_suspension(record.suspended_reason)
            undone = pending.get(record.user_id, [])
            if not actor.webhook_mode or undone:
                actor.preload(
                    offsets.get(record.user_id), undone, migrations.get(record.user_id, {})
                )
            elif actor.suspended_reason is None:
                # Dormant with nothing undone: a delivery wakes it with the update in hand
                # (committed to the inbox first), so the wake reads nothing from SQLite.
                actor.preload_dormant(migrations.get(record.user_id, _NO_MIGRATIONS))
            self._bots[record.user_id] = _Registered(actor, record.source)
            if actor.webhook_mode:
                self._queue_registration(actor)
            elif self._registrations.pop(record.user_id, None) is not None:
                # The actor deletes it (and its stored row) before its first poll.
                actor.leftover_webhook = True
        # All at once: each start is short, but 10,000 of them one after the other add up.
        async with trio.open_nursery() as nursery:
            for uid, registered in self._bots.items():
                actor = registered.actor
                if actor.suspended_reason is not None:
                    continue
                if actor.webhook_mode and uid not in pending:
                    continue  # dormant: no task until a delivery wakes it
                nursery.start_soon(self._start, actor)
        return [latest[uid] for uid in self._bots if uid in latest]

    @property
    def _allowed_modules(self) -> tuple[str, ...]:
        return self._services.handlers.allowed_modules

    def _refuse_disallowed_handlers(
        self, configured: list[BotConfig], stored: Iterable[BotRecord]
    ) -> None:
        """HandlerNotAllowed naming every bot, of the file or added through the API, whose
        handler module ``[handlers] allowed_modules`` does not allow (nothing is imported) or
        cannot be imported; nothing is stored or started then."""
        wanted = {bot.user_id for bot in configured}
        bots = [(f"bots[{i}] (user_id {b.user_id})", b.handler) for i, b in enumerate(configured)]
        bots += [
            (f"user_id {record.user_id} (added through the admin API)", record.handler)
            for record in stored
            if record.source != "config" and record.user_id not in wanted
        ]
        problems = []
        for where, handler in bots:
            problem = handler_module_problem(handler, self._allowed_modules)
            if problem is None and handler not in ("echo", "autoreply"):
                # Allowed, so imported now rather than inside a bot's start: a module gone
                # since the bot was added is named here, not a traceback.
                imported = import_handler(handler)
                problem = f": {imported}" if isinstance(imported, str) else None
            if problem is not None:
                problems.append(f"{where}: handler {handler!r}{_sentence(problem)}")
        if problems:
            raise HandlerNotAllowed("; ".join(problems))

    # --- queries -------------------------------------------------------------------------

    def get(self, user_id: int) -> BotActor:
        """The bot's actor; NotOwned for a bot of another shard, UnknownBot for none."""
        registered = self._bots.get(user_id)
        if registered is None:
            self.check_owned(user_id)
            raise UnknownBot(user_id)
        return registered.actor

    @property
    def shard(self) -> Shard | None:
        return self._shard

    def owns(self, user_id: int) -> bool:
        """Whether this process runs bot ``user_id`` (always, without a shard)."""
        return self._shard is None or self._shard.owns(user_id)

    def check_owned(self, user_id: int) -> None:
        """NotOwned (naming the owner) unless this shard owns bot ``user_id``."""
        if self._shard is not None and not self._shard.owns(user_id):
            raise NotOwned(user_id, self._shard.owner(user_id), str(self._shard))

    def source(self, user_id: int) -> str:
        return self._bots[user_id].source if user_id in self._bots else "unknown"

    def actors(self) -> list[BotActor]:
        return [self._bots[uid].actor for uid in sorted(self._bots)]

    def _owner_of(self, token: BotToken) -> int | None:
        """The user_id the token's bot is registered for, if any (by bot id: two tokens of
        one bot, an old and a regenerated one, are still one bot)."""
        for user_id, registered in self._bots.items():
            if registered.actor.config.token.bot_id == token.bot_id:
                return user_id
        return None

    def child_state(self, user_id: int) -> ChildState | None:
        return self._supervisor.child_state(user_id)

    # --- management ----------------------------------------------------------------------

    async def add(self, bot: BotConfig, *, source: str = "api") -> BotActor:
        """Validate the token with getMe, persist the bot, and start it at once.

        No lock is held while Telegram is asked: the user_id and the token's bot are reserved
        first, so adds of other bots (and every other request) go on meanwhile, and a second
        add of the same user_id or bot is refused as if the first were done. NotOwned,
        before anything else, for a bot of another shard."""
        self.check_owned(bot.user_id)
        problem = handler_module_problem(bot.handler, self._allowed_modules)
        if problem is not None:
            raise HandlerNotAllowed(f"handler {bot.handler!r}{_sentence(problem)}")
        if bot.mode is BotMode.WEBHOOK:
            self._require_webhook_config()
        self._reserve(bot)
        try:
            # Telegram accepts the token before the handler's module is imported: importing
            # runs the module's code, which a refused token must not get to run.
            await self.validate_token(bot.token)
            try:
                load_handler(bot)
            except HandlerError as exc:
                raise FleetError(str(exc)) from None
            now = self._services.wall_clock()
            record = bot_record(bot, source, now)
            if self._registry is not None:
                # Every shard's bots are in the registry: a token of another shard's bot is
                # refused here (TokenInUse), and nothing is stored if Postgres is away.
                record = await self._registry.add(record)
            await self._services.store.upsert_bot(record)
            actor = self._new_actor(bot)
            self._bots[bot.user_id] = _Registered(actor, source)
            self._emit(bot.user_id, "added")
        finally:
            del self._adding[bot.user_id]
        if actor.webhook_mode:
            self._queue_registration(actor)  # dormant until its first delivery
        else:
            await self._start(actor)
        return actor

    def _reserve(self, bot: BotConfig) -> None:
        """Claim the user_id and the token's bot for an add in progress, or refuse."""
        if bot.user_id in self._bots or bot.user_id in self._adding:
            raise BotExists(f"user_id {bot.user_id} is already registered")
        owner = self._owner_of(bot.token)
        if owner is None:
            owner = next(
                (uid for uid, bot_id in self._adding.items() if bot_id == bot.token.bot_id), None
            )
        if owner is not None:
            raise TokenInUse(
                f"the token {bot.token.redacted} is already registered for user_id {owner}: "
                "one bot serves one tenant; remove that bot first to move it",
                owner=owner,
            )
        self._adding[bot.user_id] = bot.token.bot_id

    async def remove(self, user_id: int) -> None:
        """Stop the bot and unregister it; its health history stays. OwnedByConfig for a
        bot the config file declares: the file would bring it back at the next start."""
        actor = self.get(user_id)
        if self._bots[user_id].source == "config":
            raise OwnedByConfig(
                f"user_id {user_id} is declared in the config file, which owns it: remove its "
                "[[bots]] entry and restart to unregister it (suspend and resume work here)"
            )
        if self._registry is not None:
            await self._registry.remove(user_id)
        if self._supervisor.child_state(user_id) is not None:
            await self._supervisor.stop_child(user_id)
        if actor.webhook_mode or user_id in self._registrations:
            await self._delete_webhook(user_id, actor.config.token)
        await self._services.store.remove_bot(user_id)  # its stored registration too
        del self._bots[user_id]
        self.retired.add(actor.metrics_sample())
        self._secrets.pop(user_id, None)
        self._registrations.pop(user_id, None)
        self._retries.forget(user_id)
        self._emit(actor.user_id, "removed")

    async def suspend(self, user_id: int, reason: str = "suspended by an admin") -> None:
        """Suspend the bot and stop it; LifecycleError if it is suspended already."""
        actor = self.get(user_id)
        if self._registry is not None and actor.suspended_reason is None:
            await self._registry.set_suspended(user_id, reason)
        actor.suspend(reason)
        self._registry_unsaved.pop(user_id, None)
        if self._supervisor.child_state(user_id) is not None:
            await self._supervisor.stop_child(user_id)
        await self.save_suspensions()

    async def resume(self, user_id: int) -> None:
        """Re-validate the token with getMe, clear the suspension and start the bot;
        LifecycleError (before asking Telegram) if the bot is not suspended."""
        actor = self.get(user_id)
        actor.check_resumable()
        await self.validate_token(actor.config.token)
        if self._registry is not None:
            await self._registry.set_suspended(user_id, None)
        if self._supervisor.child_state(user_id) is not None:
            await self._supervisor.stop_child(user_id)
        actor.resume()
        self._registry_unsaved.pop(user_id, None)
        await self.save_suspensions()
        await self._start(actor)
        if actor.webhook_mode:
            self._queue_registration(actor)  # switched to webhooks while suspended

    async def save_suspensions(self) -> None:
        """Wait until every announced suspension and resumption is stored."""
        while True:
            self._queue_suspensions()
            await self._services.store.flush()
            if not self._unsaved:
                return

    async def validate_token(self, token: BotToken) -> dict[str, Any]:
        """getMe with the token: TokenRejected if Telegram refuses it, TelegramUnreachable if
        Telegram cannot be asked."""
        async with self._services.http_client() as http:
            client = BotApiClient(http, token=token, telegram=self._services.telegram)
            try:
                me: dict[str, Any] = await client.get_me()
            except BotApiError as exc:
                if exc.category in (ErrorCategory.PERMANENT, ErrorCategory.CHAT):
                    raise TokenRejected(
                        f"Telegram rejected the token {token.redacted}: {exc.message}"
                    ) from None
                raise TelegramUnreachable(
                    f"could not validate the token {token.redacted}: {exc.message}"
                ) from None
        if me.get("id") != token.bot_id:
            raise TokenRejected(
                f"getMe answered for bot id {me.get('id')}, not {token.bot_id}: "
                "the token does not belong to that bot"
            )
        return me

    # --- supervision ---------------------------------------------------------------------

    def on_supervisor_event(self, event: SupervisorEvent) -> None:
        """Route the supervisor's decisions: lifecycle events out, suspensions applied."""
        registered = self._bots.get(event.child_id)
        if registered is None:
            return
        actor = registered.actor
        if event.kind == "suspended":
            if actor.suspended_reason is None:
                actor.suspend(event.detail)
        elif event.kind != "stopped" or actor.suspended_reason is None:
            self._emit(event.child_id, event.kind, event.detail)

    def _new_actor(self, bot: BotConfig) -> BotActor:
        return BotActor(bot, self._services, on_lifecycle=self._on_lifecycle)

    def _on_lifecycle(self, event: LifecycleEvent) -> None:
        """Persist what an actor announces: a suspension (its reason) or a resumption."""
        if event.event == "suspended":
            self._unsaved[event.user_id] = event.detail
        elif event.event == "resumed":
            self._unsaved[event.user_id] = None
        else:
            return
        if self._registry is not None:
            self._registry_unsaved[event.user_id] = self._unsaved[event.user_id]
        self._queue_suspensions()

    def _queue_suspensions(self) -> None:
        """Queue the announced suspensions to the store: the one writer of a bot's stored
        ``suspended_reason``. A full write queue keeps them for the next chance (the next
        announcement, an operator's request, the shutdown)."""
        store = self._services.store
        while self._unsaved:
            user_id = next(iter(self._unsaved))
            try:
                store.set_suspended_nowait(user_id, self._unsaved[user_id])
            except trio.WouldBlock:
                log.warning(
                    "the store is busy: %d suspensions wait to be stored", len(self._unsaved)
                )
                return
            except StoreClosedError:
                log.error("the store is closed: %d suspensions were not stored", len(self._unsaved))
                self._unsaved.clear()
                return
            del self._unsaved[user_id]

    async def _start(self, actor: BotActor) -> None:
        await self._supervisor.start_child(
            actor.user_id, actor, restart=RestartType.TRANSIENT, forget=actor.webhook_mode
        )

    async def set_mode(self, user_id: int, mode: BotMode) -> BotActor:
        """Switch the bot between polling and webhooks at run time, persisted in its stored
        settings; OwnedByConfig for a bot of the config file (its mode is the file's).

        Nothing is lost: polling → webhook stops the poller first (what it fetched is
        committed), then ``setWebhook`` (Telegram keeps the rest and pushes it); webhook →
        polling has the bot ``deleteWebhook`` keeping pending updates before its first poll.
        Either way the new incarnation reads the undone inbox. A suspended bot keeps the new
        mode for its resumption."""
        actor = self.get(user_id)
        source = self._bots[user_id].source
        if source == "config":
            raise OwnedByConfig(
                f"user_id {user_id} is declared in the config file, which owns its mode: "
                "change its bots[].mode there and restart"
            )
        if actor.config.mode is mode:
            return actor
        if mode is BotMode.WEBHOOK:
            self._require_webhook_config()
        changed = actor.config.model_copy(update={"mode": mode})
        now = self._services.wall_clock()
        record = bot_record(changed, source, now, actor.suspended_reason)
        if self._registry is not None:
            record = await self._registry.update(record)
        if self._supervisor.child_state(user_id) is not None:
            await self._supervisor.stop_child(user_id)
        actor.config = changed
        await self._services.store.upsert_bot(record)
        self._emit(user_id, "mode", mode.value)
        if mode is BotMode.POLLING:
            self._registrations.pop(user_id, None)
            self._forget_registration_retry(actor)
            actor.leftover_webhook = True  # deleted by the bot itself before it polls
        elif actor.suspended_reason is None:
            async with self._services.http_client() as http:
                # A failure is tried again with a backoff (RegistrationRetries).
                await self._register(actor, http)
        if actor.suspended_reason is None:
            # A webhook bot handles its undone inbox, then goes dormant.
            await self._start(actor)
        return actor

    def _require_webhook_config(self) -> None:
        """FleetError unless the daemon can run webhook bots ([webhook] public_url, secret)."""
        webhook = self._services.webhook
        if webhook.public_url is None or webhook.secret is None:
            raise FleetError(
                "mode 'webhook' needs webhook.public_url and the master secret "
                f"(${webhook.secret_env}) in the daemon's config; use mode 'polling' or "
                "configure [webhook]"
            )

    # --- webhook bots (the receiver's port, actors.WebhookBots) -------------------------

    def webhook_secret(self, user_id: int) -> str | None:
        """The bot's ``secret_token``, or None for an unknown bot (or no master secret).

        A polling bot gets its token too: a delivery that Telegram sent just before a switch
        to polling took effect is still the bot's own update, so it is stored and handled,
        never refused."""
        secret = self._secrets.get(user_id)
        if secret is not None:
            return secret
        registered = self._bots.get(user_id)
        master = self._services.webhook.secret
        if registered is None or master is None:
            return None
        secret = derive_secret_token(master, registered.actor.config.token.bot_id)
        self._secrets[user_id] = secret
        return secret

    def webhook_decoy_secret(self, user_id: int) -> str:
        """The secret a delivery to an unknown ``user_id`` is checked against (derived, not
        kept: a prober's many user ids cost no memory)."""
        return derive_secret_token(self._services.webhook.secret or "", user_id)

    def webhook_counted(self, user_id: int, accepted: bool) -> None:
        """A delivery to the bot answered (accepted or refused): counted in its usage, which
        a running bot writes with its own flushes and the fleet writes for a bot with no
        incarnation (dormant, suspended) every ``report_interval`` and at shutdown, so a
        dormant bot's counts reach storage while it sleeps."""
        registered = self._bots.get(user_id)
        if registered is not None:
            registered.actor.pipeline.usage.count_webhook(accepted)
            self._usage_waiting.add(user_id)

    def webhook_stored(
        self,
        user_id: int,
        update: Mapping[str, Any],
        key: Hashable,
        received_at: float,
        kind: str,
    ) -> None:
        """A new update of the bot is in its inbox: to its lane if it runs, else wake a
        dormant webhook bot; a suspended bot (or one stopping) finds it in the inbox when it
        next starts. Never blocks."""
        # Handed on only when new (a redelivery is not), like the poller's count; ``kind``
        # is the update type the receiver stored it with (its usage kind).
        self._services.instruments.count_update(kind)
        registered = self._bots.get(user_id)
        if registered is None:
            return
        actor = registered.actor
        if actor.suspended_reason is not None or actor.push(update, key, received_at):
            return
        if actor.webhook_mode:
            self._supervisor.wake(user_id, actor, restart=RestartType.TRANSIENT)

    def dead_letters_redriven(
        self, user_id: int, updates: Sequence[Mapping[str, Any]], received_at: float
    ) -> None:
        """Updates of the bot an operator redrove are undone in its inbox again: to their
        lanes if it runs, else wake a dormant webhook bot; a suspended or stopped bot finds
        them in the inbox when it next starts. Never blocks."""
        registered = self._bots.get(user_id)
        if registered is None or not updates:
            return
        actor = registered.actor
        if actor.redrive(updates, received_at) or actor.suspended_reason is not None:
            return
        if actor.webhook_mode:
            self._supervisor.wake(user_id, actor, restart=RestartType.TRANSIENT)

    def wanted_registration(self, actor: BotActor) -> WebhookRegistration:
        """What setWebhook should be told for ``actor`` now (``registered_at``: now)."""
        webhook = self._services.webhook
        secret = self.webhook_secret(actor.user_id)
        if secret is None:
            raise RuntimeError("webhook bots need the master secret (webhook.secret_env)")
        return WebhookRegistration(
            user_id=actor.user_id,
            url=self.webhook_url(actor.user_id),
            secret_fingerprint=secret_fingerprint(secret),
            allowed_updates=tuple(actor.config.allowed_updates),
            max_connections=webhook.max_connections,
            registered_at=self._services.wall_clock(),
            certificate_fingerprint=None
            if self._certificate is None
            else self._certificate.fingerprint,
        )

    def webhook_url(self, user_id: int) -> str:
        """The URL Telegram is given for the bot: ``{public_url}/{user_id}``, or with a
        shard ``{public_url}/s/{index}/{user_id}``, which a static proxy rule routes to the
        shard (and which the owner of a later shard count registers anew)."""
        webhook = self._services.webhook
        if self._shard is None:
            return webhook.bot_url(user_id)
        return webhook.bot_url(user_id, shard=self._shard.index)

    def registration(self, user_id: int) -> WebhookRegistration | None:
        """The bot's stored webhook registration, if any."""
        return self._registrations.get(user_id)

    def _queue_registration(self, actor: BotActor) -> None:
        """Queue setWebhook for a webhook bot whose stored registration is not the wanted
        one (a new bot, a changed url, allowed_updates or max_connections, a rotated master
        secret, a renewed certificate); one whose registration is current costs no Bot API call."""
        if actor.suspended_reason is not None:
            return
        if self.wanted_registration(actor).same_as(self._registrations.get(actor.user_id)):
            return
        self._register_send.send_nowait(actor.user_id)

    async def run_tasks(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The fleet-wide tasks, until :meth:`stop_tasks`: the tick (:meth:`tick`, every
        ``report_interval``) and the registration queue (up to
        :data:`REGISTRATION_CONCURRENCY` setWebhook calls at once, each through its bot's
        pipeline: retries, breaker, limits, but with no incarnation of the bot)."""
        with trio.CancelScope() as self._tasks_scope:
            async with trio.open_nursery() as nursery:
                for _ in range(REGISTRATION_CONCURRENCY):
                    nursery.start_soon(self._registration_worker)
                nursery.start_soon(self._check_webhooks)
                nursery.start_soon(self._retries.run, self._retry_registration)
                nursery.start_soon(self._tick_loop)
                if self._registry is not None:
                    nursery.start_soon(self._conflict_worker, nursery)
                task_status.started()

    def stop_tasks(self) -> None:
        """End :meth:`run_tasks` (at shutdown; unfinished registrations are made at the next
        start, since they are not stored). Then :meth:`write_webhook_usage`."""
        if self._tasks_scope is not None:
            self._tasks_scope.cancel()

    async def _tick_loop(self) -> None:
        while True:
            await trio.sleep(self._services.report_interval)
            await self.tick()
            await self._tell_registry_suspensions()

    def _cached(self, record: BotRecord) -> BotRecord:
        """``record`` as the store keeps it: a shard's cache holds its token sealed."""
        return record if self._registry is None else self._registry.seal(record)

    async def _tell_registry_suspensions(self) -> None:
        """Write the suspensions and resumptions the bots announced to the registry (a
        shard's); what it does not take now is tried at the next tick."""
        if self._registry is None:
            return
        while self._registry_unsaved:
            user_id, reason = next(iter(self._registry_unsaved.items()))
            try:
                await self._registry.set_suspended(user_id, reason)
            except RegistryUnavailable as exc:
                log.warning(
                    "%d suspension(s) not yet in the registry (tried again): %s",
                    len(self._registry_unsaved),
                    exc,
                )
                return
            if self._registry_unsaved.get(user_id, reason) == reason:
                self._registry_unsaved.pop(user_id, None)

    # --- another poller (a shard's 409) --------------------------------------------------

    def poll_conflict(self, user_id: int) -> None:
        """A bot's poller stopped at a 409 "terminated by other getUpdates request" (the
        actors' ``on_poll_conflict``): decide about it in the fleet's tasks. Never blocks."""
        if user_id in self._conflicted or user_id not in self._bots:
            return
        self._conflicted.add(user_id)
        self._conflict_send.send_nowait(user_id)

    async def _conflict_worker(self, nursery: trio.Nursery) -> None:
        async for user_id in self._conflict_receive:
            nursery.start_soon(self._after_conflict, user_id)

    async def _after_conflict(self, user_id: int) -> None:
        """Another process polls the bot: with its incarnation stopped, ask the registry
        whether this shard still owns it; if so, start it again after the hold-off (so two
        stale owners do not take it from each other in turn), else leave it stopped here."""
        assert self._registry is not None
        try:
            registered = self._bots.get(user_id)
            if registered is None:
                return
            self._emit(user_id, "poll_conflict", "another process polls this bot")
            if self._supervisor.child_state(user_id) is not None:
                await self._supervisor.stop_child(user_id)
            if not await self._registry.still_owns(user_id):
                log.warning(
                    "bot %s: another process polls it and the registry no longer gives it to "
                    "shard %s: stopped here for good",
                    user_id,
                    self._shard,
                )
                self._emit(user_id, "disowned", "the registry gives it to another shard")
                return
            holdoff = self._conflict_holdoff * (1 + 0.5 * self._services.rng.random())
            log.warning(
                "bot %s: another process polled it; the registry says shard %s owns it: "
                "polling again in %.0f s",
                user_id,
                self._shard,
                holdoff,
            )
            await trio.sleep(holdoff)
            current = self._bots.get(user_id)
            if current is None or current.actor is not registered.actor:
                return  # removed (or replaced) meanwhile
            actor = current.actor
            if actor.suspended_reason is not None or actor.webhook_mode:
                return
            if self._supervisor.child_state(user_id) is not None:
                await self._supervisor.stop_child(user_id)
            await self._start(actor)
            self._emit(user_id, "poll_resumed", "polling again after another process's poll")
        finally:
            self._conflicted.discard(user_id)

    async def tick(self) -> None:
        """One look at every bot with an incarnation and every dormant bot that took webhook
        deliveries since: each announces what time alone changed in its status, and their
        usage counts no done mark carried go to the store in one job. Yields to the loop
        every :data:`TICK_CHUNK` bots, so 10,000 bots do not hold it in one piece."""
        waiting, self._usage_waiting = self._usage_waiting, set()
        user_ids = dict.fromkeys(self._supervisor.child_ids())
        user_ids.update(dict.fromkeys(waiting))
        taken: list[tuple[int, dict[str, int]]] = []
        for n, user_id in enumerate(user_ids):
            if n and n % TICK_CHUNK == 0:
                await trio.lowlevel.checkpoint()
            registered = self._bots.get(user_id)
            if registered is not None and (counts := registered.actor.tick()):
                taken.append((user_id, counts))
        try:
            self._services.store.usage_add_many_nowait(taken, self._services.wall_clock())
        except trio.WouldBlock:
            # The write queue is full: kept for the next tick.
            for user_id, counts in taken:
                registered = self._bots.get(user_id)
                if registered is not None:
                    registered.actor.pipeline.usage.give_back(counts)
                    self._usage_waiting.add(user_id)
        except StoreClosedError:
            return

    def _webhook_usage(self) -> list[tuple[int, dict[str, int]]]:
        """The usage counts of the bots that took deliveries since the last write and have no
        incarnation now, taken. A running bot writes its own (with its done marks, which
        keeps a send's count exactly once across a crash), and when it goes dormant."""
        waiting, self._usage_waiting = self._usage_waiting, set()
        taken = []
        for user_id in waiting:
            registered = self._bots.get(user_id)
            if registered is not None and registered.actor.state in _NO_INCARNATION:
                counts = registered.actor.pipeline.usage.take()
                if counts:
                    taken.append((user_id, counts))
        return taken

    async def write_webhook_usage(self) -> None:
        """Write every delivery counted and not yet stored (at shutdown, once the webhook
        listener has stopped), waiting for room in the write queue."""
        now = self._services.wall_clock()
        for user_id, counts in self._webhook_usage():
            await self._services.store.usage_add(user_id, counts, now)

    def registration_retries(self, user_id: int) -> int:
        """The bot's failed setWebhook calls in a row, while they are tried again (0: none)."""
        return self._retries.failures(user_id)

    def _retry_registration(self, user_id: int) -> None:
        """A failed registration is due again: back to the queue, unless the bot is gone,
        polling or suspended meanwhile (then its retries end)."""
        registered = self._bots.get(user_id)
        if (
            registered is None
            or not registered.actor.webhook_mode
            or registered.actor.suspended_reason is not None
        ):
            self._retries.forget(user_id)
            return
        self._register_send.send_nowait(user_id)

    def _forget_registration_retry(self, actor: BotActor) -> None:
        """End the bot's retries and clear its registration error from its health."""
        self._retries.forget(actor.user_id)
        if actor.pipeline.health.webhook_registration_error is not None:
            actor.record_webhook_registration(None)

    async def _registration_worker(self) -> None:
        async with self._services.http_client() as http:
            async for user_id in self._register_receive:
                registered = self._bots.get(user_id)
                if registered is None or not registered.actor.webhook_mode:
                    continue
                await self._register(registered.actor, http)

    async def _check_webhooks(self) -> None:
        """getWebhookInfo of each webhook bot about every ``webhook.info_interval``, the
        checks spread evenly over it (one task for the fleet, none per bot). A bot that took
        a delivery within the interval is skipped: Telegram reaches it."""
        interval = self._services.webhook.info_interval
        # Not during start-up: a start with current registrations makes no Bot API call.
        await trio.sleep(min(interval, FIRST_WEBHOOK_CHECK_DELAY))
        async with self._services.http_client() as http:
            while True:
                bots = [
                    r.actor
                    for r in self._bots.values()
                    if r.actor.webhook_mode and r.actor.suspended_reason is None
                ]
                if not bots:
                    await trio.sleep(interval)
                    continue
                gap = interval / len(bots)
                for actor in bots:
                    await trio.sleep(gap)
                    if self._bots.get(actor.user_id) is None or not actor.webhook_mode:
                        continue  # removed or switched meanwhile
                    pushed = actor.last_push_at
                    if pushed and trio.current_time() - pushed < interval:
                        actor.record_webhook_info(None)
                        continue
                    await self._check_webhook(actor, http)

    async def _check_webhook(self, actor: BotActor, http: Any) -> None:
        client = BotApiClient(http, token=actor.config.token, telegram=self._services.telegram)
        try:
            info = await actor.pipeline.call(
                "getWebhookInfo", client.get_webhook_info, rate_limited=False
            )
        except BotApiError as exc:
            log.info("bot %s: getWebhookInfo failed: %s", actor.user_id, exc)
            return
        registered = self._registrations.get(actor.user_id)
        url = info.get("url") or ""
        if registered is not None and url != registered.url:
            log.warning(
                "bot %s: Telegram reports another webhook (%s) than botvisor registered; "
                "registering it again",
                actor.user_id,
                redact(url) or "none",
            )
            del self._registrations[actor.user_id]
            self._queue_registration(actor)
        elif (
            registered is not None
            and registered.certificate_fingerprint is not None
            and info.get("has_custom_certificate") is False
        ):
            # Set again without the certificate (by someone else): Telegram cannot reach
            # a listener with a self-signed certificate it was not given.
            log.warning(
                "bot %s: Telegram has no certificate for the webhook botvisor registered with "
                "one; registering it again",
                actor.user_id,
            )
            del self._registrations[actor.user_id]
            self._queue_registration(actor)
        problem = None
        error_date = info.get("last_error_date")
        pending = info.get("pending_update_count") or 0
        recent = self._services.wall_clock() - self._services.webhook.info_interval
        if isinstance(error_date, int | float) and error_date >= recent and pending > 0:
            message = str(info.get("last_error_message") or "no message")
            problem = redact(
                f"Telegram cannot deliver to the webhook ({pending} updates pending): {message}"
            )
        actor.record_webhook_info(problem)

    async def _register(self, actor: BotActor, http: Any) -> bool:
        """setWebhook for ``actor`` (pending updates kept), stored on success. A failure is
        on the bot's health (DEGRADED) and tried again with a backoff; a 401 has suspended
        the bot (its pipeline did), which ends the retries until it is resumed."""
        wanted = self.wanted_registration(actor)
        if wanted.same_as(self._registrations.get(actor.user_id)):
            self._forget_registration_retry(actor)
            return True
        secret = self.webhook_secret(actor.user_id)
        assert secret is not None  # wanted_registration checked it
        client = BotApiClient(http, token=actor.config.token, telegram=self._services.telegram)
        try:
            await actor.pipeline.call(
                "setWebhook",
                partial(
                    client.set_webhook,
                    url=wanted.url,
                    secret_token=secret,
                    max_connections=wanted.max_connections,
                    allowed_updates=wanted.allowed_updates,
                    drop_pending_updates=False,
                    certificate=None if self._certificate is None else self._certificate.pem,
                ),
                # Not a message: the message limits (global_rps...) would make a first
                # registration of 100,000 bots take an hour; the queue's concurrency bounds
                # it, and the bot's flood gate still honours a 429's retry_after.
                rate_limited=False,
            )
        except BotApiError as exc:
            # The error's message names the method ("setWebhook failed: 502 Bad Gateway").
            problem = redact(exc.message)
            actor.record_webhook_registration(problem)
            if actor.suspended_reason is not None:
                # A 401: the pipeline suspended the bot, as it does a polling bot.
                self._retries.forget(actor.user_id)
                log.warning(
                    "bot %s: %s; not tried again until the bot is resumed", actor.user_id, problem
                )
                return False
            delay = self._retries.failed(actor.user_id)
            log.warning(
                "bot %s: %s (%d in a row); trying again in %.0f s",
                actor.user_id,
                problem,
                self._retries.failures(actor.user_id),
                delay,
            )
            return False
        current = self._bots.get(actor.user_id)
        if current is None:
            # Removed while Telegram was asked (a 429's wait, a slow answer): the removal's
            # deleteWebhook may have reached Telegram first, so this setWebhook would leave
            # Telegram pushing to a bot nobody serves. Delete it again.
            await self._delete_webhook(actor.user_id, actor.config.token)
            return False
        if current.actor is not actor or not actor.webhook_mode:
            return False  # replaced, or switched to polling (which deletes the webhook)
        await self._services.store.upsert_webhook_registration(wanted)
        self._registrations[actor.user_id] = wanted
        self._forget_registration_retry(actor)
        log.info("bot %s: webhook registered at %s", actor.user_id, wanted.url)
        return True

    async def _delete_webhook(self, user_id: int, token: BotToken) -> None:
        """deleteWebhook for a bot being removed, dropping its pending updates (no bot of
        botvisor will handle them; a webhook left set would have Telegram push to a URL that
        now answers 404 for a day). Bounded and never blocking the removal: a failure is
        logged (redacted) and the removal goes on."""
        self._registrations.pop(user_id, None)
        try:
            with trio.move_on_after(DELETE_WEBHOOK_TIMEOUT) as scope:
                async with self._services.http_client() as http:
                    client = BotApiClient(http, token=token, telegram=self._services.telegram)
                    await client.delete_webhook(drop_pending_updates=True)
        except (BotApiError, OSError) as exc:
            log.warning(
                "bot %s: deleteWebhook failed while removing it (%s); Telegram may keep "
                "pushing to its URL, which answers 404, until the update expires",
                user_id,
                redact(str(exc)),
            )
            return
        if scope.cancelled_caught:
            log.warning(
                "bot %s: deleteWebhook got no answer within %.0f s while removing it; "
                "removed anyway",
                user_id,
                DELETE_WEBHOOK_TIMEOUT,
            )

    def _emit(self, user_id: int, kind: str, detail: str = "") -> None:
        self._services.events.emit(
            LifecycleEvent(user_id, self._services.wall_clock(), kind, detail)
        )
