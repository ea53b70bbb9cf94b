"""The daemon: builds the supervision tree once and runs it until shutdown.

::

    root nursery
    ├─ StoreWriter      the only SQLite writer
    ├─ MetricsActor     aggregates, snapshots, retention, live events
    ├─ BotSupervisor    dynamic one_for_one over the tenant bots
    ├─ AdminServer      Starlette on hypercorn.trio.serve
    └─ WebhookServer    the webhook receiver (plain ASGI) on Hypercorn, if webhook.public_url

Components start in that order and stop in reverse, except that the bots stop polling
first of all: at the start of a shutdown every long poll is cancelled and the grace period
begins. Then the webhook listener stops (a delivery then meets a refused connection and
Telegram retries it; every delivery answered 200 is committed), the admin server stops taking
requests, the bots finish in-flight handlers within ``graceful_timeout``, the metrics
actor writes its final snapshot, and the writer commits everything queued. A crash of a core
component cancels the tree and propagates, so the process exits non-zero.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from actors import (
    BOT_CONNECTIONS,
    BotEvent,
    EventSink,
    FleetHealth,
    FleetHttpPool,
    FleetServices,
    GlobalRateLimiter,
    HandlerNotAllowed,
    HttpClient,
    MetricsActor,
    OwnershipError,
    Shard,
    TokenInUse,
    WebhookCertificate,
    WebhookReceiver,
    find_exception,
    make_http_client,
    shared_ssl_context,
)
from admin import AdminContext, AdminServer, ListenError, WebhookServer, create_app
from storage import (
    DatabaseFailedError,
    NotADatabaseError,
    Offload,
    SchemaTooNewError,
    StorageError,
    Store,
)
from supervisor.bot_supervisor import BotSupervisor
from supervisor.cluster import ClusterConfig
from supervisor.config import Config
from supervisor.fdlimit import OpenFilesLimit, OpenFilesLimitError, check_open_files
from supervisor.fencing import FenceLost, FenceUnavailable, ShardFence, ShardHeld
from supervisor.fleet import Fleet, bot_record
from supervisor.loading import ConfigError
from supervisor.registry import Registry, RegistryError
from supervisor.sealing import TokenSealer
from supervisor.shard_registry import ShardRegistry

__all__ = ["Daemon", "DaemonHandle", "setup_error"]

log = logging.getLogger("botvisor")

EVENT_BUFFER = 10_000


@dataclass(frozen=True)
class DaemonHandle:
    """What ``Daemon.run`` hands back once everything is up."""

    admin_url: str | None
    fleet: Fleet
    metrics: MetricsActor
    store: Store
    supervisor: BotSupervisor
    # The actors -> metrics channel (tests inject events through it).
    events: EventSink | None = None
    # The webhook listener's base URL (None: no webhook.public_url, no listener).
    webhook_url: str | None = None
    webhook: WebhookReceiver | None = None


class Daemon:
    """One botvisor process's worth of objects, built once and passed down."""

    def __init__(
        self,
        config: Config,
        *,
        wall_clock: Callable[[], float],
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        store_offload: Offload | None = None,
        open_files: OpenFilesLimit | None = None,
        prune_config_bots: bool = False,
        freeze_after_load: bool = False,
        shard: Shard | None = None,
        registry: ShardRegistry | None = None,
    ) -> None:
        self.config = config
        # The shard's registry; None: built from [cluster] (tests hand one in).
        self._registry = registry
        # This process's shard (botvisor run --shard i/N): it runs only the bots it owns.
        # None: one process owns every bot, as without sharding.
        self.shard = shard
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._transport = transport
        self._store_offload = store_offload
        # The process's open-files limit, checked against the fleet before any socket is
        # opened; None skips the check (a daemon inside a test process).
        self._open_files = open_files
        # Unregister every stored config bot when the file declares none (botvisor run
        # --prune-config-bots); without it such a start is refused.
        self._prune_config_bots = prune_config_bots
        # After the fleet is loaded, move every object then alive to the collector's
        # permanent generation (gc.freeze): the process's own objects live until it exits,
        # and later collections need not walk them again. For a daemon that owns its process.
        self._freeze_after_load = freeze_after_load
        self._shutdown = trio.Event()
        self.handle: DaemonHandle | None = None
        # Why this shard's fencing lock was lost ([cluster]), once it was: run() then raises
        # FenceLost after stopping everything.
        self.fence_lost: str | None = None
        if config.cluster is not None and shard is None:
            raise ValueError("[cluster] needs a shard (--shard INDEX/COUNT)")

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        self._shutdown.set()

    async def run(
        self, *, task_status: trio.TaskStatus[DaemonHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until shutdown. With ``[cluster]``, first take the shard's fencing lock
        (ShardHeld, FenceUnavailable) before anything is opened, hold it to the end, and
        raise FenceLost after a shutdown its loss caused."""
        fence: ShardFence | None = None
        if self.config.cluster is not None:
            assert self.shard is not None
            fence = ShardFence(self.config.cluster, self.shard)
            await fence.acquire()
        try:
            await self._run(fence, task_status)
        finally:
            if fence is not None:
                with trio.CancelScope(shield=True):
                    await fence.release()
        if self.fence_lost is not None:
            assert self.shard is not None
            raise FenceLost(self.shard, self.fence_lost)

    async def _guard(self, fence: ShardFence, scope: trio.CancelScope) -> None:
        """Watch the lock's session; once it is gone, shut down (every bot stops polling
        first of all) and remember why."""
        with scope:
            reason = await fence.watch()
            self.fence_lost = reason
            log.error(
                "shard %s lost its lock: %s; every bot stops polling now and the daemon exits "
                "(another process may hold the shard now: it is not taken again)",
                self.shard,
                reason,
            )
            self._shutdown.set()

    async def _run(
        self, fence: ShardFence | None, task_status: trio.TaskStatus[DaemonHandle]
    ) -> None:
        config = self.config
        ssl_context = None if self._transport is not None else shared_ssl_context()

        # The fleet's connections: small pools (FleetHttpPool's LEASES_PER_CLIENT leases
        # each, built on first use) handed from lease to lease, so connections are reused
        # across incarnations and fleet calls while no httpcore pool grows with the fleet
        # (its per-request work is quadratic in its connections); each lease admits
        # BOT_CONNECTIONS requests at once, so open sockets stay within fdlimit's estimate
        # and a hanging tenant cannot take the others' connections.
        def new_client(connections: int) -> HttpClient:
            return make_http_client(
                transport=self._transport,
                ssl_context=ssl_context,
                telegram=config.telegram,
                max_connections=connections,
                max_keepalive_connections=connections,
            )

        http_pool = FleetHttpPool(new_client, per_bot=BOT_CONNECTIONS)

        store = (
            Store(config.storage.path)
            if self._store_offload is None
            else Store(config.storage.path, offload=self._store_offload)
        )
        send_events, receive_events = trio.open_memory_channel[BotEvent](EVENT_BUFFER)
        events = EventSink(send_events)
        fleet_box: list[Fleet] = []
        registry = self._registry
        cluster = config.cluster
        if registry is None and cluster is not None:
            assert self.shard is not None and cluster.registry_key is not None
            registry = ShardRegistry(
                Registry(cluster, wall_clock=self._wall_clock),
                TokenSealer(cluster.registry_key, variable=cluster.registry_key_env),
                self.shard,
                bot_record=bot_record,
                wall_clock=self._wall_clock,
            )
        services = FleetServices(
            telegram=config.telegram,
            limits=config.limits,
            breaker=config.breaker,
            retry=config.retry,
            health=config.health,
            report_interval=config.supervisor.report_interval,
            global_limiter=GlobalRateLimiter(config.limits.global_rps, config.limits.global_burst),
            store=store,
            events=events,
            wall_clock=self._wall_clock,
            http_client=http_pool.lease,
            rng=self._rng,
            handlers=config.handlers,
            webhook=config.webhook,
            on_poll_conflict=(
                None if registry is None else lambda user_id: fleet_box[0].poll_conflict(user_id)
            ),
        )
        supervisor = BotSupervisor(
            config.supervisor,
            rng=self._rng,
            on_event=lambda event: fleet_box[0].on_supervisor_event(event),
        )
        fleet = Fleet(
            supervisor,
            services,
            webhook_certificate=_webhook_certificate(config),
            shard=self.shard,
            registry=registry,
            conflict_holdoff=(cluster or ClusterConfig()).conflict_holdoff,
        )
        fleet_box.append(fleet)
        metrics = MetricsActor(
            store,
            receive_events,
            health=FleetHealth(fleet.actors, changes=lambda: events.emitted, retired=fleet.retired),
            wall_clock=self._wall_clock,
            persist_interval=config.storage.persist_interval,
            retention_days=config.storage.retention_days,
            retention_check_interval=config.storage.retention_check_interval,
            usage_hour_retention_days=config.storage.usage_hour_retention_days,
            usage_retention_days=config.storage.usage_retention_days,
            instruments=services.instruments,
        )

        receiver: WebhookReceiver | None = None
        webhook: WebhookServer | None = None
        hook = config.webhook
        if hook.public_url is not None:
            receiver = WebhookReceiver(
                bots=fleet,
                store=store,
                wall_clock=self._wall_clock,
                path=hook.path,
                max_body_bytes=hook.max_body_bytes,
                shard=self.shard,
            )
            hook_tls = (
                (hook.tls_cert, hook.tls_key)
                if hook.tls_cert is not None and hook.tls_key is not None
                else None
            )
            webhook = WebhookServer(receiver, host=hook.host, port=hook.port, tls=hook_tls)

        async def ready() -> tuple[bool, str]:
            if self._shutdown.is_set():
                return False, "shutting down"
            if webhook is not None and not webhook.listening:
                return False, "the webhook listener is not listening"
            writable, detail = await store.check_writable()
            return writable, detail

        admin: AdminServer | None = None
        if config.admin.enabled:
            app = create_app(
                AdminContext(
                    fleet=fleet,
                    metrics=metrics,
                    store=store,
                    supervisor=supervisor,
                    events=events,
                    wall_clock=self._wall_clock,
                    admin_token=config.admin.token,
                    ready=ready,
                    webhook=receiver,
                    metrics_public=config.admin.metrics_public,
                    metrics_per_bot=config.admin.metrics_per_bot,
                    ip_rate_limit=config.admin.rate_limit,
                    ip_rate_limit_clients=config.admin.ip_rate_limit_clients,
                    trusted_proxies=config.admin.trusted_proxies,
                    usage_hour_retention_days=config.storage.usage_hour_retention_days,
                    usage_retention_days=config.storage.usage_retention_days,
                    shard=self.shard,
                )
            )
            tls = (
                (config.admin.tls_cert, config.admin.tls_key)
                if config.admin.tls_cert is not None and config.admin.tls_key is not None
                else None
            )
            admin = AdminServer(app, host=config.admin.host, port=config.admin.port, tls=tls)

        # The pool's clients are closed after every bot (the root nursery) has stopped, the
        # registry's connection after the store (or after a failed start).
        guard = trio.CancelScope()
        async with http_pool, _closing(registry), trio.open_nursery() as root:
            if fence is not None:
                root.start_soon(self._guard, fence, guard)
            await root.start(store.run)
            if registry is not None:
                # The registry (or, if Postgres does not answer, the cache as it is) decides
                # which bots this shard loads.
                await registry.start(store, config.bots, prune=self._prune_config_bots)
            if self._open_files is not None:
                check_open_files(await _polling_bots(config, store, fleet), self._open_files)
            await root.start(metrics.run)
            await root.start(supervisor.run)
            with _collector_paused(freeze=self._freeze_after_load):
                await fleet.load(config.bots, prune_config_bots=self._prune_config_bots)
            await root.start(fleet.run_tasks)
            admin_url = await root.start(admin.run) if admin is not None else None
            webhook_url = await root.start(webhook.run) if webhook is not None else None
            self.handle = DaemonHandle(
                admin_url, fleet, metrics, store, supervisor, events, webhook_url, receiver
            )
            for warning in config.telegram.warnings():
                log.warning("%s", warning)
            log.info(
                "botvisor running%s: %d bots, admin API %s",
                "" if self.shard is None else f" as shard {self.shard}",
                len(fleet.actors()),
                admin_url or "disabled",
            )
            task_status.started(self.handle)

            await self._shutdown.wait()
            guard.cancel()
            log.info(
                "shutting down: %d bots stop polling now (grace %g s), then the admin API stops",
                len(fleet.actors()),
                config.supervisor.graceful_timeout,
            )
            # First of all, every long poll is cancelled and no bot polls again: stopping
            # the servers takes a while at scale, and a fleet that went on polling meanwhile
            # kept the loop busy with new polls (and the grace period had not begun).
            supervisor.begin_stop(config.supervisor.graceful_timeout)
            if webhook is not None:
                await webhook.stop()
                log.info("shutdown: webhook listener stopped")
            if admin is not None:
                await admin.stop()
                log.info("shutdown: admin API stopped")
            fleet.stop_tasks()
            await fleet.write_webhook_usage()
            await supervisor.stop(config.supervisor.graceful_timeout)
            log.info("shutdown: bots stopped")
            await metrics.stop()
            log.info("shutdown: final health snapshot written")
            await fleet.save_suspensions()
            await store.stop()
            log.info("shutdown complete: database closed")


# A full (oldest-generation) collection at most once per this many collections of the middle
# generation (CPython's default is 10). A polling bot's long poll keeps its objects alive for
# the poll's timeout, long enough to reach the oldest generation, where they then die by
# reference count; with the default, 10,000 idle bots set off a full collection every second
# or so, each walking ~700,000 objects for ~100 ms (far more on a loaded machine) and
# collecting nothing (gc.callbacks, bench/fleet.py's loop-lateness window: 8-15 s of a
# 10 s window's CPU went to them on a loaded 2-core machine, 0.6-0.7 s with this setting).
# Young cycles are still collected as often as before; a cycle that reaches the oldest
# generation waits about a minute at that fleet's rate instead of a second.
FULL_COLLECTION_EVERY = 1000


@contextlib.asynccontextmanager
async def _closing(registry: ShardRegistry | None) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if registry is not None:
            await registry.close()


@contextlib.contextmanager
def _collector_paused(*, freeze: bool) -> Iterator[None]:
    """No cyclic garbage collection while the fleet is built: each bot's objects are all
    alive, so the collections that allocating them would trigger walk an ever larger heap
    for nothing (they were 90% of building 10,000 bots). ``freeze`` (a daemon that owns its
    process): then move every object alive to the permanent generation, and make full
    collections rare (:data:`FULL_COLLECTION_EVERY`)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
        if was_enabled:
            gc.enable()


async def _polling_bots(config: Config, store: Store, fleet: Fleet) -> int:
    """How many bots will poll: the config file's and those added through the API that this
    shard owns, except the suspended ones."""
    stored = {
        record.user_id: record for record in await store.list_bots() if fleet.owns(record.user_id)
    }
    configured = {bot.user_id for bot in config.bots if fleet.owns(bot.user_id)}
    api_added = {uid for uid, record in stored.items() if record.source != "config"}
    return sum(
        1 for uid in configured | api_added if uid not in stored or not stored[uid].suspended_reason
    )


def _webhook_certificate(config: Config) -> WebhookCertificate | None:
    """The webhook listener's certificate, uploaded with setWebhook (direct TLS only: behind
    a proxy with a CA-signed certificate there is nothing to upload)."""
    path = config.webhook.tls_cert
    if path is None or config.webhook.public_url is None:
        return None
    try:
        return WebhookCertificate.from_pem(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            "config", [f"webhook.tls_cert: cannot read a certificate from {path!r}: {detail}"]
        ) from None


def setup_error(exc: BaseException, *, database: str = "the database") -> Exception | None:
    """The operator-fixable error (database, admin address, open-files limit, a token of two
    tenants) behind a failed start or run, looking through Trio's exception groups; None for
    anything else.

    SQLite failing on the file itself (``sqlite3.DatabaseError`` from a write: disk full, a
    corrupt page, an I/O error) counts as a database error of ``database``."""
    # The cause before its consequences: a failed file closes the store, and whoever wrote
    # next met StoreClosedError.
    for kind in (DatabaseFailedError, NotADatabaseError, SchemaTooNewError):
        if (found := find_exception(exc, kind)) is not None:
            return found
    # A shard that cannot hold its fencing lock at start, or does not fit the registry.
    for fencing in (ShardHeld, FenceUnavailable, RegistryError):
        if (held := find_exception(exc, fencing)) is not None:
            return held
    if (failed := find_exception(exc, sqlite3.DatabaseError)) is not None:
        return DatabaseFailedError(database, "writing", failed)
    return (
        find_exception(exc, StorageError)
        or find_exception(exc, ListenError)
        or find_exception(exc, OpenFilesLimitError)
        or find_exception(exc, TokenInUse)
        or find_exception(exc, HandlerNotAllowed)
        or find_exception(exc, OwnershipError)
    )
