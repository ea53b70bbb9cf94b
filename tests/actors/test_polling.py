"""Polling hygiene: against a server that answers getUpdates at once, empty polls are spaced
(the real daemon on the simulated Bot API, MockClock)."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from actors import TelegramConfig
from actors.simulator import SimulatedBotApi
from supervisor import Config
from tests.actors.transports import ShortPolls
from tests.harness import running_fleet


def telegram(**settings: object) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        return config.model_copy(update={"telegram": config.telegram.model_copy(update=settings)})

    return configure


async def test_a_server_that_ignores_the_timeout_is_polled_once_a_second(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    transports: list[ShortPolls] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        # An emulator that answers every getUpdates at once, ~2 ms later, whatever timeout says.
        transports.append(ShortPolls(inner, hold=0, latency=0.002))
        return transports[0]

    async with running_fleet(tmp_path / "p.db", [1], wrap_transport=wrap):
        start = trio.current_time()
        before = len(transports[0].polls)
        await trio.sleep(60)
        polls = [t for t in transports[0].polls[before:] if t < start + 60]
    assert 59 <= len(polls) <= 61
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert min(gaps) == pytest.approx(1.0)


async def test_the_interval_is_configurable_and_updates_are_not_held_back(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(41))
    transports: list[ShortPolls] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        transports.append(ShortPolls(inner, hold=0))
        return transports[0]

    async with running_fleet(
        tmp_path / "p.db",
        [1],
        api=api,
        wrap_transport=wrap,
        configure=telegram(min_poll_interval=5.0),
    ) as fleet:
        await trio.sleep(62)
        assert 12 <= len(transports[0].polls) <= 14  # at 0, 5 … 60
        # A burst of updates: a poll that brings some is followed by the next at once.
        burst_at = trio.current_time()
        last = 0
        for n in range(120):  # two polls' worth (100 a poll)
            last = api.send_user_message(fleet.tokens[1], 1000 + n % 12, f"n{n}")
        await trio.sleep(5.5)
        assert fleet.handle.fleet.get(1).statistics().offset == last + 1
        assert len([t for t in transports[0].polls if t > burst_at]) >= 3


async def test_poll_timeout_0_short_polls_spaced_and_warns_at_start(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="botvisor")
    api = SimulatedBotApi(rng=random.Random(42))
    transports: list[ShortPolls] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        # A real server, 2 ms away: it honours timeout=0 by answering at once.
        transports.append(ShortPolls(inner, hold=50, latency=0.002))
        return transports[0]

    async with running_fleet(
        tmp_path / "p.db", [1], api=api, wrap_transport=wrap, configure=telegram(poll_timeout=0)
    ):
        await trio.sleep(60)
    assert 59 <= len(transports[0].polls) <= 62
    [warning] = [r for r in caplog.records if "short-polls" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == TelegramConfig(poll_timeout=0).warnings()[0]


async def test_a_long_poll_that_outlasts_the_interval_is_followed_by_the_next_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    transports: list[ShortPolls] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        # Every poll held 3 s and answered empty: longer than min_poll_interval (1 s).
        transports.append(ShortPolls(inner, hold=3))
        return transports[0]

    async with running_fleet(tmp_path / "p.db", [1], wrap_transport=wrap):
        await trio.sleep(30)
        polls = list(transports[0].polls)
    assert 10 <= len(polls) <= 11
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert gaps == pytest.approx([3.0] * len(gaps), abs=0.01)
