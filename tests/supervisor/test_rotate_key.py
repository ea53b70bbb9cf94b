"""``botvisor registry rotate-key`` on the throwaway Postgres: every registered token is
sealed again with the new key (and its digest recomputed), a second run has nothing to do,
and it refuses while a shard runs or when the old key is not the registry's."""

from __future__ import annotations

import base64
from pathlib import Path

import psycopg
import pytest
import trio

from actors import BotConfig, BotToken, Shard, TokenInUse
from storage import BotRecord, Store
from supervisor import cli
from supervisor.cluster import ClusterConfig
from supervisor.fencing import FENCE_KEY
from supervisor.fleet import bot_record
from supervisor.registry import Registry
from supervisor.sealing import TokenSealer
from supervisor.shard_registry import ShardRegistry
from tests.harness import bot_token

OLD = base64.b64encode(bytes(range(32))).decode()
NEW = base64.b64encode(bytes(range(100, 132))).decode()
STRAY = base64.b64encode(bytes(range(200, 232))).decode()
USER_IDS = [1001, 1002, 1003]


def shard_registry(url: str, key: str) -> ShardRegistry:
    config = ClusterConfig(database_url=url, registry_key=key)
    return ShardRegistry(
        Registry(config, wall_clock=lambda: 1.0),
        TokenSealer(key),
        Shard(0, 1),
        bot_record=bot_record,
        wall_clock=lambda: 1.0,
    )


async def register(url: str) -> None:
    reg = shard_registry(url, OLD)
    await reg.registry.prepare(Shard(0, 1))
    for uid in USER_IDS:
        await reg.add(
            bot_record(BotConfig(user_id=uid, token=BotToken(bot_token(uid))), "api", 1.0)
        )
    await reg.close()


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str) -> Path:
    monkeypatch.setenv("BOTVISOR_DATABASE_URL", postgres_url)
    monkeypatch.setenv("BOTVISOR_REGISTRY_KEY", NEW)
    monkeypatch.setenv("OLD_KEY", OLD)
    monkeypatch.setenv("STRAY_KEY", STRAY)
    path = tmp_path / "botvisor.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / "b.db"}"\n[cluster]\n')
    trio.run(register, postgres_url)
    return path


def rotate(path: Path, old_env: str) -> int:
    return cli.main(["registry", "rotate-key", "--config", str(path), "--old-key-env", old_env])


def test_every_token_is_sealed_again_with_the_new_key(
    config_file: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rotate(config_file, "OLD_KEY") == cli.EXIT_OK
    old, new = TokenSealer(OLD), TokenSealer(NEW)
    assert capsys.readouterr().out.startswith(
        f"registry: 3 token(s) sealed again from key {old.key_id} to key {new.key_id} "
        "($BOTVISOR_REGISTRY_KEY); 0 were on it already."
    )
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(
            "SELECT user_id, token_sealed, token_key_id FROM botvisor_bots ORDER BY user_id"
        ).fetchall()
    assert [(uid, kid) for uid, _, kid in rows] == [(uid, new.key_id) for uid in USER_IDS]
    assert [new.open(uid, sealed) for uid, sealed, _ in rows] == [bot_token(u) for u in USER_IDS]
    # The digests follow the new key: the duplicate check still holds.

    async def duplicate() -> None:
        reg = shard_registry(postgres_url, NEW)
        record = BotRecord(2001, bot_token(1001), "echo", {}, "api", None, 1.0, 1.0)
        try:
            with pytest.raises(TokenInUse, match="already registered for user_id 1001"):
                await reg.add(record)
        finally:
            await reg.close()

    trio.run(duplicate)
    assert rotate(config_file, "OLD_KEY") == cli.EXIT_OK
    assert "0 token(s) sealed again" in capsys.readouterr().out


def test_it_refuses_while_a_shard_runs_or_with_a_key_that_is_not_the_registrys(
    config_file: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as shard:
        shard.execute("SELECT pg_advisory_lock(%s, %s)", (FENCE_KEY, 0))
        assert rotate(config_file, "OLD_KEY") == cli.EXIT_CONFIG
    assert "1 shard(s) of the fleet are running" in capsys.readouterr().err
    assert rotate(config_file, "STRAY_KEY") == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "bot 1001: its token was sealed with registry key" in err and "$STRAY_KEY" in err
    assert rotate(config_file, "UNSET_KEY") == cli.EXIT_CONFIG
    assert "$UNSET_KEY is not set" in capsys.readouterr().err
    # Nothing changed: the old key still opens every token.
    with psycopg.connect(postgres_url) as connection:
        kids = {row[0] for row in connection.execute("SELECT token_key_id FROM botvisor_bots")}
    assert kids == {TokenSealer(OLD).key_id}


def test_a_shard_started_with_the_new_key_rewrites_its_cache(
    config_file: Path, postgres_url: str, tmp_path: Path
) -> None:
    async def start(key: str) -> list[BotRecord]:
        async with trio.open_nursery() as nursery:
            store: Store = await nursery.start(Store(tmp_path / "cache.db").run)
            reg = shard_registry(postgres_url, key)
            try:
                await reg.start(store, [], prune=False)
                cached = await store.list_bots()
            finally:
                await reg.close()
                await store.stop()
        return cached

    before = trio.run(start, OLD)
    assert {TokenSealer.key_id_of(r.token) for r in before} == {TokenSealer(OLD).key_id}
    assert rotate(config_file, "OLD_KEY") == cli.EXIT_OK
    after = trio.run(start, NEW)
    new = TokenSealer(NEW)
    assert [new.open(r.user_id, r.token) for r in after] == [bot_token(u) for u in USER_IDS]
