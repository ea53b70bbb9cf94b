"""The webhook receiver in process (httpx's ASGITransport on Trio) over a real SQLite file:
every refusal stores nothing, a 200 comes only after the commit, duplicates are handed on once,
a failing or overloaded store answers 503/429 with Retry-After."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import storage.store
from actors import WebhookReceiver, derive_secret_token
from storage import Store, run_inline
from tests import payloads

MASTER = "master secret of the tests, long enough"
BOT = 1001
BOT_ID = 7000001
SECRET = derive_secret_token(MASTER, BOT_ID)
URL = f"/tg/{BOT}"


class FakeBots:
    """A stand-in for the fleet's WebhookBots: one bot, hand-offs recorded."""

    def __init__(self) -> None:
        self.secrets = {BOT: SECRET}
        self.stored: list[tuple[int, int, Hashable]] = []
        self.counted: list[tuple[int, bool]] = []

    def webhook_secret(self, user_id: int) -> str | None:
        return self.secrets.get(user_id)

    def webhook_decoy_secret(self, user_id: int) -> str:
        return derive_secret_token(MASTER, user_id)

    def webhook_stored(
        self,
        user_id: int,
        update: Mapping[str, Any],
        key: Hashable,
        received_at: float,
        kind: str,
    ) -> None:
        self.stored.append((user_id, int(update["update_id"]), key))

    def webhook_counted(self, user_id: int, accepted: bool) -> None:
        self.counted.append((user_id, accepted))


class Gate:
    """An offload that can hold the writer's batches (to fill its queue, or gather a batch)."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.open.set()

    def close(self) -> None:
        self.open = trio.Event()

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        await self.open.wait()
        return await run_inline(fn, *args)


def rows(path: Path) -> list[tuple[int, int, int | None, str]]:
    with sqlite3.connect(path) as conn:
        return list(
            conn.execute("SELECT user_id, update_id, chat_id, lane FROM inbox ORDER BY update_id")
        )


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def store(tmp_path: Path, gate: Gate) -> AsyncIterator[Store]:
    store = Store(tmp_path / "bv.db", queue_size=4, offload=gate)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        gate.open.set()
        await store.stop()


@pytest.fixture
def bots() -> FakeBots:
    return FakeBots()


@pytest.fixture
def receiver(store: Store, bots: FakeBots) -> WebhookReceiver:
    return WebhookReceiver(
        bots=bots,
        store=store,
        wall_clock=lambda: 1_800_000_000.0 + trio.current_time(),
        path="/tg",
        max_body_bytes=2048,
    )


@pytest.fixture
async def client(receiver: WebhookReceiver) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=receiver)
    async with httpx.AsyncClient(transport=transport, base_url="http://bots.example.com") as c:
        yield c


def headers(secret: str | None = SECRET) -> dict[str, str]:
    base = {"content-type": "application/json"}
    if secret is not None:
        base["X-Telegram-Bot-Api-Secret-Token"] = secret
    return base


async def deliver(
    client: httpx.AsyncClient, update: Mapping[str, Any], url: str = URL
) -> httpx.Response:
    return await client.post(url, content=json.dumps(update).encode(), headers=headers())


async def test_a_delivery_is_committed_before_its_empty_200_and_handed_on(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    bots: FakeBots,
    store: Store,
    tmp_path: Path,
) -> None:
    update = payloads.group_message(41, chat_id=-4001)
    response = await deliver(client, update)
    assert response.status_code == 200
    assert response.content == b""  # a JSON body would be read by Telegram as a method call
    # Committed: a fresh connection sees the row, with the chat and lane the poller would store.
    assert rows(tmp_path / "bv.db") == [(BOT, 41, -4001, "-4001")]
    assert bots.stored == [(BOT, 41, -4001)]
    pending = await store.inbox_pending(BOT)
    assert pending[0]["update"] == update


async def test_the_same_update_twice_is_stored_once_and_handed_on_once(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    receiver: WebhookReceiver,
    bots: FakeBots,
    tmp_path: Path,
) -> None:
    update = payloads.callback_query(7, chat_id=111)
    first = await deliver(client, update)
    again = await deliver(client, update)
    assert (first.status_code, again.status_code) == (200, 200)
    assert len(rows(tmp_path / "bv.db")) == 1
    assert bots.stored == [(BOT, 7, 111)]
    stats = receiver.statistics()
    assert (stats.accepted_new, stats.accepted_duplicate) == (1, 1)


@pytest.mark.parametrize(
    ("secret", "reason"),
    [(None, "missing"), ("bvw_" + "A" * 43, "wrong"), (SECRET[:-1], "truncated")],
)
async def test_a_missing_or_wrong_secret_is_401_and_nothing_is_stored(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    receiver: WebhookReceiver,
    bots: FakeBots,
    tmp_path: Path,
    secret: str | None,
    reason: str,
) -> None:
    body = json.dumps(payloads.message(1)).encode()
    response = await client.post(URL, content=body, headers=headers(secret))
    assert response.status_code == 401, reason
    assert "Secret-Token" in response.text
    assert SECRET not in response.text
    assert rows(tmp_path / "bv.db") == []
    assert bots.stored == []
    assert receiver.statistics().rejected["bad_secret"] == 1


@pytest.mark.parametrize(
    ("method", "url", "status", "reason"),
    [
        ("POST", "/other/1001", 404, "not_found"),
        ("POST", "/tg", 404, "not_found"),
        ("POST", "/tg/", 404, "not_found"),
        ("POST", "/tg/abc", 404, "not_found"),
        ("POST", "/tg/0", 404, "not_found"),
        ("POST", "/tg/1001/extra", 404, "not_found"),
        ("POST", "/tg/99999999999999999999", 404, "not_found"),
        ("GET", "/tg/1001", 405, "method"),
    ],
)
async def test_paths_methods_and_bots_that_are_not_ours(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    receiver: WebhookReceiver,
    tmp_path: Path,
    method: str,
    url: str,
    status: int,
    reason: str,
) -> None:
    body = json.dumps(payloads.message(1)).encode() if method == "POST" else None
    response = await client.request(method, url, content=body, headers=headers())
    assert response.status_code == status
    if status == 405:
        assert response.headers["allow"] == "POST"
    assert rows(tmp_path / "bv.db") == []
    assert receiver.statistics().rejected[reason] == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"message": {}}', "update_id"),
        (b'{"update_id": "5"}', "update_id"),
        (b'{"update_id": true}', "update_id"),
        (b'{"update_id": -1}', "update_id"),
        (b'{"update_id": NaN}', "not JSON"),
        (b'{"update_id": 1, "message": {"text": "\xff\xfe"}}', "not UTF-8"),
        (b"", "not JSON"),
    ],
)
async def test_a_body_that_is_not_one_update_is_400_with_a_reason(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    receiver: WebhookReceiver,
    bots: FakeBots,
    tmp_path: Path,
    body: bytes,
    says: str,
) -> None:
    response = await client.post(URL, content=body, headers=headers())
    assert response.status_code == 400
    assert says in response.text
    assert rows(tmp_path / "bv.db") == []
    assert bots.stored == []
    assert receiver.statistics().rejected["bad_json"] == 1


async def test_a_body_above_the_limit_is_413_read_no_further(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    big = payloads.message(3, text="x" * 4000)
    declared = await deliver(client, big)  # Content-Length says it
    assert declared.status_code == 413
    assert "2048" in declared.text

    # Chunked, no Content-Length (driven as Hypercorn would, message by message): the
    # receiver stops reading once past the limit.
    read = 0
    answer: list[Any] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b" " * 1000, "more_body": read < 100}

    async def send(message: Any) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": URL,
        "headers": [(b"x-telegram-bot-api-secret-token", SECRET.encode())],
    }
    await receiver(scope, receive, send)
    assert answer[0]["status"] == 413
    assert read <= 3
    assert rows(tmp_path / "bv.db") == []
    assert receiver.statistics().rejected["too_large"] == 2


async def test_a_failing_store_is_503_with_retry_after_and_nothing_is_handed_on(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    receiver: WebhookReceiver,
    bots: FakeBots,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    def disk_full(*args: Any) -> list[int]:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(storage.store, "_inbox_add", disk_full)
    response = await deliver(client, payloads.message(5))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert bots.stored == []
    monkeypatch.undo()
    # Telegram retries after Retry-After, and then the update is stored and handed on.
    retried = await deliver(client, payloads.message(5))
    assert retried.status_code == 200
    assert bots.stored == [(BOT, 5, 111)]
    assert receiver.statistics().rejected["store_failed"] == 1


async def test_a_closed_store_is_503_with_retry_after(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    store: Store,
    bots: FakeBots,
) -> None:
    await store.stop()
    response = await deliver(client, payloads.message(6))
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert bots.stored == []


async def test_a_full_write_queue_is_429_with_retry_after_and_nothing_is_stored(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    store: Store,
    bots: FakeBots,
    gate: Gate,
    receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    gate.close()  # the disk stalls: the writer holds one batch, the queue (4 jobs) fills
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.flush)
        await trio.testing.wait_all_tasks_blocked()  # the writer holds this one's batch
        for _ in range(4):
            nursery.start_soon(store.flush)
        await trio.testing.wait_all_tasks_blocked()
        assert store.statistics().writer.queued == 4
        response = await deliver(client, payloads.message(8))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        gate.open.set()
    assert rows(tmp_path / "bv.db") == []
    assert bots.stored == []
    assert receiver.statistics().rejected["overloaded"] == 1
    again = await deliver(client, payloads.message(8))
    assert again.status_code == 200
    assert bots.stored == [(BOT, 8, 111)]


async def test_concurrent_deliveries_share_one_group_commit(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    bots: FakeBots,
    gate: Gate,
) -> None:
    store = Store(tmp_path / "group.db", offload=gate)
    receiver = WebhookReceiver(
        bots=bots, store=store, wall_clock=lambda: 1_800_000_000.0, path="/tg"
    )
    transport = httpx.ASGITransport(app=receiver)
    count = 20
    statuses: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        before = store.statistics().writer.batches
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
            gate.close()
            async with trio.open_nursery() as posts:

                async def one(update_id: int) -> None:
                    response = await deliver(client, payloads.message(update_id, chat_id=update_id))
                    statuses.append(response.status_code)

                for update_id in range(1, count + 1):
                    posts.start_soon(one, update_id)
                await trio.testing.wait_all_tasks_blocked()
                # No 200 before the commit: every delivery is still waiting for it.
                assert statuses == []
                assert receiver.statistics().in_flight == count
                gate.open.set()
        batches = store.statistics().writer.batches - before
        await store.stop()
    assert statuses == [200] * count
    assert len(bots.stored) == count
    assert batches < count
    assert batches <= 2  # at most the first alone, then everyone queued behind it
    stats = receiver.statistics()
    assert stats.commit_count == count
    assert stats.commit_buckets[-1] == count


async def test_secrets_never_reach_the_log_or_an_answer(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> list[int]:
        raise RuntimeError(f"a bug that mentions {SECRET}")

    monkeypatch.setattr(storage.store, "_inbox_add", broken)
    response = await deliver(client, payloads.message(9))
    assert response.status_code == 503
    assert SECRET not in response.text
    # The receiver's own message is redacted (the autouse fixture checks every line too).
    logged = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
    assert logged
    assert all(SECRET not in line and "bvw_…" in line for line in logged)


async def test_each_answered_delivery_to_a_known_bot_is_counted_for_its_usage_with_its_type(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    bots: FakeBots,
    tmp_path: Path,
) -> None:
    update = payloads.callback_query(77)
    assert (await deliver(client, update)).status_code == 200
    assert (await deliver(client, update)).status_code == 200  # a duplicate: accepted too
    wrong = await client.post(URL, content=json.dumps(update).encode(), headers=headers("x"))
    assert wrong.status_code == 401
    assert (await client.post(URL, content=b"{", headers=headers())).status_code == 400
    unknown = await client.post("/tg/999", content=b"{}", headers=headers())
    assert unknown.status_code == 401  # no tenant to count it for
    assert bots.counted == [(BOT, True), (BOT, True), (BOT, False), (BOT, False)]
    # The update is counted by its type once, in the transaction that stored it.
    with sqlite3.connect(tmp_path / "bv.db") as conn:
        counted = conn.execute(
            "SELECT value FROM usage_counts WHERE grain = 'hour' AND user_id = ? "
            "AND metric = 'updates.callback_query'",
            (BOT,),
        ).fetchall()
    assert counted == [(1,)]


@pytest.mark.parametrize("secret", [None, "wrong", SECRET])
async def test_an_unknown_bot_with_a_wrong_secret_is_401_like_a_known_one(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    receiver: WebhookReceiver,
    tmp_path: Path,
    secret: str | None,
) -> None:
    """No probing which bots exist: without the secret, bot 2002 (none) answers as bot 1001."""
    body = json.dumps(payloads.message(1)).encode()
    # Bot 1001's own secret is a wrong one for bot 2002.
    known = await client.post(URL, content=body, headers=headers("wrong" if secret else None))
    unknown = await client.post("/tg/2002", content=body, headers=headers(secret))
    assert known.status_code == unknown.status_code == 401
    assert known.text == unknown.text
    assert receiver.statistics().rejected["bad_secret"] == 2
    assert receiver.statistics().rejected["unknown_bot"] == 0
    assert rows(tmp_path / "bv.db") == []


async def test_an_unknown_bot_is_404_only_to_a_caller_with_the_secret_it_would_have(
    autojump_clock: trio.testing.MockClock,
    client: httpx.AsyncClient,
    receiver: WebhookReceiver,
) -> None:
    body = json.dumps(payloads.message(1)).encode()
    decoy = derive_secret_token(MASTER, 2002)
    response = await client.post(
        "/tg/2002", content=body, headers={"x-telegram-bot-api-secret-token": decoy}
    )
    assert response.status_code == 404
    assert receiver.statistics().rejected["unknown_bot"] == 1
