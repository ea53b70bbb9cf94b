"""A shard's view of the registry: what it reads at start, what it writes through, and its
cache in its own SQLite file.

At start (after the fencing lock, before the fleet is loaded) the shard checks the topology,
seeds the config file's bots it owns into the registry (source ``config``), reads the bots it
owns and makes its SQLite ``bots`` table (the **cache**) match them; the fleet then loads from
the cache as a single process loads from its file. If Postgres does not answer the registry's
reads in time, the shard starts from the cache as it is (logged). While it runs, every change
an operator asks of a bot (add, remove, suspend, resume, mode) is written to the registry
first and then to the cache; a registry that does not answer makes the request fail with
RegistryUnavailable (503) and changes nothing. Suspensions the shard decides itself (a
revoked token, the restart intensity) are stored in the cache at once and written to the
registry by the fleet's tick, retried until it answers.

The cache holds the tokens sealed exactly as the registry does (the same ciphertext, bound to
the same user_id): a copy of a shard's volume reveals no token without the registry key,
which lives only in the environment.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

import trio

from actors import BotConfig, BotToken, RegistryUnavailable, Shard, TokenInUse
from storage import BotRecord, Store
from supervisor.registry import Registry, RegistryError, Topology
from supervisor.sealing import SealError, TokenSealer

__all__ = ["ShardRegistry", "bot_digest"]

log = logging.getLogger("botvisor.registry")


def bot_digest(sealer: TokenSealer, token: str) -> str:
    """The registry's duplicate key of a token: the keyed hash of its bot id, so a
    regenerated token of a registered bot (BotFather's /revoke) is the same bot, as the
    fleet's own check says; keyed, so the column names no bot to a reader without the
    registry key."""
    return sealer.digest(f"bot {BotToken(token).bot_id}")


class ShardRegistry:
    """The registry as one shard uses it: ``registry`` (Postgres), ``sealer`` (the key)."""

    def __init__(
        self,
        registry: Registry,
        sealer: TokenSealer,
        shard: Shard,
        *,
        bot_record: Callable[[BotConfig, str, float, str | None], BotRecord],
        wall_clock: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.sealer = sealer
        self.shard = shard
        self._bot_record = bot_record
        self._wall_clock = wall_clock
        # Whether the start read the registry (False: the shard started from its cache).
        self.read_at_start = False
        self.topology: Topology | None = None

    # --- tokens in the cache -------------------------------------------------------------

    def seal(self, record: BotRecord) -> BotRecord:
        """``record`` (its token in plaintext) as the registry and the cache store it."""
        return replace(record, token=self.sealer.seal(record.user_id, record.token))

    def open(self, record: BotRecord) -> BotRecord:
        """A cached or registered ``record`` with its token opened. A token the cache held
        in plaintext (written before the registry existed) passes as it is. RegistryError
        naming the bot and the key's variable if it does not open."""
        if TokenSealer.key_id_of(record.token) is None:
            return record
        try:
            return replace(record, token=self.sealer.open(record.user_id, record.token))
        except SealError as exc:
            raise RegistryError(str(exc)) from None

    def bot_digest(self, token: str) -> str:
        return bot_digest(self.sealer, token)

    async def _put(self, record: BotRecord, *, new: bool = False) -> BotRecord:
        """Write a plaintext ``record`` to the registry, sealed; return the sealed one."""
        sealed = self.seal(record)
        await self.registry.put(
            sealed,
            key_id=self.sealer.key_id,
            digest=self.bot_digest(record.token),
            shown=BotToken(record.token).redacted,
            new=new,
        )
        return sealed

    # --- start ---------------------------------------------------------------------------

    async def start(self, store: Store, declared: Iterable[BotConfig], *, prune: bool) -> None:
        """Bring the cache up to date with the registry (see the module's docstring).
        TopologyMismatch, TokenInUse and a token that does not open are fatal; Postgres
        not answering is not (the cache is used as it is)."""
        declared = list(declared)
        try:
            self.topology = await self.registry.prepare(self.shard)
            registered = await self._seed(declared, prune=prune)
        except RegistryUnavailable as exc:
            kept = [r for r in await store.list_bots() if self.shard.owns(r.user_id)]
            log.warning(
                "shard %s: %s; starting from the cached registry (%d bots in this shard's "
                "SQLite file): changes to bots answer 503 until it answers",
                self.shard,
                exc,
                len(kept),
            )
            return
        records, removed = registered
        for record in records:
            self.open(record)  # a wrong key is named now, before anything starts
        cached = {r.user_id: r for r in await store.list_bots() if self.shard.owns(r.user_id)}
        wanted = {record.user_id: record for record in records}
        # Suspended in either copy stays suspended: an operator's suspension was written to
        # the registry first; the shard's own (a revoked token) to the cache first.
        suspended = {
            uid: record.suspended_reason
            or (cached[uid].suspended_reason if uid in cached else None)
            for uid, record in wanted.items()
        }
        imported = []
        for uid, record in cached.items():
            if uid in wanted or uid in removed or record.source == "config":
                continue
            # In the cache and never in the registry: a bot added before the registry
            # existed (stage 2a's shards). Registered now.
            try:
                await self._put(self.open(record))
            except RegistryUnavailable as exc:
                log.warning(
                    "shard %s: bot %s not imported into the registry: %s", self.shard, uid, exc
                )
                continue
            imported.append(uid)
        gone = sorted(uid for uid in cached if uid in removed)
        for uid in gone:
            await store.remove_bot(uid)
        await store.upsert_bots(list(wanted.values()))
        for uid, reason in suspended.items():
            if cached.get(uid) is None or cached[uid].suspended_reason != reason:
                await store.set_suspended(uid, reason)
            if reason != wanted[uid].suspended_reason:
                # The shard's own suspension, not yet in the registry (best effort: a shard
                # that cannot write it keeps the bot suspended from its cache).
                with contextlib.suppress(RegistryUnavailable):
                    await self.registry.set_suspended(uid, reason)
        self.read_at_start = True
        log.info(
            "shard %s: registry read (epoch %d, %d shards): %d bots are this shard's%s%s",
            self.shard,
            self.topology.epoch,
            self.topology.shard_count,
            len(wanted),
            f", {len(imported)} imported from the cache" if imported else "",
            f", {len(gone)} removed since the cache was written" if gone else "",
        )

    async def _seed(
        self, declared: list[BotConfig], *, prune: bool
    ) -> tuple[list[BotRecord], set[int]]:
        """Register the file's bots this shard owns (source ``config``), unregister the
        config bots the file no longer declares, and return what the registry then holds
        for this shard."""
        records, removed = await self.registry.bots(self.shard.owns)
        present = {record.user_id: record for record in records}
        now = self._wall_clock()
        changed = False
        for index, bot in enumerate(declared):
            if not self.shard.owns(bot.user_id):
                continue
            previous = present.get(bot.user_id)
            if previous is not None and previous.source != "config":
                continue  # an API bot: the fleet refuses the start (OwnershipConflict)
            suspended = previous.suspended_reason if previous is not None else None
            wanted_record = self._bot_record(bot, "config", now, suspended)
            if previous is not None and _same_bot(self.open(previous), wanted_record):
                continue  # registered as the file says: nothing to write
            changed = True
            try:
                await self._put(wanted_record)
            except TokenInUse as exc:
                raise TokenInUse(
                    f"bots[{index}].token (user_id {bot.user_id}): {exc}", owner=exc.owner
                ) from None
        wanted = {bot.user_id for bot in declared}
        vanished = [
            uid
            for uid, record in present.items()
            if record.source == "config" and uid not in wanted
        ]
        if vanished and (declared or prune):
            await self.registry.remove(vanished)
            changed = True
        if not changed:
            return records, removed
        return await self.registry.bots(self.shard.owns)

    # --- writes through ------------------------------------------------------------------

    async def add(self, record: BotRecord) -> BotRecord:
        """Register a new bot (plaintext ``record``); return it sealed, for the cache.
        BotExists, TokenInUse (any shard's), RegistryUnavailable."""
        return await self._put(record, new=True)

    async def update(self, record: BotRecord) -> BotRecord:
        return await self._put(record)

    async def remove(self, user_id: int) -> None:
        await self.registry.remove([user_id])

    async def set_suspended(self, user_id: int, reason: str | None) -> None:
        await self.registry.set_suspended(user_id, reason)

    async def still_owns(self, user_id: int) -> bool:
        """Whether this shard still owns bot ``user_id`` by the registry (after a 409): it is
        registered and the topology's count gives it to this shard's index. If the registry
        does not answer, the cache's view holds (it does)."""
        try:
            topology = await self.registry.topology()
            record = await self.registry.bot(user_id)
        except RegistryUnavailable as exc:
            log.warning("bot %s: %s; going by the cache (this shard owns it)", user_id, exc)
            return True
        if record is None:
            return False
        count = self.shard.count if topology is None else topology.shard_count
        # A resized fleet (a later stage) may have moved the bot, or removed this index.
        return self.shard.index < count and Shard(self.shard.index, count).owns(user_id)

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            await self.registry.close()


def _same_bot(registered: BotRecord, wanted: BotRecord) -> bool:
    """Whether a registered config bot (token opened) is what the file declares now."""
    return (
        registered.token == wanted.token
        and registered.handler == wanted.handler
        and registered.settings == wanted.settings
    )
