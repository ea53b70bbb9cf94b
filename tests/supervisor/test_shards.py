"""A daemon run as one shard of N: it runs, lists and answers for only the bots it owns, a
bot of another shard is a 421 naming its owner, webhook URLs carry the shard, and /metrics
labels every series with it (issue 16, stage 1). Without a shard nothing changes."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from actors import BotMode, BotToken, Shard, WebhookConfig, jump_hash
from actors.simulator import SimulatedBotApi
from supervisor import Config
from tests import payloads
from tests.harness import ADMIN_TOKEN, Fleet, admin_app, admin_client, bot_token, running_fleet

SHARD = Shard(1, 3)
USER_IDS = list(range(1001, 1031))
OWNED = [uid for uid in USER_IDS if jump_hash(uid, 3) == 1]
FOREIGN = [uid for uid in USER_IDS if jump_hash(uid, 3) != 1]
MASTER = "the webhook master secret of the shard tests"
PUBLIC_URL = "https://bots.example.com/tg"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def test_the_fixture_has_bots_on_every_shard() -> None:
    assert len(OWNED) >= 5 and len(FOREIGN) >= 10
    assert {jump_hash(uid, 3) for uid in FOREIGN} == {0, 2}


def recording() -> SimulatedBotApi:
    return SimulatedBotApi(rng=random.Random(1), record=True)


def polled(fleet: Fleet) -> set[int]:
    """The user ids whose bots called getUpdates of the simulated Telegram (a call is
    recorded once answered) or wait in one now."""
    by_bot_id = {BotToken(token).bot_id: uid for uid, token in fleet.tokens.items()}
    answered = {c.bot_id for c in fleet.api.calls if c.method == "getUpdates"}
    waiting = {bot.bot_id for bot in fleet.api.bots if bot.polling}
    return {by_bot_id[bot_id] for bot_id in answered | waiting if bot_id is not None}


async def test_a_shard_runs_only_the_config_bots_it_owns(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with running_fleet(tmp_path / "s1.db", USER_IDS, shard=SHARD, api=recording()) as fleet:
        await trio.sleep(5)
        assert [a.user_id for a in fleet.handle.fleet.actors()] == OWNED
        assert polled(fleet) == set(OWNED)
        stored = await fleet.handle.store.list_bots()
        assert sorted(record.user_id for record in stored) == OWNED


async def test_without_a_shard_the_daemon_runs_every_bot(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with running_fleet(tmp_path / "all.db", USER_IDS, api=recording()) as fleet:
        await trio.sleep(5)
        assert [a.user_id for a in fleet.handle.fleet.actors()] == USER_IDS
        assert polled(fleet) == set(USER_IDS)


async def test_the_other_shards_bots_in_one_file_are_not_unregistered(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The same file on the next start: the bots of the other shards are declared, not
    # vanished, so nothing is pruned and no start is refused.
    db = tmp_path / "again.db"
    async with running_fleet(db, USER_IDS, shard=SHARD):
        await trio.sleep(1)
    async with running_fleet(db, USER_IDS, shard=SHARD) as fleet:
        await trio.sleep(1)
        assert [a.user_id for a in fleet.handle.fleet.actors()] == OWNED


async def test_stored_bots_of_other_shards_are_neither_started_nor_unregistered(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database of one unsharded process, started as shard 1 of 3 (the count changed): the
    # bots the hash now gives other shards stay stored, for the resize that hands them over.
    db = tmp_path / "moved.db"
    async with running_fleet(db, USER_IDS) as fleet, admin_client(fleet) as http:
        await trio.sleep(1)
        assert (await http.post("/admin/system/bot-health/persist-now")).status_code == 200
        history = await http.get(f"/admin/system/bot-health/history/{FOREIGN[0]}")
        assert history.status_code == 200 and history.json()["count"] >= 1
    caplog.set_level(logging.WARNING, logger="botvisor")
    async with (
        running_fleet(db, OWNED, shard=SHARD, api=recording()) as fleet,
        admin_client(fleet) as http,
    ):
        await trio.sleep(5)
        assert [a.user_id for a in fleet.handle.fleet.actors()] == OWNED
        assert polled(fleet) == set(OWNED)
        stored = await fleet.handle.store.list_bots()
        assert sorted(record.user_id for record in stored) == USER_IDS
        # Its history is still in this file, but the bot is another shard's now.
        history = await http.get(f"/admin/system/bot-health/history/{FOREIGN[0]}")
        assert history.status_code == 421
        assert history.json()["owner_shard"] == jump_hash(FOREIGN[0], 3)
    assert f"{len(FOREIGN)} stored bot(s) belong to other shards now" in caplog.text
    async with running_fleet(db, USER_IDS) as fleet:
        assert [a.user_id for a in fleet.handle.fleet.actors()] == USER_IDS


async def test_adding_a_bot_of_another_shard_is_421_naming_its_owner_and_stores_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with running_fleet(tmp_path / "add.db", OWNED[:2], shard=SHARD, api=recording()) as fleet:
        mine, theirs = 2001, 2002
        while jump_hash(mine, 3) != 1:
            mine += 2
        while jump_hash(theirs, 3) == 1:
            theirs += 2
        tokens = {uid: bot_token(uid) for uid in (mine, theirs)}
        for token in tokens.values():
            fleet.api.add_bot(token)
        async with admin_client(fleet) as http:
            refused = await http.post(
                "/admin/bots", json={"user_id": theirs, "token": tokens[theirs]}
            )
            assert refused.status_code == 421, refused.text
            body = refused.json()
            assert body["owner_shard"] == jump_hash(theirs, 3)
            assert body["error"]["code"] == "misdirected"
            assert f"shard {jump_hash(theirs, 3)}" in body["error"]["message"]
            assert tokens[theirs] not in refused.text
            # Not asked of Telegram, not stored, not started.
            assert not [c for c in fleet.api.calls if c.method == "getMe"]
            assert theirs not in {r.user_id for r in await fleet.handle.store.list_bots()}
            added = await http.post("/admin/bots", json={"user_id": mine, "token": tokens[mine]})
            assert added.status_code == 201, added.text
            listed = (await http.get("/admin/bots")).json()
            assert [bot["user_id"] for bot in listed["bots"]] == sorted([*OWNED[:2], mine])


async def test_per_bot_routes_of_another_shards_bot_are_421_and_unknown_own_bots_404(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    theirs = FOREIGN[0]
    unknown_mine = next(uid for uid in range(5000, 6000) if jump_hash(uid, 3) == 1)
    async with (
        running_fleet(tmp_path / "routes.db", USER_IDS, shard=SHARD) as fleet,
        admin_client(fleet) as http,
    ):
        for method, path in [
            ("GET", "/admin/bots/{uid}"),
            ("DELETE", "/admin/bots/{uid}"),
            ("POST", "/admin/bots/{uid}/suspend"),
            ("POST", "/admin/bots/{uid}/resume"),
            ("GET", "/admin/bots/{uid}/dead-letters"),
            ("GET", "/admin/system/bot-health/{uid}"),
            ("GET", "/admin/system/bot-health/history/{uid}"),
            ("GET", "/admin/system/circuit-breakers/{uid}"),
            ("POST", "/admin/system/circuit-breakers/{uid}/reset"),
            ("GET", "/admin/analytics/usage?user_id={uid}"),
        ]:
            refused = await http.request(method, path.format(uid=theirs))
            assert refused.status_code == 421, (method, path, refused.text)
            assert refused.json()["owner_shard"] == jump_hash(theirs, 3), path
            if "analytics" not in path:
                missing = await http.request(method, path.format(uid=unknown_mine))
                assert missing.status_code == 404, (method, path, missing.text)
        summary = (await http.get("/admin/system/bot-health/summary")).json()
        assert summary["total_bots"] == len(OWNED), summary
        # The OpenAPI document describes the 421 as it is answered.
        spec = (await http.get("/openapi.json")).json()
        answer = spec["paths"]["/admin/bots/{user_id}"]["get"]["responses"]["421"]
        ref = answer["content"]["application/json"]["schema"]["$ref"]
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        body = (await http.get(f"/admin/bots/{theirs}")).json()
        assert set(schema["properties"]) == set(body) == {"error", "owner_shard"}
        assert schema["additionalProperties"] is False


def webhook_bots(shard_config: Config) -> Config:
    return shard_config.model_copy(
        update={
            "bots": tuple(
                b.model_copy(update={"mode": BotMode.WEBHOOK}) for b in shard_config.bots
            ),
            "webhook": WebhookConfig(listen="127.0.0.1:0", public_url=PUBLIC_URL, secret=MASTER),
        }
    )


def receiver_client(fleet: Fleet) -> httpx.AsyncClient:
    receiver = fleet.handle.webhook
    assert receiver is not None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=receiver), base_url="http://hooks.test"
    )


async def inbox_rows(fleet: Fleet) -> int:
    return len(await fleet.handle.store.inbox_pending_all())


async def test_a_shard_registers_shard_addressed_webhook_urls(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with running_fleet(
        tmp_path / "hook.db", USER_IDS, shard=SHARD, configure=webhook_bots
    ) as fleet:
        await trio.sleep(5)
        fleet_ = fleet.handle.fleet
        for uid in OWNED:
            registration = fleet_.registration(uid)
            assert registration is not None
            assert registration.url == f"{PUBLIC_URL}/s/1/{uid}"
        assert all(fleet_.registration(uid) is None for uid in FOREIGN)
        webhooks = {bot.bot_id: bot.webhook for bot in fleet.api.bots}
        assert all(webhooks[fleet.bot_id(uid)] is None for uid in FOREIGN)


async def test_a_delivery_to_another_shard_or_its_bot_is_421_and_stores_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    mine, theirs = OWNED[0], FOREIGN[0]
    async with running_fleet(
        tmp_path / "deliver.db", USER_IDS, shard=SHARD, configure=webhook_bots, api=recording()
    ) as fleet:
        secret = fleet.handle.fleet.webhook_secret(mine)
        assert secret is not None
        headers = {SECRET_HEADER: secret, "content-type": "application/json"}
        body = json.dumps(payloads.message(777, chat_id=5, text="hi"))
        async with receiver_client(fleet) as hooks:
            for path in (
                f"/tg/s/0/{mine}",
                f"/tg/s/2/{mine}",
                f"/tg/s/1/{theirs}",
                f"/tg/{theirs}",
            ):
                answer = await hooks.post(path, content=body, headers=headers)
                assert answer.status_code == 421, (path, answer.text)
                assert "misdirected" in answer.text
                assert await inbox_rows(fleet) == 0
            # A wrong secret does not turn a misdirected delivery into a 401 that would
            # tell the sender nothing about where to go; nor is it ever 404 or 410.
            answer = await hooks.post(f"/tg/s/0/{theirs}", content=body)
            assert answer.status_code == 421
            stats = fleet.handle.webhook.statistics() if fleet.handle.webhook else None
            assert stats is not None and stats.rejected["misdirected"] == 5
            assert stats.accepted_new == 0
            ok = await hooks.post(f"/tg/s/1/{mine}", content=body, headers=headers)
            assert ok.status_code == 200, ok.text
            # The unaddressed path of an earlier, unsharded registration still serves it.
            again = json.dumps(payloads.message(778, chat_id=5, text="hi again"))
            ok = await hooks.post(f"/tg/{mine}", content=again, headers=headers)
            assert ok.status_code == 200, ok.text
            for path in ("/tg/s/x/1005", "/tg/s/1", "/tg/s//1005"):
                answer = await hooks.post(path, content=body, headers=headers)
                assert answer.status_code == 404, path
        await trio.sleep(5)
        sent = [c for c in fleet.api.calls if c.method == "sendMessage"]
        assert {c.bot_id for c in sent} == {fleet.bot_id(mine)}
        assert len(sent) == 2


async def test_without_a_shard_a_shard_path_is_not_a_webhook_path(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with running_fleet(tmp_path / "plain.db", [1001], configure=webhook_bots) as fleet:
        secret = fleet.handle.fleet.webhook_secret(1001)
        assert secret is not None
        await trio.sleep(5)
        registration = fleet.handle.fleet.registration(1001)
        assert registration is not None and registration.url == f"{PUBLIC_URL}/1001"
        body = json.dumps(payloads.message(1, chat_id=5, text="hi"))
        async with receiver_client(fleet) as hooks:
            answer = await hooks.post("/tg/s/0/1001", content=body, headers={SECRET_HEADER: secret})
            assert answer.status_code == 404


def _metrics_app(fleet: Fleet, shard: Shard | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(fleet, shard)),
        base_url="http://admin.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )


def _app(fleet: Fleet, shard: Shard | None) -> Starlette:
    return admin_app(fleet, shard=shard)


def _label_sets(text: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (sample.name, dict(sample.labels))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


async def test_every_metrics_series_of_a_shard_carries_its_label_and_none_without(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    configure: Callable[[Config], Config] = webhook_bots
    async with running_fleet(
        tmp_path / "m.db", USER_IDS, shard=SHARD, configure=configure
    ) as fleet:
        await trio.sleep(1)
        async with _metrics_app(fleet, SHARD) as http:
            sharded = _label_sets((await http.get("/metrics")).text)
        async with _metrics_app(fleet, None) as http:
            plain = _label_sets((await http.get("/metrics")).text)
    assert len(sharded) > 100
    missing = [name for name, labels in sharded if labels.get("shard") != "1"]
    assert not missing, missing[:5]
    # Webhook, per-bot and fleet series alike.
    names = {name for name, _ in sharded}
    assert {"botvisor_bot_status", "botvisor_webhook_in_flight", "botvisor_bots"} <= names
    assert not [name for name, labels in plain if "shard" in labels]
    assert len(plain) == len(sharded)


async def test_the_live_events_of_another_shards_bot_are_refused_with_421(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async def handshake(app: Starlette, query: str) -> tuple[int, dict[str, Any] | None]:
        sent: list[dict[str, Any]] = []
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "path": "/admin/events",
            "raw_path": b"/admin/events",
            "query_string": query.encode(),
            "headers": [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("admin.test", 80),
            "scheme": "ws",
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}},
        }
        incoming: list[dict[str, Any]] = [{"type": "websocket.connect"}]

        async def receive() -> dict[str, Any]:
            if incoming:
                return incoming.pop(0)
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        with trio.move_on_after(1):
            await app(scope, receive, send)
        if sent[0]["type"] == "websocket.accept":
            return 101, None
        body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
        return sent[0]["status"], body

    async with running_fleet(tmp_path / "ev.db", USER_IDS, shard=SHARD) as fleet:
        app = _app(fleet, SHARD)
        status, body = await handshake(app, f"user_id={FOREIGN[0]}")
        assert status == 421
        assert body is not None and body["owner_shard"] == jump_hash(FOREIGN[0], 3)
        assert (await handshake(app, f"user_id={OWNED[0]}"))[0] == 101
        assert (await handshake(app, ""))[0] == 101
