"""Webhooks end to end (issue 12, "Done when"), in process on a MockClock: the simulated Bot
API pushes each update, as Telegram does, to the daemon's own receiver.

The daemon is the real one (``running_fleet``: SQLite file, supervisor, bots, the fleet's
setWebhook registration through the simulated Bot API); the simulator's pusher reaches the
receiver the daemon built (``DaemonHandle.webhook``) through ``httpx.ASGITransport``, so
every delivery is a whole ASGI request and the per-chat queues, ``max_connections`` and the
retry schedule are the simulator's. What a user notices is judged by ``api.report()``: every
message answered, none twice, none out of order within its chat.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import storage.store
from actors import ActorState, BotConfig, BotMode, BotToken, WebhookConfig
from actors.simulator import SimReport, SimulatedBotApi
from supervisor import Config
from tests import payloads
from tests.harness import Fleet, admin_client, bot_token, running_fleet

# A loopback http URL, which the simulator accepts for setWebhook; the pusher's transport is
# in process, so nothing listens on this port.
PUBLIC_URL = "http://127.0.0.1:8443/tg"
MASTER = "master secret of the webhook end-to-end tests"


def webhook_mode(
    *, max_connections: int = 8, mode: BotMode = BotMode.WEBHOOK
) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        hook = WebhookConfig(
            listen="127.0.0.1:0",
            public_url=PUBLIC_URL,
            secret=MASTER,
            max_connections=max_connections,
            idle_seconds=30.0,
        )
        bots = tuple(bot.model_copy(update={"mode": mode}) for bot in config.bots)
        return config.model_copy(update={"webhook": hook, "bots": bots})

    return configure


@asynccontextmanager
async def pushed_fleet(
    db: Path,
    user_ids: list[int],
    api: SimulatedBotApi,
    *,
    configure: Callable[[Config], Config],
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> AsyncIterator[Fleet]:
    """The daemon, with the simulator pushing its webhooks to the daemon's receiver."""
    async with running_fleet(db, user_ids, api=api, configure=configure) as fleet:
        receiver = fleet.handle.webhook
        assert receiver is not None
        transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=receiver)
        if wrap is not None:
            transport = wrap(transport)
        async with (
            httpx.AsyncClient(transport=transport) as client,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(api.push_webhooks, client)
            yield fleet
            nursery.cancel_scope.cancel()


async def answered(api: SimulatedBotApi, *, within: float = 3600) -> SimReport:
    """Wait (virtual time) until every message and button press has its answer."""
    with trio.fail_after(within):
        while True:
            report = api.report()
            if not report.unanswered and report.callbacks_answered == report.callback_queries:
                return report
            await trio.sleep(1)


def assert_once_in_order(report: SimReport) -> None:
    summary = report.summary()
    assert report.unanswered == 0, summary
    assert report.answered == report.user_messages, summary
    assert report.duplicates == 0, summary
    assert sum(b.duplicate_replies for b in report.bots) == 0, summary
    assert report.out_of_order == 0, summary
    assert report.misplaced == 0, summary
    assert report.all_answered_once_in_order, summary


def written(report: SimReport) -> int:
    """What the simulated users wrote: messages and button presses."""
    return report.user_messages + report.callback_queries


def with_text(update: dict[str, Any], kind: str, text: str) -> dict[str, Any]:
    update[kind]["text"] = text
    return update


def topic_and_business_burst(api: SimulatedBotApi, token: str, rounds: int) -> int:
    """Realistic updates of Telegram's shapes, all queued at once: messages in a forum
    topic, business messages through a connection, button presses. Returns how many
    messages (not button presses) were queued."""
    messages = 0
    for n in range(rounds):
        topic = payloads.forum_topic_message(chat_id=-1001234567890, thread_id=77)
        api.send_update(token, with_text(topic, "message", f"topic question {n}"))
        business = payloads.business_message(chat_id=555)
        api.send_update(token, with_text(business, "business_message", f"ship order {n}?"))
        messages += 2
        press = payloads.callback_query(chat_id=700 + n, user_id=700 + n)
        press["callback_query"]["id"] = f"press-{n}"
        api.send_update(token, press)
    return messages


# -- 1. order under parallel delivery ---------------------------------------------------------


async def test_each_chat_keeps_its_order_under_the_simulators_parallel_delivery(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(11))
    bots = [1, 2]
    burst_chats = range(9001, 9017)
    async with pushed_fleet(
        tmp_path / "order.db", bots, api, configure=webhook_mode(max_connections=8)
    ) as fleet:
        tokens = [fleet.tokens[uid] for uid in bots]
        # Each of 16 chats has 5 messages waiting at once: the simulator keeps up to 8
        # deliveries in flight, one per chat queue, and sends a chat's next only after a 200.
        for seq, chat in itertools.product(range(1, 6), burst_chats):
            api.send_user_message(tokens[0], chat, f"burst {seq} of chat {chat}")
        # And a button press in each of those chats, after its 5 messages: Telegram queues
        # presses per user, so it is delivered beside the chat's first message, before the
        # other 4 of its lane; each of them must still be handled, in order.
        for chat in burst_chats:
            press = payloads.callback_query(chat_id=chat, user_id=chat)
            press["callback_query"]["id"] = f"press-in-{chat}"
            api.send_update(tokens[0], press)
        burst_topic_business = topic_and_business_burst(api, tokens[1], rounds=5)
        # Simulated users keep writing meanwhile: private chats, groups, forums, button
        # presses under the bot's last message.
        for token in tokens:
            api.add_users(
                token,
                chats=12,
                rate=0.5,
                count=4,
                group_share=0.5,
                forum_share=0.5,
                callback_share=0.2,
            )
        async with trio.open_nursery() as users:
            await users.start(api.run)
            await trio.sleep(300)  # every simulated user has sent its 4
            report = await answered(api)
            users.cancel_scope.cancel()
        hooks = [api.bot(token).webhook for token in tokens]
        assert all(hook is not None for hook in hooks)
        # The deliveries did overlap (else order would hold trivially), within the limit.
        assert hooks[0] is not None and 1 < hooks[0].max_in_flight <= 8
        receiver = fleet.handle.webhook
        assert receiver is not None
        stats = receiver.statistics()
        assert stats.rejected == dict.fromkeys(stats.rejected, 0)
        assert stats.accepted_duplicate == 0
        assert await fleet.handle.store.inbox_pending(1) == []
        assert await fleet.handle.store.inbox_pending(2) == []
    assert_once_in_order(report)
    assert report.user_messages >= 16 * 5 + burst_topic_business + 2 * 12 * 4 // 2
    assert report.callback_queries >= 16 + 5
    webhook_stats = api.statistics().webhooks
    assert webhook_stats is not None
    assert webhook_stats.deliveries == stats.accepted_new
    assert webhook_stats.failed_deliveries == 0


# -- 2. the same update delivered twice -------------------------------------------------------


class LostAnswers(httpx.AsyncBaseTransport):
    """The receiver answered, but its answer never reached Telegram (a connection reset on
    the way back), for the first delivery of every ``every``-th update: Telegram delivers
    that update again."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, every: int) -> None:
        self._inner = inner
        self._every = every
        self.seen: set[int] = set()
        self.lost: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        response = await self._inner.handle_async_request(request)
        await response.aread()
        update_id = int(json.loads(body)["update_id"])
        first = update_id not in self.seen
        self.seen.add(update_id)
        if first and response.status_code == 200 and update_id % self._every == 0:
            self.lost.append(update_id)
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


async def test_an_update_delivered_twice_is_handled_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(12))
    box: list[LostAnswers] = []

    def losing(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        box.append(LostAnswers(inner, every=3))
        return box[0]

    async with pushed_fleet(
        tmp_path / "twice.db", [1], api, configure=webhook_mode(), wrap=losing
    ) as fleet:
        token = fleet.tokens[1]
        for seq, chat in itertools.product(range(1, 5), range(9101, 9107)):
            api.send_user_message(token, chat, f"twice {seq} of chat {chat}")
        topic_and_business_burst(api, token, rounds=3)
        report = await answered(api)
        lost = box[0].lost
        receiver = fleet.handle.webhook
        assert receiver is not None
        # Every lost answer made the simulator deliver the update again; the receiver
        # answered the second delivery 200 as a duplicate and handed nothing on.
        assert len(lost) >= 8
        assert receiver.statistics().accepted_duplicate == len(lost)
        webhook_stats = api.statistics().webhooks
        assert webhook_stats is not None and webhook_stats.failed_deliveries == len(lost)
        info = (await api.handle(token, "getWebhookInfo", {}))[1]["result"]
        assert info["last_error_message"] == "Webhook connection closed"
        assert info["pending_update_count"] == 0

        # Much later, after the bot went dormant, Telegram delivers an old update once more
        # (Telegram's own retry after a lost answer can come at any time): 200, not handled.
        await trio.sleep(120)
        actor = fleet.handle.fleet.get(1)
        assert actor.state is ActorState.IDLE
        secret = fleet.handle.fleet.webhook_secret(1)
        assert secret is not None
        again = payloads.message(lost[0], chat_id=9101, text="twice 1 of chat 9101")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=receiver), base_url="http://127.0.0.1:8443"
        ) as telegram:
            for _ in range(2):
                late = await telegram.post(
                    "/tg/1", json=again, headers={"X-Telegram-Bot-Api-Secret-Token": secret}
                )
                assert late.status_code == 200
        await trio.sleep(5)
        assert actor.state is ActorState.IDLE  # a duplicate wakes nobody
        assert receiver.statistics().accepted_duplicate == len(lost) + 2
        # /metrics counts each update once too, the redeliveries not at all.
        counted = fleet.handle.metrics.instruments.statistics()
        assert sum(counted.updates.values()) == api.report().updates_confirmed
        assert receiver.statistics().accepted_new == api.report().updates_confirmed
    assert_once_in_order(api.report())
    assert api.report().replies == report.replies
    sent = api.statistics().calls_by_method
    assert sent["sendMessage"] == report.user_messages
    assert sent["answerCallbackQuery"] == report.callback_queries


# -- 3. a store failure answers 503, the simulator's retry then succeeds ------------------------


async def test_a_failing_store_answers_503_and_the_simulators_retry_then_succeeds(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = SimulatedBotApi(rng=random.Random(13))
    real_inbox_add = storage.store._inbox_add
    disk_full = [True]
    failed: list[int] = []

    def disk_full_for_a_while(user_id: int, ids: list[int], *args: Any) -> list[int]:
        # While the disk is full the deliveries' inbox writes fail in the writer's
        # transaction, as SQLite fails them; done marks and snapshots are not involved.
        if disk_full[0]:
            failed.extend(ids)
            raise sqlite3.OperationalError("database or disk is full")
        return real_inbox_add(user_id, ids, *args)

    async with pushed_fleet(tmp_path / "full.db", [1], api, configure=webhook_mode()) as fleet:
        token = fleet.tokens[1]
        receiver = fleet.handle.webhook
        assert receiver is not None
        monkeypatch.setattr(storage.store, "_inbox_add", disk_full_for_a_while)
        for seq, chat in itertools.product(range(1, 4), range(9201, 9206)):
            api.send_user_message(token, chat, f"full {seq} of chat {chat}")
        topic_and_business_burst(api, token, rounds=2)
        queues = 5 + 2 + 2  # private chats, the topic's chat, the business chat, 2 pressers
        # The disk is full for a minute: each delivery is answered 503 with Retry-After and
        # retried after it; nothing is handed to the bot; Telegram shows the answer as the
        # webhook's last error.
        await trio.sleep(60)
        first_tries = set(failed)
        assert len(first_tries) == queues  # each queue's head, none behind it
        assert len(failed) >= 3 * queues  # retried every Retry-After (10 s), no faster
        assert len(failed) <= 7 * queues
        info = (await api.handle(token, "getWebhookInfo", {}))[1]["result"]
        assert info["last_error_message"] == (
            "Wrong response from the webhook: 503 Service Unavailable"
        )
        assert info["pending_update_count"] == 3 * 5 + 4 + 2
        assert receiver.statistics().rejected["store_failed"] == len(failed)
        assert api.report().replies == 0
        assert await fleet.handle.store.inbox_pending(1) == []
        disk_full[0] = False
        # Telegram retries after Retry-After; the disk has room again: every one is stored,
        # handled and answered once, each chat in order.
        report = await answered(api)
        info = (await api.handle(token, "getWebhookInfo", {}))[1]["result"]
        assert info["pending_update_count"] == 0
        assert await fleet.handle.store.inbox_pending(1) == []
    assert_once_in_order(report)
    assert report.user_messages == 3 * 5 + 4
    stats = receiver.statistics()
    assert stats.rejected["store_failed"] == len(failed)
    assert stats.accepted_new == report.user_messages + report.callback_queries


# -- 4. a mode switch loses nothing ---------------------------------------------------------


async def test_switching_a_busy_bot_to_webhook_and_back_loses_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(14))
    token = bot_token(2)
    api.add_bot(token)
    async with pushed_fleet(
        tmp_path / "switch.db", [1], api, configure=webhook_mode(mode=BotMode.POLLING)
    ) as fleet:
        # A bot added through the API (a config file's bot has the file's mode).
        await fleet.handle.fleet.add(BotConfig(user_id=2, token=BotToken(token)))
        bot = api.bot(token)
        api.add_users(token, chats=10, rate=0.5, count=40, group_share=0.3, callback_share=0.1)
        modes: list[tuple[str, int]] = []
        async with trio.open_nursery() as users, admin_client(fleet) as admin:
            await users.start(api.run)
            current = "polling"
            for mode in ("webhook", "polling", "webhook", "polling"):
                await trio.sleep(15)  # messages flowing in the current mode
                # Telegram holds the webhook exactly while the bot is in webhook mode (a bot
                # back to polling deletes it itself, before its first poll).
                assert (bot.webhook is not None) == (current == "webhook")
                current = mode
                switched = await admin.post("/admin/bots/2/mode", json={"mode": mode})
                assert switched.status_code == 200, switched.text
                assert switched.json()["mode"] == mode
                modes.append((mode, written(api.report())))
            with trio.fail_after(3600):
                while written(api.report()) < 10 * 40:  # noqa: ASYNC110 (users done)
                    await trio.sleep(5)
            report = await answered(api)
            users.cancel_scope.cancel()
        # Messages were written in every phase (each switch came while users wrote).
        counts = [count for _, count in modes]
        assert counts == sorted(set(counts)) and counts[0] > 0
        assert await fleet.handle.store.inbox_pending(2) == []
        receiver = fleet.handle.webhook
        assert receiver is not None
        pushed = receiver.statistics().accepted_new
    assert_once_in_order(report)
    assert written(report) == 10 * 40
    # Both ways of receiving carried a real share of the messages.
    assert 50 <= pushed <= report.user_messages + report.callback_queries - 50
    methods = api.statistics().calls_by_method
    assert methods["setWebhook"] == 2
    assert methods["deleteWebhook"] >= 2
