"""A redriven update keeps its place in its chat's order: the chat lane takes it again, ahead
of the chat's later undone updates, even while the chat is busy."""

from __future__ import annotations

import random
from collections.abc import Hashable
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from actors import ChatLanes
from actors.simulator import SimulatedBotApi
from tests.actors.test_bot import with_handler
from tests.actors.transports import FailingMethod
from tests.admin.helpers import AUTH, client, make_app
from tests.harness import running_fleet

CHAT = 111


class Recorder:
    """A lane's ``process``: records each item; item ``hold`` waits for ``release``."""

    def __init__(self, hold: int | None = None) -> None:
        self.done: list[int] = []
        self.hold = hold
        self.release = trio.Event()

    async def __call__(self, item: int) -> None:
        if item == self.hold:
            await self.release.wait()
        self.done.append(item)


def lanes_of(
    nursery: trio.Nursery,
    recorder: Recorder,
    inbox: list[int] | None = None,
    buffer: int = 64,
) -> ChatLanes[int]:
    async def refill(key: Hashable, after: int, limit: int) -> tuple[list[int], bool]:
        rows = [item for item in sorted(inbox or []) if item > after][:limit]
        return rows, len(rows) < limit

    return ChatLanes[int](
        nursery,
        recorder,
        max_concurrent=10,
        idle_seconds=60,
        refill=refill,
        position=lambda item: item,
        buffer=buffer,
    )


async def test_a_redriven_update_goes_before_the_chats_later_queued_updates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder(hold=4)
    async with trio.open_nursery() as nursery:
        lanes = lanes_of(nursery, recorder)
        for item in (2, 4, 6, 8):
            lanes.dispatch_nowait(CHAT, item)
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.done == [2]  # 4 is in hand, 6 and 8 wait
        # 2 dead-lettered earlier and is redriven: the lane took it once, takes it again.
        lanes.redrive_nowait(CHAT, 2)
        lanes.redrive_nowait(CHAT, 5)  # never seen here: in its place too
        lanes.redrive_nowait(CHAT, 5)  # queued already: not twice
        recorder.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.done == [2, 4, 2, 5, 6, 8]
        await lanes.close()


async def test_a_redrive_that_reached_a_starting_bot_is_not_taken_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        lanes = lanes_of(nursery, recorder)
        lanes.dispatch_nowait(CHAT, 3)  # the undone inbox the start read held it already
        await trio.testing.wait_all_tasks_blocked()
        lanes.redrive_nowait(CHAT, 3, forget=False)
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.done == [3]
        await lanes.close()


async def test_an_overflowing_lane_leaves_a_later_redrive_to_its_reread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder(hold=1)
    inbox = [1, 2, 3, 4, 5]
    async with trio.open_nursery() as nursery:
        lanes = lanes_of(nursery, recorder, inbox, buffer=2)
        for item in (1, 2, 3, 4):
            lanes.dispatch_nowait(CHAT, item)  # 1 and 2 kept, 3 and 4 left to the inbox
        await trio.testing.wait_all_tasks_blocked()
        lanes.redrive_nowait(CHAT, 5)  # after the cursor: the re-read brings it, in order
        lanes.redrive_nowait(CHAT, 0)  # behind it: queued in its place
        recorder.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.done == [1, 0, 2, 3, 4, 5]
        await lanes.close()


async def test_a_busy_chats_redriven_update_is_answered_before_its_later_messages(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(21), record=True)
    holder: list[FailingMethod] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        holder.append(
            FailingMethod(
                inner,
                {"sendMessage"},
                status=403,
                description="Forbidden: bot was blocked by the user",
            )
        )
        return holder[0]

    async with running_fleet(
        tmp_path / "r.db",
        [1],
        api=api,
        configure=with_handler("tests.handlers_for_tests:slow_echo"),
        wrap_transport=wrap,
    ) as fleet:
        token = fleet.tokens[1]
        api.send_user_message(token, CHAT, "first")
        await trio.sleep(130)  # 100 s of work, then the reply is refused: dead-lettered
        holder[0].active = False
        api.send_user_message(token, CHAT, "second")
        api.send_user_message(token, CHAT, "third")
        await trio.sleep(10)  # "second" is in hand, "third" waits in the lane
        async with client(make_app(fleet), **AUTH) as http:
            response = await http.post("/admin/bots/1/dead-letters/redrive", json={"all": True})
        assert response.json() == {"redriven": 1, "refused": []}
        await trio.sleep(400)
        sent = api.bot(token).sent
        assert sent is not None
        assert [m.text for m in sent if m.chat_id == CHAT] == ["second", "first", "third"]
        assert await fleet.handle.store.inbox_pending(1) == []


async def test_a_redrive_to_a_quiet_chat_opens_its_lane_and_its_later_updates_follow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    inbox = [5, 6]
    async with trio.open_nursery() as nursery:
        lanes = lanes_of(nursery, recorder, inbox, buffer=1)
        assert lanes.idle  # no lane for the chat: it was quiet (or reaped)
        lanes.redrive_nowait(CHAT, 5)
        lanes.dispatch_nowait(CHAT, 6)  # the lane holds one: 6 is left to the inbox
        assert lanes.statistics().overflowing_lanes == 1
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.done == [5, 6]  # 6 read back after 5
        await lanes.close()
        assert lanes.idle
        with pytest.raises(
            RuntimeError, match=r"^chat lanes are closing; no update can be redriven now$"
        ):
            lanes.redrive_nowait(CHAT, 7)
