"""Telegram's error semantics end to end: which 404 is the token's, and what a handler's
escaped error does to its update (the real daemon on the simulated Bot API, MockClock)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from actors import BotStatus
from actors.botapi import ErrorCategory, categorize
from actors.breaker import BreakerState
from actors.simulator import SimulatedBotApi
from storage import Store, run_inline
from supervisor import Config
from tests.actors.transports import FailingMethod
from tests.harness import running_fleet


def with_handler(handler: str) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        bots = tuple(b.model_copy(update={"handler": handler}) for b in config.bots)
        return config.model_copy(update={"bots": bots})

    return configure


@pytest.mark.parametrize(
    ("code", "method", "category"),
    [
        (401, "sendMessage", ErrorCategory.PERMANENT),
        (401, "getUpdates", ErrorCategory.PERMANENT),
        (404, "getMe", ErrorCategory.PERMANENT),
        (404, "getUpdates", ErrorCategory.PERMANENT),
        (404, "sendMesage", ErrorCategory.CHAT),
        (404, "editMessageText", ErrorCategory.CHAT),
        (404, "getChat", ErrorCategory.CHAT),
    ],
)
def test_a_404_is_the_tokens_only_on_getme_and_getupdates(
    code: int, method: str, category: ErrorCategory
) -> None:
    assert categorize(code, method) is category


async def test_a_misspelled_method_dead_letters_its_update_and_suspends_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="botvisor")
    api = SimulatedBotApi(rng=random.Random(21))
    db = tmp_path / "b.db"
    async with running_fleet(
        db,
        [1],
        api=api,
        configure=with_handler("tests.handlers_for_tests:call_a_misspelled_method"),
    ) as fleet:
        for n in range(6):  # more than the breaker's failure threshold
            api.send_user_message(fleet.tokens[1], 7, f"m{n}")
        await trio.sleep(60)
        actor = fleet.handle.fleet.get(1)
        stats = actor.statistics()
        assert actor.suspended_reason is None
        assert stats.status is BotStatus.HEALTHY
        assert stats.breaker.state is BreakerState.CLOSED
        assert (stats.handled_updates, stats.dead_letters, stats.handler_errors) == (6, 6, 6)
        assert stats.health.failed_requests == 0
    async with _open(db) as store:
        letters = await store.list_dead_letters(1)
    assert len(letters) == 6
    assert all("sendMesage" in letter.reason and "404" in letter.reason for letter in letters)
    warned = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(warned) == 6
    assert all(r.levelno == logging.WARNING for r in warned)


async def test_a_failed_ctx_call_dead_letters_its_update_at_warning(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="botvisor")
    api = SimulatedBotApi(rng=random.Random(22))
    db = tmp_path / "b.db"
    async with running_fleet(
        db, [1], api=api, configure=with_handler("tests.handlers_for_tests:call_then_echo")
    ) as fleet:
        update_id = api.send_user_message(fleet.tokens[1], 7, "hello")
        await trio.sleep(30)
        stats = fleet.handle.fleet.get(1).statistics()
        assert (stats.handled_updates, stats.dead_letters, stats.handler_errors) == (1, 1, 1)
    async with _open(db) as store:
        letters = await store.list_dead_letters(1)
        assert await store.inbox_pending(1) == []
    assert [letter.update_id for letter in letters] == [update_id]
    assert "chat not found" in letters[0].reason
    [record] = [r for r in caplog.records if f"update {update_id}" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "chat not found" in record.getMessage()


async def test_a_404_on_getupdates_with_getme_ok_backs_off_and_polls_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="botvisor")
    api = SimulatedBotApi(rng=random.Random(23))
    wrappers: list[FailingMethod] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        wrappers.append(FailingMethod(inner, {"getUpdates"}, status=404, description="Not Found"))
        return wrappers[0]

    async with running_fleet(tmp_path / "b.db", [1], api=api, wrap_transport=wrap) as fleet:
        await trio.sleep(30)
        actor = fleet.handle.fleet.get(1)
        assert actor.suspended_reason is None
        assert "getUpdates" in wrappers[0].answered
        assert any(
            r.levelno == logging.WARNING and "getMe does not refuse the token" in r.getMessage()
            for r in caplog.records
        )
        wrappers[0].active = False
        api.send_user_message(fleet.tokens[1], 7, "still there?")
        await trio.sleep(120)
        assert actor.suspended_reason is None
        assert api.report().bot(fleet.bot_id(1)).answered == 1


async def test_a_404_whose_getme_check_fails_otherwise_suspends_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # getMe cannot tell (Telegram answers 502): not a refused token, so the bot stays.
    api = SimulatedBotApi(rng=random.Random(23))
    wrappers: list[FailingMethod] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        get_me = FailingMethod(inner, {"getMe"}, status=502, description="Bad Gateway")
        wrappers.append(FailingMethod(get_me, {"getUpdates"}, status=404, description="Not Found"))
        wrappers.append(get_me)
        return wrappers[0]

    async with running_fleet(tmp_path / "b.db", [1], api=api, wrap_transport=wrap) as fleet:
        await trio.sleep(30)
        actor = fleet.handle.fleet.get(1)
        assert "getUpdates" in wrappers[0].answered
        assert "getMe" in wrappers[1].answered
        assert actor.suspended_reason is None
        assert actor.status() is not BotStatus.SUSPENDED


async def test_a_404_on_getupdates_that_getme_confirms_suspends_the_bot(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return FailingMethod(inner, {"getUpdates", "getMe"}, status=404, description="Not Found")

    async with running_fleet(tmp_path / "b.db", [1], wrap_transport=wrap) as fleet:
        await trio.sleep(30)
        actor = fleet.handle.fleet.get(1)
        assert actor.status() is BotStatus.SUSPENDED
        assert "getUpdates failed permanently: getUpdates failed: 404" in (
            actor.suspended_reason or ""
        )


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
