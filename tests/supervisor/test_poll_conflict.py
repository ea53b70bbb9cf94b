"""A shard's answer to getUpdates 409 "terminated by other getUpdates request" (issue 16):
the bot stops polling at once (no quick retry, which would end the other poller's poll),
the registry is asked whether this shard still owns it, and it polls again after the
hold-off, or never here if it is another's now; registry writes of an operator's changes go
first and a registry that does not answer is a 503 that changes nothing. Without a
registry the same 409 is transient and retried, as before. On a MockClock, with a
registry double in place of Postgres (tests/supervisor/test_registry.py and
tests/e2e/test_registry_e2e.py use the real one)."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import RegistryUnavailable, Shard
from actors.simulator import SimulatedBotApi
from actors.simulator.protocol import CONFLICT
from storage import BotRecord, Store
from supervisor.cluster import ClusterConfig
from supervisor.fleet import bot_record
from supervisor.registry import Registry
from supervisor.sealing import TokenSealer
from supervisor.shard_registry import ShardRegistry
from tests.harness import admin_client, running_fleet

KEY = base64.b64encode(bytes(range(32))).decode()
HOLDOFF = 30.0


class RegistryDouble(ShardRegistry):
    """The registry's answers without Postgres: ``owner`` says whether this shard still owns
    a bot after a 409, ``away`` makes every write fail as an unreachable Postgres does."""

    def __init__(self, shard: Shard) -> None:
        config = ClusterConfig(database_url="postgresql://nobody@127.0.0.1:1/none")
        super().__init__(
            Registry(config, wall_clock=lambda: 0.0),
            TokenSealer(KEY),
            shard,
            bot_record=bot_record,
            wall_clock=lambda: 0.0,
        )
        self.owner = True
        self.away = False
        self.asked: list[int] = []
        self.writes: list[tuple[str, int]] = []

    async def start(self, store: Store, declared: object, *, prune: bool) -> None:
        return None  # the cache as it is

    def _write(self, what: str, user_id: int) -> None:
        if self.away:
            raise RegistryUnavailable(
                f"the registry did not answer while {what} bot {user_id}; nothing was changed"
            )
        self.writes.append((what, user_id))

    async def add(self, record: BotRecord) -> BotRecord:
        self._write("adding", record.user_id)
        return self.seal(record)

    async def update(self, record: BotRecord) -> BotRecord:
        self._write("updating", record.user_id)
        return self.seal(record)

    async def remove(self, user_id: int) -> None:
        self._write("removing", user_id)

    async def set_suspended(self, user_id: int, reason: str | None) -> None:
        self._write("suspending" if reason else "resuming", user_id)

    async def still_owns(self, user_id: int) -> bool:
        self.asked.append(user_id)
        return self.owner


def polls(api: SimulatedBotApi, token: str) -> list[float]:
    bot_id = api.bot(token).bot_id
    return [c.time for c in api.calls if c.method == "getUpdates" and c.bot_id == bot_id]


async def test_a_409_stops_the_poll_at_once_and_the_owner_polls_again_after_the_holdoff(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = SimulatedBotApi(rng=random.Random(1), record=True)
    registry = RegistryDouble(Shard(0, 1))
    async with running_fleet(
        tmp_path / "s.db", [1001, 1002], api=api, shard=Shard(0, 1), registry=registry
    ) as fleet:
        token = fleet.tokens[1001]
        await trio.sleep(1)
        actor = fleet.handle.fleet.get(1001)
        api.refuse(token, "getUpdates", 1, error_code=409, description=CONFLICT)
        # End the long poll in flight so the next getUpdates meets the 409.
        api.send_user_message(token, 5, "hi")
        await trio.sleep(1)
        conflict_at = polls(api, token)[-1]
        assert registry.asked == [1001]
        assert actor.state.value == "idle"
        # No quick retry: nothing polls the bot until the hold-off (30 s to 45 s) is over.
        await trio.sleep(HOLDOFF - 2)
        assert polls(api, token)[-1] == conflict_at
        assert not api.bot(token).polling
        await trio.sleep(HOLDOFF / 2 + 2)
        assert api.bot(token).polling
        # A message answers the poll waiting now (a call is recorded, with the time it
        # arrived, once answered).
        api.send_user_message(token, 5, "again")
        await trio.sleep(1)
        again = [t for t in polls(api, token) if t > conflict_at]
        assert again and conflict_at + HOLDOFF <= again[0] <= conflict_at + 1.5 * HOLDOFF + 1
        assert actor.state.value == "running"
        # The other bot never stopped.
        assert api.bot(fleet.tokens[1002]).polling
        assert fleet.handle.fleet.get(1002).state.value == "running"
    logged = caplog.text
    assert "bot 1001: getUpdates answered 409, another process polls this bot" in logged
    assert "polling again in" in logged and token not in logged


async def test_a_409_of_a_bot_the_registry_gives_to_another_shard_stops_it_for_good(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(1), record=True)
    registry = RegistryDouble(Shard(0, 1))
    registry.owner = False
    async with running_fleet(
        tmp_path / "s.db", [1001], api=api, shard=Shard(0, 1), registry=registry
    ) as fleet:
        token = fleet.tokens[1001]
        await trio.sleep(1)
        api.refuse(token, "getUpdates", 1, error_code=409, description=CONFLICT)
        api.send_user_message(token, 5, "hi")
        await trio.sleep(1)
        stopped_at = polls(api, token)[-1]
        await trio.sleep(10 * HOLDOFF)
        assert polls(api, token)[-1] == stopped_at and not api.bot(token).polling
        assert fleet.handle.fleet.get(1001).state.value == "idle"


async def test_without_a_registry_a_409_is_retried_as_before(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(1), record=True)
    async with running_fleet(tmp_path / "s.db", [1001], api=api) as fleet:
        token = fleet.tokens[1001]
        await trio.sleep(1)
        api.refuse(token, "getUpdates", 1, error_code=409, description=CONFLICT)
        api.send_user_message(token, 5, "hi")
        await trio.sleep(5)
        # Polling again within seconds (the quick retry), not after a hold-off.
        assert api.bot(token).polling
        assert fleet.handle.fleet.get(1001).state.value == "running"


async def test_an_operators_change_with_the_registry_away_is_a_503_that_changes_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    registry = RegistryDouble(Shard(0, 1))
    async with (
        running_fleet(tmp_path / "s.db", [1001], shard=Shard(0, 1), registry=registry) as fleet,
        admin_client(fleet) as client,
    ):
        registry.away = True
        answer = await client.post("/admin/bots/1001/suspend", json={"reason": "test"})
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "10"
        assert "nothing was changed" in answer.json()["error"]["message"]
        assert fleet.handle.fleet.get(1001).suspended_reason is None
        stored = await fleet.handle.store.get_bot(1001)
        assert stored is not None and stored.suspended_reason is None
        # Once it answers, the change goes to the registry first, then here.
        registry.away = False
        answer = await client.post("/admin/bots/1001/suspend", json={"reason": "test"})
        assert answer.status_code == 200, answer.text
        assert ("suspending", 1001) in registry.writes
        stored = await fleet.handle.store.get_bot(1001)
        assert stored is not None and stored.suspended_reason == "test"


async def test_the_cache_holds_the_tokens_sealed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    registry = RegistryDouble(Shard(0, 1))
    async with running_fleet(
        tmp_path / "s.db", [1001], shard=Shard(0, 1), registry=registry
    ) as fleet:
        stored = await fleet.handle.store.get_bot(1001)
        assert stored is not None
        assert stored.token != fleet.tokens[1001] and stored.token.startswith("v1.")
        assert registry.open(stored).token == fleet.tokens[1001]
    # And a restart opens them: the bot runs again with its token.
    async with running_fleet(
        tmp_path / "s.db", [1001], shard=Shard(0, 1), registry=registry
    ) as fleet:
        assert fleet.handle.fleet.get(1001).config.token.reveal() == fleet.tokens[1001]
    raw = (tmp_path / "s.db").read_bytes()
    assert fleet.tokens[1001].encode() not in raw
