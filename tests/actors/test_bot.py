"""Bot actors end to end in process: the real daemon on the simulated Bot API, MockClock."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors import BotStatus
from actors.simulator import FaultProfile, SimulatedBotApi
from storage import Store, run_inline
from supervisor import Config
from tests.harness import running_fleet


def with_handler(handler: str) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        bots = tuple(b.model_copy(update={"handler": handler}) for b in config.bots)
        return config.model_copy(update={"bots": bots})

    return configure


async def test_every_message_is_answered_once_and_in_order_per_chat(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(3))
    # Latency jitter reorders nothing within a chat, but lets chats overtake each other.
    api.set_faults(FaultProfile(latency=0.05, latency_jitter=0.5))
    async with running_fleet(tmp_path / "b.db", [1, 2, 3], api=api) as fleet:
        for uid in (1, 2, 3):
            for chat in (11, 12, -13):
                for n in range(5):
                    api.send_user_message(
                        fleet.tokens[uid],
                        chat,
                        f"u{uid} c{chat} n{n}",
                        chat_type="private" if chat > 0 else "group",
                    )
        await trio.sleep(120)
        report = api.report()
        assert report.user_messages == 45
        assert report.all_answered_once_in_order, report.summary()
        for uid in (1, 2, 3):
            stats = fleet.handle.fleet.get(uid).statistics()
            assert stats.handled_updates == 15
            assert stats.status is BotStatus.HEALTHY


async def test_an_update_cut_off_by_shutdown_is_handled_after_the_restart(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "b.db"
    api = SimulatedBotApi(rng=random.Random(4))
    async with running_fleet(
        db, [1], api=api, configure=with_handler("tests.handlers_for_tests:slow_echo")
    ) as fleet:
        update_id = api.send_user_message(fleet.tokens[1], 42, "remember me")
        await trio.sleep(10)  # fetched, in the inbox, the handler is 'working' (100 s)
        assert api.report().answered == 0
    # The shutdown's grace (5 s) cut the handler off: nothing was answered and the update is
    # still undone in the inbox: after the restart it must be handled once. (The first run's
    # next poll confirmed it, so Telegram does not send it again here; the redelivery of an
    # undone update is test_an_undone_update_delivered_again_after_a_restart_is_handled_once.)
    assert api.report().answered == 0
    async with _open(db) as store:
        assert [row["update_id"] for row in await store.inbox_pending(1)] == [update_id]
    async with running_fleet(
        db, [1], api=api, configure=with_handler("tests.handlers_for_tests:slow_echo")
    ):
        await trio.sleep(150)
        report = api.report()
        assert report.answered == 1
        assert report.duplicates == 0


async def test_a_failing_handler_dead_letters_its_update_and_the_bot_goes_on(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(5))
    db = tmp_path / "b.db"
    async with running_fleet(
        db, [1], api=api, configure=with_handler("tests.handlers_for_tests:explode_on_boom")
    ) as fleet:
        token = fleet.tokens[1]
        for text in ("one", "boom", "three"):
            api.send_user_message(token, 7, text)
        await trio.sleep(30)
        stats = fleet.handle.fleet.get(1).statistics()
        assert stats.handled_updates == 3
        assert stats.dead_letters == 1
        assert stats.handler_errors == 1
        assert api.report().bot(fleet.bot_id(1)).answered == 2
    async with _open(db) as store:
        letters = await store.list_dead_letters(1)
        assert len(letters) == 1
        assert "cannot take 'boom'" in letters[0].reason
        assert await store.inbox_pending(1) == []


async def test_a_handler_error_is_logged_and_stored_without_the_token_it_carries(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.handlers_for_tests import LEAKED_TOKEN

    caplog.set_level(logging.WARNING, logger="botvisor")
    api = SimulatedBotApi(rng=random.Random(5))
    db = tmp_path / "b.db"
    async with running_fleet(
        db, [1], api=api, configure=with_handler("tests.handlers_for_tests:leak_a_token")
    ) as fleet:
        api.send_user_message(fleet.tokens[1], 7, "hello")
        await trio.sleep(30)
        assert fleet.handle.fleet.get(1).statistics().handler_errors == 1
    secret = LEAKED_TOKEN.split(":")[1]
    logged = [r.getMessage() for r in caplog.records if "handler raised" in r.getMessage()]
    assert logged, "the handler's error is logged"
    for message in logged:
        assert secret not in message
        assert "bot123456789:…/sendPhoto" in message
    async with _open(db) as store:
        (letter,) = await store.list_dead_letters(1)
        assert secret not in letter.reason
        assert "RuntimeError" in letter.reason


class Interposer(httpx.AsyncBaseTransport):
    """Between the bots and the simulated Bot API: ``answer(method)`` may answer a call
    itself (a response), or let it through (None)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        answer: Callable[[str], httpx.Response | None],
    ) -> None:
        self.inner = inner
        self.answer = answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        method = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        answered = self.answer(method)
        if answered is not None:
            await request.aread()
            return answered
        return await self.inner.handle_async_request(request)


def unauthorized_for(methods: set[str], *, enabled: list[bool]) -> Callable[[str], Any]:
    """Answer ``methods`` with Telegram's 401 while ``enabled[0]`` (a revoked token as the
    reply sees it; getUpdates goes on)."""

    def answer(method: str) -> httpx.Response | None:
        if enabled[0] and method in methods:
            body = {"ok": False, "error_code": 401, "description": "Unauthorized"}
            return httpx.Response(401, json=body)
        return None

    return answer


@pytest.mark.parametrize(
    "handler", ["tests.handlers_for_tests:slow_echo", "tests.handlers_for_tests:call_send_message"]
)
async def test_an_update_whose_bot_is_suspended_mid_handler_stays_undone(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, handler: str
) -> None:
    # The handler is working when Telegram starts refusing the token: its reply's 401
    # suspends the bot. The update was not answered, so it must stay in the inbox, undone,
    # and be answered once the bot is resumed.
    api = SimulatedBotApi(rng=random.Random(8))
    db = tmp_path / "b.db"
    refusing = [True]
    async with running_fleet(
        db,
        [1],
        api=api,
        configure=with_handler(handler),
        wrap_transport=lambda inner: Interposer(
            inner, unauthorized_for({"sendMessage"}, enabled=refusing)
        ),
    ) as fleet:
        update_id = api.send_user_message(fleet.tokens[1], 42, "keep me")
        await trio.sleep(200)
        bot = fleet.handle.fleet.get(1)
        assert bot.status() is BotStatus.SUSPENDED
        assert bot.statistics().handled_updates == 0
        assert api.report().answered == 0
        await fleet.handle.store.flush()
        assert [r["update_id"] for r in await fleet.handle.store.inbox_pending(1)] == [update_id]
        # Telegram takes the token again; the operator resumes the bot.
        refusing[0] = False
        await fleet.handle.fleet.resume(1)
        await trio.sleep(200)
        assert api.report().answered == 1
        assert api.report().duplicates == 0
        assert bot.statistics().handled_updates == 1


async def test_the_undone_inbox_is_replayed_in_order_after_a_restart(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "b.db"
    api = SimulatedBotApi(rng=random.Random(9))
    texts = [f"m{n}" for n in range(5)]
    async with running_fleet(
        db, [1], api=api, configure=with_handler("tests.handlers_for_tests:slow_echo")
    ) as fleet:
        for text in texts:
            api.send_user_message(fleet.tokens[1], 42, text)
        await trio.sleep(10)  # all five in the inbox; the first one's handler is 'working'
    async with _open(db) as store:
        assert len(await store.inbox_pending(1)) == 5
    async with running_fleet(db, [1], api=api):  # echo: answers at once
        await trio.sleep(60)
        report = api.report()
        assert report.answered == 5
        assert report.out_of_order == 0, report.summary()
        assert report.duplicates == 0


class Redelivery:
    """Makes the next ``getUpdates`` answer the last batch of updates again, as Telegram
    does for updates whose confirmation it did not see (at-least-once delivery)."""

    def __init__(self) -> None:
        self.last_batch: bytes | None = None
        self.armed = False
        self.replayed = 0

    def wrap(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        redelivery = self

        class Transport(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                is_poll = request.url.path.endswith("/getUpdates")
                if is_poll and redelivery.armed and redelivery.last_batch is not None:
                    redelivery.armed = False
                    redelivery.replayed += 1
                    await request.aread()
                    return httpx.Response(
                        200,
                        content=redelivery.last_batch,
                        headers={"content-type": "application/json"},
                    )
                response = await inner.handle_async_request(request)
                if is_poll:
                    body = await response.aread()
                    if json.loads(body).get("result"):
                        redelivery.last_batch = body
                    return httpx.Response(
                        response.status_code, content=body, headers=response.headers
                    )
                return response

        return Transport()


async def test_an_update_telegram_delivers_twice_is_handled_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(10))
    redelivery = Redelivery()
    async with running_fleet(tmp_path / "b.db", [1], api=api, wrap_transport=redelivery.wrap) as f:
        api.send_user_message(f.tokens[1], 42, "once")
        await trio.sleep(10)
        assert api.report().answered == 1
        redelivery.armed = True
        api.send_user_message(f.tokens[1], 42, "twice")  # wakes the long poll
        await trio.sleep(60)
        assert redelivery.replayed == 1
        report = api.report()
        assert report.answered == 2
        assert report.replies == 2, report.summary()
        assert f.handle.fleet.get(1).statistics().handled_updates == 2


async def test_an_undone_update_delivered_again_after_a_restart_is_handled_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The first run stored the update but was stopped before handling it; the second run
    # replays it from the inbox AND Telegram delivers it again: one answer, not two.
    db = tmp_path / "b.db"
    api = SimulatedBotApi(rng=random.Random(11))
    redelivery = Redelivery()
    async with running_fleet(
        db,
        [1],
        api=api,
        configure=with_handler("tests.handlers_for_tests:slow_echo"),
        wrap_transport=redelivery.wrap,
    ) as fleet:
        update_id = api.send_user_message(fleet.tokens[1], 42, "remember me")
        await trio.sleep(10)
    async with _open(db) as store:
        assert [row["update_id"] for row in await store.inbox_pending(1)] == [update_id]
    redelivery.armed = True
    async with running_fleet(
        db,
        [1],
        api=api,
        configure=with_handler("tests.handlers_for_tests:slow_echo"),
        wrap_transport=redelivery.wrap,
    ):
        await trio.sleep(300)
        assert redelivery.replayed == 1
        report = api.report()
        assert report.answered == 1
        assert report.replies == 1, report.summary()
        assert report.duplicates == 0


class _open:
    def __init__(self, path: Path) -> None:
        self.store = Store(path, offload=run_inline)
        self._nursery_cm = trio.open_nursery()

    async def __aenter__(self) -> Store:
        self._nursery = await self._nursery_cm.__aenter__()
        await self._nursery.start(self.store.run)
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        await self.store.stop()
        await self._nursery_cm.__aexit__(None, None, None)


async def test_a_revoked_token_suspends_only_that_bot(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(6))
    async with running_fleet(tmp_path / "b.db", [1, 2, 3], api=api) as fleet:
        api.revoke(fleet.tokens[2])
        for uid in (1, 2, 3):
            api.send_user_message(fleet.tokens[uid], 9, f"hello {uid}")
        await trio.sleep(60)
        bots = fleet.handle.fleet
        assert bots.get(2).status() is BotStatus.SUSPENDED
        assert "Unauthorized" in (bots.get(2).suspended_reason or "")
        told = [e.to_json() for e in fleet.handle.metrics.recent_events() if e.user_id == 2]
        assert any(e["type"] == "lifecycle" and e["event"] == "suspended" for e in told)
        assert any(e["type"] == "status" and e["status"] == "suspended" for e in told)
        for uid in (1, 3):
            assert bots.get(uid).status() is BotStatus.HEALTHY
            assert api.report().bot(fleet.bot_id(uid)).answered == 1
        # A suspended bot stops calling Telegram.
        calls_before = api.statistics().unauthorized
        await trio.sleep(600)
        assert api.statistics().unauthorized == calls_before


@pytest.mark.parametrize(
    "handler", ["tests.handlers_for_tests:not_async", "tests.handlers_for_tests:missing"]
)
async def test_a_bad_handler_path_is_refused_with_a_clear_message(handler: str) -> None:
    from actors import BotConfig, BotToken, HandlerError, load_handler

    bot = BotConfig(user_id=1, token=BotToken("123:" + "a" * 30), handler=handler)
    with pytest.raises(HandlerError, match=r"bots\[user_id=1\]\.handler"):
        load_handler(bot)


async def test_a_stop_requested_before_an_incarnation_begins_holds(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The supervisor asks a bot it has just scheduled to start (a shutdown meeting a start)
    # to stop before its run has begun: the run must not poll for the whole grace.
    api = SimulatedBotApi(rng=random.Random(8))
    async with running_fleet(tmp_path / "s.db", [1], api=api) as fleet:
        await trio.sleep(1)
        await fleet.handle.supervisor.stop_child(1)
        actor = fleet.handle.fleet.get(1)
        polls = api.statistics().calls_by_method["getUpdates"]
        actor.request_stop()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(actor.run)
        assert api.statistics().calls_by_method["getUpdates"] == polls
        # The next incarnation is not stopped by the last one's request.
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await trio.sleep(1)
            assert api.statistics().waiting_polls == 1
            actor.request_stop()
