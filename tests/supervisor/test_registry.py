"""The registry in Postgres (supervisor/registry.py) on the throwaway server: the schema made
once by concurrent first starts, the topology check, tokens sealed (no plaintext in the
table), the cross-shard duplicate check by digest, and every call bounded."""

from __future__ import annotations

import base64

import psycopg
import pytest
import trio

from actors import BotExists, RegistryUnavailable, Shard, TokenInUse
from storage import BotRecord
from supervisor.cluster import ClusterConfig
from supervisor.registry import SCHEMA_VERSION, Registry, TopologyMismatch
from supervisor.sealing import TokenSealer
from tests.e2e.shards import free_port

KEY = base64.b64encode(bytes(range(32))).decode()
TOKEN = "123456:AAH-secret-part-of-the-token_xyz"


def registry(url: str, timeout: float = 5.0) -> Registry:
    config = ClusterConfig(database_url=url, registry_key=KEY, registry_timeout=timeout)
    return Registry(config, wall_clock=lambda: 1_700_000_000.0)


def sealed_record(sealer: TokenSealer, user_id: int, token: str, source: str = "api") -> BotRecord:
    return BotRecord(
        user_id=user_id,
        token=sealer.seal(user_id, token),
        handler="echo",
        settings={"mode": "polling"},
        source=source,
        suspended_reason=None,
        created_at=1.0,
        updated_at=1.0,
    )


async def put(
    reg: Registry, sealer: TokenSealer, record: BotRecord, token: str, **kw: bool
) -> None:
    await reg.put(record, key_id=sealer.key_id, digest=sealer.digest(token), shown="123456:…", **kw)


async def test_concurrent_first_starts_make_one_schema_and_one_topology(postgres_url: str) -> None:
    registries = [registry(postgres_url) for _ in range(4)]
    results = []

    async def prepare(reg: Registry, index: int) -> None:
        results.append(await reg.prepare(Shard(index % 2, 2)))

    async with trio.open_nursery() as nursery:
        for index, reg in enumerate(registries):
            nursery.start_soon(prepare, reg, index)
    assert {(t.epoch, t.shard_count) for t in results} == {(1, 2)}
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute("SELECT version FROM botvisor_registry_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        assert connection.execute("SELECT count(*) FROM botvisor_topology").fetchone() == (1,)
    for reg in registries:
        await reg.close()


async def test_another_shard_count_is_refused_once_bots_are_registered(postgres_url: str) -> None:
    reg = registry(postgres_url)
    sealer = TokenSealer(KEY)
    await reg.prepare(Shard(0, 2))
    # Empty: a new count is recorded (the fleet was never started with bots).
    assert (await reg.prepare(Shard(0, 3))).shard_count == 3
    await put(reg, sealer, sealed_record(sealer, 1001, TOKEN), TOKEN, new=True)
    with pytest.raises(TopologyMismatch) as caught:
        await reg.prepare(Shard(1, 2))
    assert str(caught.value) == (
        "shard 1/2 does not fit the registry: --shard says 2 shards, the registry's topology "
        "says 3; start every shard with the registry's count (--shard 1/3), or resize the fleet"
    )
    assert (await reg.topology()) is not None
    await reg.close()


async def test_tokens_are_sealed_in_the_table_and_one_token_serves_one_tenant(
    postgres_url: str,
) -> None:
    reg = registry(postgres_url)
    sealer = TokenSealer(KEY)
    await reg.prepare(Shard(0, 1))
    await put(reg, sealer, sealed_record(sealer, 1001, TOKEN), TOKEN, new=True)
    with psycopg.connect(postgres_url) as connection:
        dump = str(connection.execute("SELECT * FROM botvisor_bots").fetchall())
    assert TOKEN not in dump and "secret-part" not in dump
    (stored,), removed = await reg.bots(lambda uid: True)
    assert removed == set()
    assert sealer.open(1001, stored.token) == TOKEN
    # The same token under another user_id (any shard's): refused by digest.
    with pytest.raises(TokenInUse) as caught:
        await put(reg, sealer, sealed_record(sealer, 2002, TOKEN), TOKEN, new=True)
    assert caught.value.owner == 1001 and TOKEN not in str(caught.value)
    with pytest.raises(BotExists):
        await put(reg, sealer, sealed_record(sealer, 1001, TOKEN), TOKEN, new=True)
    # A config record does not take over an API bot's row.
    other = "654321:AAH-another-token-of-a-config-bot"
    await put(reg, sealer, sealed_record(sealer, 1001, other, "config"), other)
    (kept,), _ = await reg.bots(lambda uid: True)
    assert kept.source == "api" and sealer.open(1001, kept.token) == TOKEN
    # Suspension and removal.
    await reg.set_suspended(1001, "suspended by an admin")
    assert (await reg.bot(1001)) is not None
    assert (await reg.bots(lambda uid: True))[0][0].suspended_reason == "suspended by an admin"
    assert await reg.bots(lambda uid: uid != 1001) == ([], set())
    # Removed: a tombstone without its token; the token may serve another tenant now, and
    # the user_id may be added again.
    await reg.remove([1001])
    assert await reg.bot(1001) is None
    assert await reg.bots(lambda uid: True) == ([], {1001})
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute(
            "SELECT token_sealed, token_digest FROM botvisor_bots WHERE user_id = 1001"
        ).fetchone() == (None, None)
    await put(reg, sealer, sealed_record(sealer, 2002, TOKEN), TOKEN, new=True)
    await put(reg, sealer, sealed_record(sealer, 1001, other), other, new=True)
    live, removed = await reg.bots(lambda uid: True)
    assert [r.user_id for r in live] == [1001, 2002] and removed == set()
    assert live[0].suspended_reason is None
    await reg.close()


async def test_postgres_away_is_registry_unavailable_within_the_timeout() -> None:
    reg = registry(f"postgresql://postgres:pw-xyz@127.0.0.1:{free_port()}/none", timeout=2)
    with pytest.raises(RegistryUnavailable) as caught:
        await reg.bots(lambda uid: True)
    message = str(caught.value)
    assert "nothing was changed" in message and "pw-xyz" not in message
    await reg.close()


async def test_the_same_bot_registered_by_two_shards_at_once_is_token_in_use(
    postgres_url: str,
) -> None:
    reg = registry(postgres_url)
    sealer = TokenSealer(KEY)
    await reg.prepare(Shard(0, 2))
    digest = sealer.digest("bot 123456")
    # Another shard's add, not committed yet: this one's check does not see it, and its
    # insert waits on the unique digest until the other commits.
    with psycopg.connect(postgres_url) as other:
        other.execute(
            "INSERT INTO botvisor_bots (user_id, token_sealed, token_key_id, token_digest, "
            "handler, source, created_at, updated_at) VALUES (3003, 'x', 'k', %s, 'echo', "
            "'api', 1, 1)",
            (digest,),
        )
        outcome: list[Exception] = []

        async def add() -> None:
            try:
                await reg.put(
                    sealed_record(sealer, 3004, TOKEN),
                    key_id=sealer.key_id,
                    digest=digest,
                    shown="123456:…",
                    new=True,
                )
            except Exception as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(add)
            with psycopg.connect(postgres_url, autocommit=True) as watcher, trio.fail_after(10):
                while not watcher.execute(  # noqa: ASYNC110
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name = 'botvisor registry'"
                ).fetchone()[0]:  # type: ignore[index]
                    await trio.sleep(0.01)
            other.commit()
    (error,) = outcome
    assert isinstance(error, TokenInUse) and error.owner == 3003, repr(error)
    await reg.close()
