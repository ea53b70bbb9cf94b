"""No head-of-line blocking: one busy chat never holds up polling or the bot's other chats.

A group chat is paced at Telegram's 20 messages a minute, so a backlog of 1,000 updates takes
50 minutes to answer; meanwhile a private chat must be answered at once, memory must stay at
one lane's buffer, and the group's updates must all be answered, once and in order.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors import ChatLanes, HandlerContext
from actors.simulator import SimulatedBotApi
from tests.actors.test_bot import with_handler
from tests.harness import Fleet, admin_client, running_fleet

GROUP = -1_001_234_567
OTHER = -1_009_999_999
PRIVATE = 42
BACKLOG = 1_000
BUFFER = 64  # ChatLanes' default: the most updates one lane keeps in memory


def _replies_to(api: SimulatedBotApi, fleet: Fleet, chat_id: int) -> list[tuple[float, str]]:
    sent = api.bot(fleet.tokens[1]).sent
    assert sent is not None
    return [(m.time, m.text) for m in sent if m.chat_id == chat_id]


async def _private_chat_is_answered_at_once(api: SimulatedBotApi, fleet: Fleet) -> None:
    asked = trio.current_time()
    api.send_user_message(fleet.tokens[1], PRIVATE, "anyone there?")
    await trio.sleep(2)
    answers = _replies_to(api, fleet, PRIVATE)
    assert [text for _, text in answers] == ["anyone there?"]
    assert answers[0][0] - asked <= 2.0


async def test_a_group_with_a_thousand_undone_updates_does_not_delay_a_private_chat(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(81), record=True)
    async with running_fleet(tmp_path / "h.db", [1], api=api) as fleet:
        for n in range(BACKLOG):
            api.send_user_message(fleet.tokens[1], GROUP, f"group {n}.", chat_type="supergroup")
        await trio.sleep(30)
        # Every update was fetched and committed; the group has answered only its first minute (20).
        assert api.statistics().pending_updates == 0
        undone = await fleet.handle.store.inbox_pending(1)
        assert len(undone) >= BACKLOG - 40
        lanes = fleet.handle.fleet.get(1).statistics().lanes
        assert lanes is not None
        assert lanes.overflowing_lanes == 1
        assert lanes.queued_updates <= BUFFER
        async with admin_client(fleet) as admin:
            scrape = (await admin.get("/metrics")).text
        assert "\nbotvisor_lanes_overflowing 1.0\n" in scrape
        assert f"\nbotvisor_lane_updates {float(lanes.queued_updates)}\n" in scrape

        await _private_chat_is_answered_at_once(api, fleet)

        await trio.sleep(3_100)  # 1,000 at 20 a minute: 50 minutes
        texts = [text for _, text in _replies_to(api, fleet, GROUP)]
        assert texts == [f"group {n}." for n in range(BACKLOG)]
        report = api.report()
        assert report.all_answered_once_in_order, report.summary()
        assert await fleet.handle.store.inbox_pending(1) == []
        assert fleet.handle.fleet.get(1).statistics().handled_updates == BACKLOG + 1
        async with admin_client(fleet) as admin:
            scrape = (await admin.get("/metrics")).text
        assert "\nbotvisor_lanes_overflowing 0.0\n" in scrape


@pytest.mark.parametrize(
    "stored_lane",
    [None, "NULL", "'an earlier rule'"],
    ids=["lane-named", "stored-before-v3", "named-by-another-rule"],
)
async def test_a_thousand_undone_updates_left_at_a_restart_do_not_delay_a_private_chat(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, stored_lane: str | None
) -> None:
    db = tmp_path / "r.db"
    api = SimulatedBotApi(rng=random.Random(82), record=True)
    async with running_fleet(db, [1], api=api) as fleet:
        # Another group's first: done long before the first group, it then finds only the
        # first group's updates after its own.
        for n in range(200):
            api.send_user_message(fleet.tokens[1], OTHER, f"other {n}.", chat_type="supergroup")
        for n in range(BACKLOG):
            api.send_user_message(fleet.tokens[1], GROUP, f"group {n}.", chat_type="supergroup")
        await trio.sleep(30)
    if stored_lane is not None:
        # As rows stored before the inbox recorded lane names, or by a version whose lane
        # rule differed: every lane must still find its own.
        with sqlite3.connect(db) as conn:
            conn.execute(f"UPDATE inbox SET lane = {stored_lane}")
        conn.close()
    # Stopped with almost the whole backlog undone in the inbox: the restart dispatches it.
    async with running_fleet(db, [1], api=api) as fleet:
        assert len(await fleet.handle.store.inbox_pending(1)) >= BACKLOG + 200 - 60
        await _private_chat_is_answered_at_once(api, fleet)
        await trio.sleep(3_100)
        texts = [text for _, text in _replies_to(api, fleet, GROUP)]
        assert texts == [f"group {n}." for n in range(BACKLOG)]
        others = [text for _, text in _replies_to(api, fleet, OTHER)]
        assert others == [f"other {n}." for n in range(200)]
        assert await fleet.handle.store.inbox_pending(1) == []


# --- updates without a chat: ordered per user, overflowing the same way ----------------------

RELAY = 555  # the private chat an inline query's text is relayed to, one per second
ASKER = 777


async def relay_inline_queries(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Relay an inline query's text to the RELAY chat; echo a message."""
    if "inline_query" in update:
        await ctx.call("sendMessage", chat_id=RELAY, text=update["inline_query"]["query"])
    elif ctx.chat_id is not None:
        await ctx.reply(str(update["message"].get("text", "")))


class _InlineQueries(httpx.AsyncBaseTransport):
    """Turns a simulated message ``inline:<text>`` into an inline query of one user."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if not request.url.path.endswith("/getUpdates"):
            return response
        body = json.loads(await response.aread())
        if body.get("ok"):
            body["result"] = [self._reshape(update) for update in body["result"]]
        return httpx.Response(response.status_code, json=body, request=request)

    def _reshape(self, update: dict[str, Any]) -> dict[str, Any]:
        text = str(update.get("message", {}).get("text", ""))
        if not text.startswith("inline:"):
            return update
        query = {"id": f"q{update['update_id']}", "from": {"id": ASKER}, "query": text}
        return {"update_id": update["update_id"], "inline_query": {**query, "offset": ""}}


async def test_a_users_backlog_of_updates_without_a_chat_is_read_back_in_order(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(83), record=True)
    count = 300
    async with running_fleet(
        tmp_path / "u.db",
        [1],
        api=api,
        configure=with_handler("tests.actors.test_head_of_line:relay_inline_queries"),
        wrap_transport=_InlineQueries,
    ) as fleet:
        token = fleet.tokens[1]
        api.send_user_message(token, RELAY, "relay here")  # RELAY's user writes first
        await trio.sleep(5)
        for n in range(count):
            api.send_user_message(token, -5, f"inline:{n}", chat_type="group")
        await trio.sleep(20)
        lanes = fleet.handle.fleet.get(1).statistics().lanes
        assert lanes is not None and lanes.overflowing_lanes == 1
        assert lanes.queued_updates <= BUFFER

        await _private_chat_is_answered_at_once(api, fleet)

        await trio.sleep(count + 60)  # paced at 1 a second in the RELAY chat
        relayed = [text for _, text in _replies_to(api, fleet, RELAY)]
        assert relayed == ["relay here"] + [f"inline:{n}" for n in range(count)]
        assert await fleet.handle.store.inbox_pending(1) == []


# --- the lanes alone: an update dispatched while a lane reads back is not lost ---------------


async def test_an_update_dispatched_during_a_read_back_is_handled_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox: list[int] = []  # committed items (update ids) of lane "chat"
    handled: list[int] = []
    reading = trio.Event()

    async def refill(key: Hashable, after: int, limit: int) -> tuple[list[int], bool]:
        reading.set()
        snapshot = [i for i in inbox if i > after]  # the read's snapshot is taken here...
        await trio.sleep(1)  # ...and it returns later, after newer commits
        return snapshot[:limit], len(snapshot) <= limit

    async def process(item: int) -> None:
        handled.append(item)
        await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        lanes = ChatLanes[int](
            nursery,
            process,
            max_concurrent=4,
            idle_seconds=60,
            refill=refill,
            position=lambda item: item,
            buffer=2,
        )
        for item in range(1, 6):
            inbox.append(item)
            lanes.dispatch_nowait("chat", item)  # never waits, though the lane holds 2
        assert lanes.statistics().queued_updates == 2
        await reading.wait()
        # The lane is reading back 3..5; 6 commits after that read's snapshot.
        inbox.append(6)
        lanes.dispatch_nowait("chat", 6)
        await trio.sleep(30)
        assert handled == [1, 2, 3, 4, 5, 6]
        stats = lanes.statistics()
        assert stats.overflowing_lanes == 0
        # Back in memory once caught up: 7 needs no read.
        reads_before = stats.refills
        inbox.append(7)
        lanes.dispatch_nowait("chat", 7)
        await trio.sleep(1)
        assert handled[-1] == 7
        assert lanes.statistics().refills == reads_before
        await lanes.close()


async def test_an_update_a_read_back_took_before_its_dispatch_is_handled_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox: list[int] = []
    handled: list[int] = []
    reading = trio.Event()

    async def refill(key: Hashable, after: int, limit: int) -> tuple[list[int], bool]:
        reading.set()
        snapshot = [i for i in inbox if i > after]
        await trio.sleep(1)
        return snapshot[:limit], len(snapshot) <= limit

    async def process(item: int) -> None:
        handled.append(item)
        await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        lanes = ChatLanes[int](
            nursery,
            process,
            max_concurrent=4,
            idle_seconds=60,
            refill=refill,
            position=lambda item: item,
            buffer=2,
        )
        for item in range(1, 4):
            inbox.append(item)
            lanes.dispatch_nowait("chat", item)
        inbox.append(4)  # committed; the poller has not dispatched it yet...
        await reading.wait()
        await trio.sleep(1.5)  # ...and the lane's read-back took it meanwhile
        lanes.dispatch_nowait("chat", 4)
        await trio.sleep(30)
        assert handled == [1, 2, 3, 4]
        await lanes.close()


async def test_an_update_that_comes_behind_the_cursor_untaken_is_handled_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Webhook deliveries of one lane can come out of id order: Telegram queues a chat's
    # button presses per user, apart from its messages, so press 12 may come before message 11.
    handled: list[int] = []

    async def refill(key: Hashable, after: int, limit: int) -> tuple[list[int], bool]:
        return [], True

    async def process(item: int) -> None:
        handled.append(item)
        await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        lanes = ChatLanes[int](
            nursery,
            process,
            max_concurrent=4,
            idle_seconds=60,
            refill=refill,
            position=lambda item: item,
            buffer=4,
        )
        for item in (10, 12, 11):
            lanes.dispatch_nowait("chat", item)
        lanes.dispatch_nowait("chat", 12)  # a second dispatch of one taken: not again
        await trio.sleep(5)
        lanes.dispatch_nowait("chat", 11)  # and long after it was handled: not again
        await trio.sleep(5)
        assert handled == [10, 12, 11]
        await lanes.close()
