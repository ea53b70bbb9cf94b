"""A shard's start against the registry (supervisor/shard_registry.py), on the throwaway
Postgres and a real SQLite cache: config bots are seeded by their owner, the cache made to
match the registry (tokens sealed, removed bots dropped, bots of an older cache imported,
suspensions kept from either side), a wrong key or another shard count is fatal, and a
registry that does not answer leaves the cache as it is."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
import trio

from actors import BotConfig, BotToken, Shard, TokenInUse, jump_hash
from storage import BotRecord, Store
from supervisor.cluster import ClusterConfig
from supervisor.daemon import setup_error
from supervisor.fleet import bot_record
from supervisor.registry import Registry, RegistryError, TopologyMismatch
from supervisor.sealing import TokenSealer
from supervisor.shard_registry import ShardRegistry
from tests.e2e.shards import free_port
from tests.harness import bot_token

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()
SHARD = Shard(0, 2)
MINE = [uid for uid in range(1001, 1041) if jump_hash(uid, 2) == 0][:4]
THEIRS = [uid for uid in range(1001, 1041) if jump_hash(uid, 2) == 1][:2]


def shard_registry(url: str, shard: Shard = SHARD, key: str = KEY) -> ShardRegistry:
    config = ClusterConfig(database_url=url, registry_key=key, registry_timeout=2)
    return ShardRegistry(
        Registry(config, wall_clock=lambda: 1_700_000_000.0),
        TokenSealer(key, variable="BOTVISOR_REGISTRY_KEY"),
        shard,
        bot_record=bot_record,
        wall_clock=lambda: 1_700_000_000.0,
    )


async def started(reg: ShardRegistry, store: Store, declared: list[BotConfig]) -> None:
    try:
        await reg.start(store, declared, prune=False)
    finally:
        await reg.close()


def bots(user_ids: list[int]) -> list[BotConfig]:
    return [BotConfig(user_id=uid, token=BotToken(bot_token(uid))) for uid in user_ids]


@pytest.fixture
async def store(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Store]:
    started: Store = await nursery.start(Store(tmp_path / "cache.db").run)
    yield started
    await started.stop()


async def test_config_bots_are_seeded_by_their_owner_and_cached_sealed(
    postgres_url: str, store: Store
) -> None:
    reg = shard_registry(postgres_url)
    await reg.start(store, bots(MINE + THEIRS), prune=False)
    assert reg.read_at_start
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute("SELECT user_id, source FROM botvisor_bots").fetchall()
    # Only this shard's: the other shard seeds its own.
    assert sorted(rows) == [(uid, "config") for uid in MINE]
    cached = {r.user_id: r for r in await store.list_bots()}
    assert sorted(cached) == MINE
    for uid, record in cached.items():
        assert record.token.startswith("v1.") and reg.open(record).token == bot_token(uid)
    await reg.close()


async def test_the_cache_follows_the_registry_and_imports_what_it_never_had(
    postgres_url: str, store: Store
) -> None:
    reg = shard_registry(postgres_url)
    await reg.start(store, bots(MINE[:2]), prune=False)
    # An API bot registered by this shard (written through), and one only in an older
    # cache (stage 2a: plaintext), and a removal and a suspension made elsewhere.
    api_uid, old_uid = MINE[2], MINE[3]
    added = bot_record(bots([api_uid])[0], "api", 1.0, None)
    await store.upsert_bot(await reg.add(added))
    await store.upsert_bot(bot_record(bots([old_uid])[0], "api", 1.0, None))
    await reg.remove(api_uid)
    await reg.set_suspended(MINE[0], "suspended by an admin")
    await store.set_suspended(MINE[1], "getUpdates failed permanently: Unauthorized")

    again = shard_registry(postgres_url)
    await again.start(store, bots(MINE[:2]), prune=False)
    cached = {r.user_id: r for r in await store.list_bots()}
    assert sorted(cached) == [MINE[0], MINE[1], old_uid]  # the removed one is gone
    assert cached[MINE[0]].suspended_reason == "suspended by an admin"
    assert cached[MINE[1]].suspended_reason == "getUpdates failed permanently: Unauthorized"
    records, removed = await again.registry.bots(SHARD.owns)
    by_id = {r.user_id: r for r in records}
    assert removed == {api_uid}
    # Imported, sealed; the shard's own suspension told to the registry.
    assert by_id[old_uid].source == "api" and again.open(by_id[old_uid]).token == bot_token(old_uid)
    assert by_id[MINE[1]].suspended_reason == "getUpdates failed permanently: Unauthorized"
    # A config bot the file no longer declares is unregistered from the registry too.
    third = shard_registry(postgres_url)
    await third.start(store, bots(MINE[:1]), prune=False)
    records, removed = await third.registry.bots(SHARD.owns)
    assert sorted(r.user_id for r in records) == [MINE[0], old_uid]
    for r in (reg, again, third):
        await r.close()


async def test_a_token_of_another_tenant_a_wrong_key_or_another_count_is_fatal(
    postgres_url: str, store: Store
) -> None:
    reg = shard_registry(postgres_url)
    await reg.start(store, bots(MINE[:1]), prune=False)
    # The file gives the token of MINE[0] to another user_id of this shard.
    stolen = BotConfig(user_id=MINE[1], token=BotToken(bot_token(MINE[0])))
    with pytest.raises(TokenInUse) as caught:
        await started(shard_registry(postgres_url), store, [stolen])
    assert str(caught.value).startswith(f"bots[0].token (user_id {MINE[1]}): the token ")
    assert f"already registered for user_id {MINE[0]}" in str(caught.value)
    assert bot_token(MINE[0]) not in str(caught.value)
    with pytest.raises(RegistryError) as wrong:
        await started(shard_registry(postgres_url, key=OTHER_KEY), store, [])
    assert f"bot {MINE[0]}" in str(wrong.value) and "$BOTVISOR_REGISTRY_KEY" in str(wrong.value)
    with pytest.raises(TopologyMismatch, match="--shard says 3 shards, the registry's"):
        await started(shard_registry(postgres_url, Shard(0, 3)), store, [])
    await reg.close()


async def test_a_registry_that_does_not_answer_leaves_the_cache_as_it_is(store: Store) -> None:
    record = bot_record(bots(MINE[:1])[0], "api", 1.0, None)
    await store.upsert_bot(record)
    reg = shard_registry(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    await reg.start(store, bots(MINE[1:2]), prune=False)
    assert not reg.read_at_start
    assert [r.user_id for r in await store.list_bots()] == MINE[:1]
    await reg.close()


def test_a_record_is_sealed_for_its_own_row() -> None:
    reg = shard_registry("postgresql://nobody@127.0.0.1:1/none")
    record = BotRecord(MINE[0], bot_token(MINE[0]), "echo", {}, "api", None, 1.0, 1.0)
    sealed = reg.seal(record)
    assert sealed.token != record.token and reg.open(sealed) == record
    with pytest.raises(RegistryError, match=f"bot {MINE[1]}"):
        reg.open(BotRecord(MINE[1], sealed.token, "echo", {}, "api", None, 1.0, 1.0))


async def test_a_regenerated_token_of_a_registered_bot_is_the_same_bot(
    postgres_url: str, store: Store
) -> None:
    reg = shard_registry(postgres_url)
    await reg.start(store, bots(MINE[:1]), prune=False)
    token = bot_token(MINE[0])
    regenerated = token.split(":")[0] + ":AAnother-secret-part-after-a-revoke_0123"
    assert reg.bot_digest(token) == reg.bot_digest(regenerated)
    record = BotRecord(MINE[1], regenerated, "echo", {}, "api", None, 1.0, 1.0)
    with pytest.raises(TokenInUse, match=f"already registered for user_id {MINE[0]}"):
        await reg.add(record)
    await reg.close()


def test_a_start_the_registry_refuses_is_an_operators_error_of_the_cli() -> None:
    # Raised inside the daemon's nursery: the CLI prints it as one line and exits 1.
    mismatch = TopologyMismatch(Shard(0, 3), 2)
    assert setup_error(ExceptionGroup("daemon", [mismatch])) is mismatch
    wrong_key = RegistryError("bot 1001: its token was sealed with registry key 1a2b3c4d")
    assert setup_error(ExceptionGroup("daemon", [wrong_key])) is wrong_key
