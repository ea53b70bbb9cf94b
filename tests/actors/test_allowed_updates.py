"""``allowed_updates``: each bot's list goes out on every ``getUpdates``, and the server's
filter decides what the bot receives (the real daemon on the simulated Bot API, MockClock)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing

from actors import DEFAULT_ALLOWED_UPDATES, UPDATE_TYPES, BotToken
from actors.simulator import SimulatedBotApi
from supervisor import Config
from tests.harness import Fleet, running_fleet
from tests.payloads import ALL_UPDATE_TYPES


def allowing(lists: dict[int, tuple[str, ...]]) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        bots = tuple(
            b.model_copy(update={"allowed_updates": lists[b.user_id]}) if b.user_id in lists else b
            for b in config.bots
        )
        return config.model_copy(update={"bots": bots})

    return configure


def polls_of(fleet: Fleet, user_id: int) -> list[object]:
    """The ``allowed_updates`` of every getUpdates the bot sent, as the server received it."""
    bot_id = BotToken(fleet.tokens[user_id]).bot_id
    return [
        call.params.get("allowed_updates")
        for call in fleet.api.calls
        if call.bot_id == bot_id and call.method == "getUpdates"
    ]


def test_the_update_types_are_those_of_the_bot_api_reference() -> None:
    assert UPDATE_TYPES == ALL_UPDATE_TYPES


async def test_every_poll_sends_the_default_list_explicitly(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(1), record=True)
    async with running_fleet(tmp_path / "a.db", [1], api=api) as fleet:
        # Several polls: idle ones that end by timeout, and one that returns an update.
        await trio.sleep(70)
        api.send_user_message(fleet.tokens[1], 42, "hello")
        await trio.sleep(5)
        polls = polls_of(fleet, 1)
        assert len(polls) >= 3
        # Sent, not left out: without it Telegram would keep a list another deployment set.
        assert all(p == list(DEFAULT_ALLOWED_UPDATES) for p in polls), polls
        assert api.report().bot(BotToken(fleet.tokens[1]).bot_id).answered == 1


async def test_each_bot_receives_only_the_types_it_asked_for(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(2), record=True)
    lists = {1: ("callback_query",), 2: ("message", "chat_member", "message_reaction")}
    configure = allowing(lists)
    async with running_fleet(tmp_path / "a.db", [1, 2], api=api, configure=configure) as fleet:
        for uid in (1, 2):
            api.send_user_message(fleet.tokens[uid], 42, "hello")
        await trio.sleep(40)
        assert set(map(tuple, polls_of(fleet, 1))) == {lists[1]}  # type: ignore[arg-type]
        assert set(map(tuple, polls_of(fleet, 2))) == {lists[2]}  # type: ignore[arg-type]
        report = api.report()
        # Bot 1 asked for callback queries only: the server holds its text message back.
        assert report.bot(BotToken(fleet.tokens[1]).bot_id).answered == 0
        assert fleet.handle.fleet.get(1).statistics().handled_updates == 0
        assert report.bot(BotToken(fleet.tokens[2]).bot_id).answered == 1
