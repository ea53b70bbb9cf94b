"""The fleet's registry in Postgres: every tenant bot (its token sealed), and the topology.

Tables (schema version :data:`SCHEMA_VERSION`, created by the first shard that starts; a
transaction-scoped advisory lock makes concurrent first starts wait for each other)::

    botvisor_registry_schema  one row: the schema version
    botvisor_topology         one row: epoch, shard_count, updated_at
    botvisor_bots             one row per bot: user_id, token_sealed, token_key_id,
                              token_digest (UNIQUE), handler, settings, source,
                              suspended_reason, created_at, updated_at, version,
                              removed_at (a removed bot's row stays as a tombstone, its
                              token columns cleared, so a shard's cache that still holds
                              the bot drops it instead of writing it back)

A token is never stored in plaintext: ``token_sealed`` is AES-256-GCM bound to the row's
user_id (supervisor/sealing.py) and ``token_digest`` the HMAC of the token's bot id,
whose unique index refuses one bot under two user_ids across every shard. The resize stage
adds its handoff table (``botvisor_handoff``: undone inbox rows a bot's old owner hands its
new owner) as schema version 2, in :data:`_MIGRATIONS`.

Every call runs psycopg in a worker thread (psycopg does not run on Trio), one at a time on
the registry's own connection (a CapacityLimiter of 1: a call abandoned on its timeout
still holds it until its thread returns, so no two threads share the connection), and is
bounded by ``cluster.registry_timeout``, connecting included; the server bounds each
statement too (``statement_timeout``). A failed call drops the connection; the next call
connects again.

Exceptions::

    RegistryError
    ├── TopologyMismatch     --shard's count differs from the registry's (at start)
    └── (actors.RegistryUnavailable, a FleetError: Postgres did not answer a call)
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from actors import MAX_SHARDS, BotExists, RegistryUnavailable, Shard, TokenInUse
from storage import BotRecord
from supervisor.cluster import ClusterConfig, redact_url
from supervisor.fencing import FENCE_KEY
from supervisor.sealing import SealError, TokenSealer

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "SCHEMA_VERSION",
    "Registry",
    "RegistryError",
    "Topology",
    "TopologyMismatch",
]

log = logging.getLogger("botvisor.registry")

T = TypeVar("T")

SCHEMA_VERSION = 1
# The advisory lock (FENCE_KEY, this) serialises schema creation and the first topology;
# shard indexes are >= 0, so it meets no shard's fencing lock.
_SCHEMA_LOCK = -1

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS botvisor_topology (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL,
    shard_count integer NOT NULL CHECK (shard_count >= 1),
    updated_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS botvisor_bots (
    user_id bigint PRIMARY KEY,
    token_sealed text,
    token_key_id text,
    token_digest text UNIQUE,
    handler text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    source text NOT NULL CHECK (source IN ('config', 'api')),
    suspended_reason text,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    removed_at double precision
);
"""
# version -> the statements that bring the schema from version - 1 to it. The resize stage
# adds 2: CREATE TABLE botvisor_handoff (epoch, user_id, update_id, update jsonb, ...).
_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}

_COLUMNS = (
    "user_id, token_sealed, handler, settings, source, suspended_reason, created_at, updated_at"
)


class RegistryError(Exception):
    """The registry cannot be used as it is; the message says what to do."""


class TopologyMismatch(RegistryError):
    def __init__(self, shard: Shard, registered: int) -> None:
        super().__init__(
            f"shard {shard} does not fit the registry: --shard says {shard.count} shards, the "
            f"registry's topology says {registered}; start every shard with the registry's "
            f"count (--shard {shard.index}/{registered}), or resize the fleet"
        )


@dataclass(frozen=True)
class Topology:
    """The fleet's shape as the registry records it."""

    epoch: int
    shard_count: int
    updated_at: float


class Registry:
    """The registry of one shard: its own Postgres connection, every call bounded."""

    def __init__(self, config: ClusterConfig, *, wall_clock: Callable[[], float]) -> None:
        assert config.database_url is not None, "the loader puts the URL in [cluster]"
        self._config = config
        self._url = config.database_url
        self._wall_clock = wall_clock
        self._limiter = trio.CapacityLimiter(1)
        self._connection: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"Registry({redact_url(self._url)!r})"

    # --- the connection ------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        if self._connection is None or self._connection.closed:
            timeout_ms = int(self._config.registry_timeout * 1000)
            self._connection = psycopg.connect(
                self._url,
                connect_timeout=max(1, int(self._config.registry_timeout)),
                application_name="botvisor registry",
                options=f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
            )
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Already failing; the next call connects again.
            with contextlib.suppress(Exception):
                connection.close()

    async def _call(self, what: str, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work`` in a transaction on the connection, in a worker thread, bounded;
        RegistryUnavailable (naming ``what``) if Postgres fails or does not answer in time.
        Errors of the request itself (TokenInUse...) pass through."""
        import psycopg

        def run() -> T:
            try:
                connection = self._connect()
                with connection.transaction():
                    return work(connection)
            except psycopg.Error:
                self._drop()
                raise

        timeout = self._config.registry_timeout
        try:
            with trio.fail_after(timeout):
                return await trio.to_thread.run_sync(
                    run, limiter=self._limiter, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            raise RegistryUnavailable(
                f"the registry (Postgres at {redact_url(self._url)}) did not answer within "
                f"{timeout:g} s while {what}; nothing was changed, try again later"
            ) from None
        except psycopg.Error as exc:
            detail = self._clean(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            raise RegistryUnavailable(
                f"the registry (Postgres at {redact_url(self._url)}) failed while {what} "
                f"({type(exc).__name__}: {detail}); nothing was changed, try again later"
            ) from None

    def _clean(self, text: str) -> str:
        from urllib.parse import urlsplit

        try:
            password = urlsplit(self._url).password
        except ValueError:
            password = None
        return text.replace(password, "***") if password else text

    async def close(self) -> None:
        """Close the connection (bounded: a hanging one is left to the process's exit)."""
        with trio.move_on_after(self._config.registry_timeout):
            await trio.to_thread.run_sync(self._drop, limiter=self._limiter, abandon_on_cancel=True)

    # --- schema and topology -------------------------------------------------------------

    async def prepare(self, shard: Shard) -> Topology:
        """Create the schema if it is not there (or migrate it), and check ``shard``
        against the topology: a new or empty registry records ``shard.count`` (epoch 1);
        a registry with bots and another count is TopologyMismatch."""
        now = self._wall_clock()

        def work(connection: psycopg.Connection[Any]) -> Topology:
            connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (FENCE_KEY, _SCHEMA_LOCK))
            connection.execute(
                "CREATE TABLE IF NOT EXISTS botvisor_registry_schema (version integer NOT NULL)"
            )
            row = connection.execute("SELECT max(version) FROM botvisor_registry_schema").fetchone()
            version = int(row[0]) if row is not None and row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"the registry's schema is version {version}, newer than this botvisor "
                    f"knows ({SCHEMA_VERSION}): upgrade botvisor on this shard"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                connection.execute(_MIGRATIONS[step])
                log.info("registry: schema version %d created", step)
            if version < SCHEMA_VERSION:
                connection.execute("DELETE FROM botvisor_registry_schema")
                connection.execute(
                    "INSERT INTO botvisor_registry_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )
            found = connection.execute(
                "SELECT epoch, shard_count, updated_at FROM botvisor_topology WHERE id = 1"
            ).fetchone()
            if found is not None and int(found[1]) == shard.count:
                return Topology(int(found[0]), int(found[1]), float(found[2]))
            empty = connection.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM botvisor_bots WHERE removed_at IS NULL)"
            ).fetchone()
            if found is not None and not (empty is not None and empty[0]):
                raise TopologyMismatch(shard, int(found[1]))
            connection.execute(
                "INSERT INTO botvisor_topology (id, epoch, shard_count, updated_at) "
                "VALUES (1, 1, %s, %s) ON CONFLICT (id) DO UPDATE SET epoch = 1, "
                "shard_count = EXCLUDED.shard_count, updated_at = EXCLUDED.updated_at",
                (shard.count, now),
            )
            log.info("registry: topology recorded: %d shards, epoch 1", shard.count)
            return Topology(1, shard.count, now)

        return await self._call("preparing the schema and topology", work)

    async def topology(self) -> Topology | None:
        """The recorded topology (None before any shard recorded one)."""

        def work(connection: psycopg.Connection[Any]) -> Topology | None:
            found = connection.execute(
                "SELECT epoch, shard_count, updated_at FROM botvisor_topology WHERE id = 1"
            ).fetchone()
            return (
                None if found is None else Topology(int(found[0]), int(found[1]), float(found[2]))
            )

        return await self._call("reading the topology", work)

    # --- bots ----------------------------------------------------------------------------

    async def bots(self, owned: Callable[[int], bool]) -> tuple[list[BotRecord], set[int]]:
        """The registered bots ``owned`` selects (tokens as sealed), and the user ids of
        the removed ones it selects (tombstones). The hash is not computable in SQL: every
        user_id is read, only the owned rows whole."""

        def work(connection: psycopg.Connection[Any]) -> tuple[list[BotRecord], set[int]]:
            ids = connection.execute("SELECT user_id, removed_at IS NOT NULL FROM botvisor_bots")
            mine: list[int] = []
            removed: set[int] = set()
            for user_id, gone in ids:
                if not owned(int(user_id)):
                    continue
                if gone:
                    removed.add(int(user_id))
                else:
                    mine.append(int(user_id))
            if not mine:
                return [], removed
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM botvisor_bots WHERE user_id = ANY(%s) ORDER BY user_id",
                (mine,),
            ).fetchall()
            return [_record(row) for row in rows], removed

        return await self._call("reading the bots", work)

    async def bot(self, user_id: int) -> BotRecord | None:
        def work(connection: psycopg.Connection[Any]) -> BotRecord | None:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM botvisor_bots WHERE user_id = %s AND removed_at IS NULL",
                (user_id,),
            ).fetchone()
            return None if row is None else _record(row)

        return await self._call(f"reading bot {user_id}", work)

    async def put(
        self, record: BotRecord, *, key_id: str, digest: str, shown: str, new: bool = False
    ) -> None:
        """Write a bot (``record.token`` sealed, ``digest`` its token's HMAC).

        TokenInUse if the token (``shown``: redacted) is registered for another user_id, on
        any shard; with ``new`` (an add) BotExists if the user_id is. A ``config`` record
        never overwrites a bot added through the API (the fleet refuses that start with
        OwnershipConflict). A suspension already recorded is kept (it changes only by
        :meth:`set_suspended`)."""

        def refuse_holder(connection: psycopg.Connection[Any]) -> None:
            holder = connection.execute(
                "SELECT user_id FROM botvisor_bots WHERE token_digest = %s AND user_id <> %s "
                "AND removed_at IS NULL",
                (digest, record.user_id),
            ).fetchone()
            if holder is not None:
                raise TokenInUse(
                    f"the token {shown} is already registered for user_id "
                    f"{holder[0]} (on its shard): one bot serves one tenant; remove that bot "
                    "first to move it",
                    owner=int(holder[0]),
                )

        def work(connection: psycopg.Connection[Any]) -> None:
            import psycopg.errors

            refuse_holder(connection)
            try:
                # A savepoint: the same bot registered by another shard at the same moment
                # (committed after the check above) fails the unique digest here.
                with connection.transaction():
                    write(connection)
            except psycopg.errors.UniqueViolation:
                refuse_holder(connection)
                raise

        def write(connection: psycopg.Connection[Any]) -> None:
            values = (
                record.user_id,
                record.token,
                key_id,
                digest,
                record.handler,
                json.dumps(record.settings),
                record.source,
                record.suspended_reason,
                record.created_at,
                record.updated_at,
            )
            insert = (
                "INSERT INTO botvisor_bots (user_id, token_sealed, token_key_id, token_digest, "
                "handler, settings, source, suspended_reason, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s) "
            )
            if new:
                inserted = connection.execute(
                    insert + "ON CONFLICT (user_id) DO UPDATE SET "
                    "token_sealed = EXCLUDED.token_sealed, token_key_id = EXCLUDED.token_key_id, "
                    "token_digest = EXCLUDED.token_digest, handler = EXCLUDED.handler, "
                    "settings = EXCLUDED.settings, source = EXCLUDED.source, "
                    "suspended_reason = EXCLUDED.suspended_reason, "
                    "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, "
                    "version = botvisor_bots.version + 1, removed_at = NULL "
                    "WHERE botvisor_bots.removed_at IS NOT NULL RETURNING user_id",
                    values,
                ).fetchone()
                if inserted is None:
                    raise BotExists(
                        f"user_id {record.user_id} is already registered (in the registry)"
                    )
                return
            connection.execute(
                insert
                + "ON CONFLICT (user_id) DO UPDATE SET token_sealed = EXCLUDED.token_sealed, "
                "token_key_id = EXCLUDED.token_key_id, token_digest = EXCLUDED.token_digest, "
                "handler = EXCLUDED.handler, settings = EXCLUDED.settings, "
                "source = EXCLUDED.source, updated_at = EXCLUDED.updated_at, "
                "suspended_reason = CASE WHEN botvisor_bots.removed_at IS NULL "
                "THEN botvisor_bots.suspended_reason ELSE EXCLUDED.suspended_reason END, "
                "version = botvisor_bots.version + 1, removed_at = NULL"
                + (
                    " WHERE botvisor_bots.source = 'config' OR botvisor_bots.removed_at IS NOT NULL"
                    if record.source == "config"
                    else ""
                ),
                values,
            )

        await self._call(f"writing bot {record.user_id}", work)

    async def remove(self, user_ids: Sequence[int]) -> None:
        """Unregister bots: each row becomes a tombstone without its token."""
        now = self._wall_clock()

        def work(connection: psycopg.Connection[Any]) -> None:
            connection.execute(
                "UPDATE botvisor_bots SET removed_at = %s, updated_at = %s, token_sealed = NULL, "
                "token_key_id = NULL, token_digest = NULL, version = version + 1 "
                "WHERE user_id = ANY(%s) AND removed_at IS NULL",
                (now, now, list(user_ids)),
            )

        await self._call(f"removing bot(s) {', '.join(map(str, user_ids))}", work)

    async def set_suspended(self, user_id: int, reason: str | None) -> None:
        now = self._wall_clock()

        def work(connection: psycopg.Connection[Any]) -> None:
            connection.execute(
                "UPDATE botvisor_bots SET suspended_reason = %s, updated_at = %s, "
                "version = version + 1 WHERE user_id = %s AND removed_at IS NULL",
                (reason, now, user_id),
            )

        await self._call(f"{'suspending' if reason else 'resuming'} bot {user_id}", work)

    async def rotate_key(
        self, old: TokenSealer, new: TokenSealer, digest: Callable[[TokenSealer, str], str]
    ) -> tuple[int, int]:
        """Seal every registered token again with ``new`` (opening it with ``old``) and
        recompute its digest (``digest(sealer, token)``), in one transaction; return how
        many rows were rotated and how many were on ``new`` already. RegistryError while any
        shard holds its fencing lock (a running shard would go on writing with the old key),
        or for a row that opens with neither key (named, never quoted)."""

        def work(connection: psycopg.Connection[Any]) -> tuple[int, int]:
            held = connection.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = %s::oid AND objsubid = 2 AND objid < %s::oid",
                (FENCE_KEY, MAX_SHARDS),
            ).fetchone()
            if held is not None and int(held[0]):
                raise RegistryError(
                    f"{held[0]} shard(s) of the fleet are running (they hold their locks): "
                    "stop every shard before rotating the registry key"
                )
            rows = connection.execute(
                "SELECT user_id, token_sealed, token_key_id FROM botvisor_bots "
                "WHERE removed_at IS NULL ORDER BY user_id FOR UPDATE"
            ).fetchall()
            rotated = already = 0
            for user_id, sealed, key_id in rows:
                if key_id == new.key_id:
                    already += 1
                    continue
                try:
                    token = old.open(int(user_id), str(sealed))
                except SealError as exc:
                    raise RegistryError(str(exc)) from None
                connection.execute(
                    "UPDATE botvisor_bots SET token_sealed = %s, token_key_id = %s, "
                    "token_digest = %s, version = version + 1 WHERE user_id = %s",
                    (new.seal(int(user_id), token), new.key_id, digest(new, token), user_id),
                )
                rotated += 1
            return rotated, already

        return await self._call("rotating the registry key", work)


def _record(row: Sequence[Any]) -> BotRecord:
    settings = row[3]
    return BotRecord(
        user_id=int(row[0]),
        token=str(row[1]),
        handler=str(row[2]),
        settings=dict(settings) if isinstance(settings, dict) else json.loads(settings or "{}"),
        source=str(row[4]),
        suspended_reason=None if row[5] is None else str(row[5]),
        created_at=float(row[6]),
        updated_at=float(row[7]),
    )
