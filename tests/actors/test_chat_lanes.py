"""ChatLanes on their own, on MockClock: order per chat, the concurrency cap, reaping, closing,
overflow into the inbox and its read-back, and the statistics an operator sees in /metrics.

The whole-fleet behaviour (a thousand updates of one group beside a private chat) is in
test_head_of_line.py; these tests drive the lanes with an in-memory inbox, so each runs in a
few milliseconds and names the one rule it checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from actors import ChatLanes


@dataclass
class Inbox:
    """Committed items (update ids) per lane, and what the lanes handled."""

    rows: dict[Hashable, list[int]] = field(default_factory=dict)
    handled: list[tuple[Hashable, int, float]] = field(default_factory=list)
    reads: list[tuple[Hashable, int, int]] = field(default_factory=list)
    work: float = 1.0  # seconds each item takes
    # Seconds a read-back takes after its snapshot (0: the snapshot is taken after a
    # checkpoint, at once).
    read_time: float = 0.0
    running: int = 0
    most_running: int = 0

    def commit(self, key: Hashable, item: int) -> None:
        self.rows.setdefault(key, []).append(item)

    def done(self, key: Hashable) -> list[int]:
        return [item for k, item, _ in self.handled if k == key]

    async def refill(self, key: Hashable, after: int, limit: int) -> tuple[list[int], bool]:
        self.reads.append((key, after, limit))
        if self.read_time:
            undone = [i for i in self.rows.get(key, []) if i > after]  # the read's snapshot
            await trio.sleep(self.read_time)
        else:
            await trio.lowlevel.checkpoint()
            undone = [i for i in self.rows.get(key, []) if i > after]
        return undone[:limit], len(undone) <= limit


@asynccontextmanager
async def lanes_of(
    inbox: Inbox, *, buffer: int = 4, max_concurrent: int = 8, idle: float = 60.0
) -> AsyncIterator[tuple[ChatLanes[int], dict[int, Hashable]]]:
    keys: dict[int, Hashable] = {}

    async def process(item: int) -> None:
        inbox.running += 1
        inbox.most_running = max(inbox.most_running, inbox.running)
        try:
            await trio.sleep(inbox.work)
        finally:
            inbox.running -= 1
        inbox.handled.append((keys[item], item, trio.current_time()))

    async with trio.open_nursery() as nursery:
        lanes = ChatLanes[int](
            nursery,
            process,
            max_concurrent=max_concurrent,
            idle_seconds=idle,
            refill=inbox.refill,
            position=lambda item: item,
            buffer=buffer,
        )
        yield lanes, keys
        await lanes.close()


def send(
    lanes: ChatLanes[int], keys: dict[int, Hashable], inbox: Inbox, key: Hashable, item: int
) -> None:
    """As the poller does: commit to the inbox first, then dispatch."""
    keys[item] = key
    inbox.commit(key, item)
    lanes.dispatch_nowait(key, item)


@pytest.mark.parametrize("buffer", [0, -1])
async def test_a_lane_buffer_below_one_is_refused(buffer: int) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match=f"^buffer must be >= 1, got {buffer}$"):
            ChatLanes[int](
                nursery,
                trio.sleep,
                max_concurrent=1,
                idle_seconds=1,
                refill=Inbox().refill,
                position=int,
                buffer=buffer,
            )


async def test_each_chat_in_order_chats_side_by_side(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox()
    async with lanes_of(inbox) as (lanes, keys):
        assert lanes.idle
        for item, chat in [(1, 10), (2, 20), (3, 10), (4, ("user", 5)), (5, 20), (6, 10)]:
            send(lanes, keys, inbox, chat, item)
        assert not lanes.idle
        stats = lanes.statistics()
        # Each lane holds its chat's updates; none has started (no checkpoint yet).
        assert (stats.active_lanes, stats.queued_updates, stats.busy_lanes) == (3, 6, 0)
        await trio.sleep(0.5)
        stats = lanes.statistics()
        assert (stats.active_lanes, stats.busy_lanes, stats.queued_updates) == (3, 3, 3)
        await trio.sleep(10)
    assert inbox.done(10) == [1, 3, 6]
    assert inbox.done(20) == [2, 5]
    assert inbox.done(("user", 5)) == [4]
    # One at a time per chat, the chats at once: chat 10 takes 3 s, the whole batch too.
    assert [(item, at) for k, item, at in inbox.handled if k == 10] == [(1, 1), (3, 2), (6, 3)]
    assert max(at for _, _, at in inbox.handled) == 3
    assert inbox.reads == []  # nothing overflowed, nothing was read back


async def test_at_most_max_concurrent_chats_are_handled_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox()
    async with lanes_of(inbox, max_concurrent=2) as (lanes, keys):
        for item in range(1, 6):
            send(lanes, keys, inbox, 100 + item, item)  # five chats, one update each
        await trio.sleep(0.5)
        assert (inbox.running, lanes.statistics().active_lanes) == (2, 5)
        await trio.sleep(10)
    assert inbox.most_running == 2
    assert sorted(at for _, _, at in inbox.handled) == [1, 1, 2, 2, 3]


async def test_a_lane_idle_for_idle_seconds_is_reaped_and_comes_back_on_demand(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox()
    async with lanes_of(inbox, idle=30) as (lanes, keys):
        send(lanes, keys, inbox, 10, 1)
        send(lanes, keys, inbox, 20, 2)
        await trio.sleep(1 + 29.5)  # handled at t=1, idle since then
        assert lanes.statistics().active_lanes == 2
        send(lanes, keys, inbox, 20, 3)  # chat 20 is busy again: only chat 10 goes
        await trio.sleep(1)  # t=31.5: chat 10 idle for 30.5 s
        stats = lanes.statistics()
        assert (stats.active_lanes, stats.lanes_reaped) == (1, 1)
        assert not lanes.idle
        with trio.fail_after(40):
            await lanes.wait_idle()
        assert trio.current_time() == 31.5 + 30  # chat 20's update was done at 31.5
        assert lanes.idle
        assert lanes.statistics().lanes_reaped == 2
        send(lanes, keys, inbox, 10, 4)  # a reaped chat gets a new lane
        assert not lanes.idle
        await trio.sleep(2)
    assert inbox.done(10) == [1, 4]
    assert inbox.done(20) == [2, 3]


def test_an_update_arriving_as_the_idle_time_ends_is_not_lost() -> None:
    """The lane's idle wait and the update's dispatch end in the same instant; Trio shuffles
    the tasks of a scheduling batch, so either runs first. Whichever does, 2 is handled."""
    kept = 0
    for _ in range(30):
        kept += trio.run(_arrives_as_idle_ends, clock=trio.testing.MockClock(autojump_threshold=0))
    # The lane saw the update at the end of its wait (and was kept) in some runs; in the
    # others it was reaped first and the update opened a new lane.
    assert 0 < kept < 30


async def _arrives_as_idle_ends() -> int:
    inbox = Inbox(work=0)
    async with lanes_of(inbox, idle=30) as (lanes, keys):
        send(lanes, keys, inbox, 10, 1)
        await trio.sleep_until(30)  # the lane's idle wait ends now too
        send(lanes, keys, inbox, 10, 2)
        await trio.sleep(1)
        assert inbox.done(10) == [1, 2]
        kept = lanes.statistics().lanes_reaped == 0
        await trio.sleep(60)
        assert lanes.idle
    return int(kept)


async def test_close_finishes_the_update_in_hand_and_leaves_the_rest_to_the_inbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox(work=5)
    async with trio.open_nursery() as nursery, lanes_of(inbox) as (lanes, keys):
        for item in range(1, 4):
            send(lanes, keys, inbox, 10, item)
        send(lanes, keys, inbox, 20, 4)
        await trio.sleep(1)
        closed = trio.Event()

        async def close() -> None:
            await lanes.close()
            closed.set()

        nursery.start_soon(close)
        await trio.testing.wait_all_tasks_blocked()
        assert not closed.is_set()  # waits for the two updates in hand
        with pytest.raises(
            RuntimeError, match=r"^chat lanes are closing; no update can be dispatched now$"
        ):
            lanes.dispatch_nowait(10, 9)
        await closed.wait()
        assert trio.current_time() == 5
        assert lanes.idle
    assert [item for _, item, _ in inbox.handled] in ([1, 4], [4, 1])


async def test_a_full_lane_keeps_buffer_updates_and_reads_the_rest_back_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox()
    async with lanes_of(inbox, buffer=3) as (lanes, keys):
        for item in range(1, 11):
            send(lanes, keys, inbox, 10, item)
        send(lanes, keys, inbox, 20, 11)  # another chat is not held up
        stats = lanes.statistics()
        assert (stats.queued_updates, stats.overflowing_lanes) == (3 + 1, 1)
        await trio.sleep(1.5)
        assert inbox.done(20) == [11]
        await trio.sleep(20)
        assert inbox.done(10) == list(range(1, 11))
        stats = lanes.statistics()
        assert (stats.overflowing_lanes, stats.queued_updates) == (0, 0)
        # Read back after the cursor, a buffer at a time, until a read came back short.
        assert inbox.reads == [(10, 3, 3), (10, 6, 3), (10, 9, 3)]
        assert stats.refills == 3
        send(lanes, keys, inbox, 10, 12)  # caught up: back in memory, no read
        await trio.sleep(2)
        assert inbox.done(10)[-1] == 12
        assert lanes.statistics().refills == 3


async def test_a_read_back_that_returns_a_full_buffer_reads_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox()
    async with lanes_of(inbox, buffer=2) as (lanes, keys):
        for item in range(1, 8):
            send(lanes, keys, inbox, 10, item)  # 2 in memory, 3..7 left to the inbox
        await trio.sleep(30)
        # 3..4 and 5..6 were not all there was; 7 was the last.
        assert inbox.reads == [(10, 2, 2), (10, 4, 2), (10, 6, 2)]
        assert lanes.statistics().overflowing_lanes == 0
    assert inbox.done(10) == [1, 2, 3, 4, 5, 6, 7]


async def test_a_second_dispatch_of_any_of_the_last_two_buffers_is_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox(work=0.1)
    async with lanes_of(inbox, buffer=2) as (lanes, keys):
        for item in range(1, 6):
            send(lanes, keys, inbox, 10, item)
            await trio.sleep(1)  # each is handled before the next: the lane never fills
        for item in (2, 3, 4, 5):  # the last 2 x buffer positions taken: not again
            lanes.dispatch_nowait(10, item)
        await trio.sleep(1)
        assert inbox.done(10) == [1, 2, 3, 4, 5]
        # Memory stays bounded: the lane remembers only those 4, so 1 would be taken again.
        lanes.dispatch_nowait(10, 1)
        await trio.sleep(1)
    assert inbox.done(10) == [1, 2, 3, 4, 5, 1]


async def test_an_update_dispatched_while_the_lane_overflows_waits_in_the_inbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox()
    async with lanes_of(inbox, buffer=1) as (lanes, keys):
        send(lanes, keys, inbox, 10, 1)
        send(lanes, keys, inbox, 10, 2)  # full: left to the inbox
        stats = lanes.statistics()
        assert (stats.queued_updates, stats.overflowing_lanes) == (1, 1)
        await trio.sleep(0.5)  # 1 is in hand, the lane's memory is empty...
        assert lanes.statistics().queued_updates == 0
        send(lanes, keys, inbox, 10, 3)  # ...but 3 must not overtake 2
        assert lanes.statistics().queued_updates == 0
        await trio.sleep(10)
    assert inbox.done(10) == [1, 2, 3]


async def test_dispatch_returns_at_once_after_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox(work=100)
    async with lanes_of(inbox, buffer=1) as (lanes, keys):
        for item in range(1, 4):
            keys[item] = 10
            inbox.commit(10, item)
            await lanes.dispatch(10, item)  # the lane is busy and full: still no wait
        assert trio.current_time() == 0
        with trio.CancelScope() as scope:
            scope.cancel()
            keys[4] = 20
            inbox.commit(20, 4)
            await lanes.dispatch(20, 4)
        assert scope.cancelled_caught  # a checkpoint: cancellation is seen...
        assert lanes.statistics().active_lanes == 2  # ...after the update was dispatched
        await trio.sleep(400)
    assert inbox.done(10) == [1, 2, 3]
    assert inbox.done(20) == [4]


async def test_a_lane_keeps_64_updates_in_memory_unless_told_otherwise(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The bot's lanes use the default: 64 updates of a chat in memory, the rest in the inbox.
    inbox = Inbox()
    keys: dict[int, Hashable] = {}

    async def process(item: int) -> None:
        await trio.sleep(inbox.work)
        inbox.handled.append((keys[item], item, trio.current_time()))

    async with trio.open_nursery() as nursery:
        lanes = ChatLanes[int](
            nursery,
            process,
            max_concurrent=8,
            idle_seconds=600,
            refill=inbox.refill,
            position=lambda item: item,
        )
        for item in range(1, 67):
            send(lanes, keys, inbox, 10, item)
        stats = lanes.statistics()
        assert (stats.queued_updates, stats.overflowing_lanes) == (64, 1)
        await trio.sleep(0.5)
        stats = lanes.statistics()
        assert (stats.busy_lanes, stats.queued_updates) == (1, 63)  # 1 in hand
        await trio.sleep(100)
        stats = lanes.statistics()
        # All done; the lane lives on (not idle for long enough) but is no longer busy.
        assert (stats.active_lanes, stats.busy_lanes, stats.overflowing_lanes) == (1, 0, 0)
        assert inbox.reads == [(10, 64, 64)]
        await lanes.close()
    assert inbox.done(10) == list(range(1, 67))


async def test_an_update_committed_while_a_read_back_is_in_flight_is_read_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The read's snapshot is taken before update 3 commits; the read comes back "that was
    # all", but 3 was left to the inbox meanwhile: the lane reads once more.
    inbox = Inbox(read_time=0.5)
    async with lanes_of(inbox, buffer=1) as (lanes, keys):
        send(lanes, keys, inbox, 10, 1)
        send(lanes, keys, inbox, 10, 2)  # full: left to the inbox
        await trio.sleep_until(1.2)  # 1 done at t=1; the read after it is in flight
        assert inbox.reads == [(10, 1, 1)]
        send(lanes, keys, inbox, 10, 3)
        await trio.sleep(10)
        assert inbox.done(10) == [1, 2, 3]
        assert inbox.reads == [(10, 1, 1), (10, 2, 1)]
        assert lanes.statistics().overflowing_lanes == 0


async def test_a_late_dispatch_of_an_update_a_read_back_took_is_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox()
    async with lanes_of(inbox, buffer=2) as (lanes, keys):
        for item in (1, 2, 3):
            send(lanes, keys, inbox, 10, item)  # 3 is left to the inbox
        for item in (4, 5):  # committed; their dispatches come late
            keys[item] = 10
            inbox.commit(10, item)
        await trio.sleep(10)
        assert inbox.done(10) == [1, 2, 3, 4, 5]  # 3..5 read back
        assert inbox.reads == [(10, 2, 2), (10, 4, 2)]
        for item in (2, 3, 4, 5):  # the dispatches of what the read-backs took, or again
            lanes.dispatch_nowait(10, item)
        await trio.sleep(10)
        assert inbox.done(10) == [1, 2, 3, 4, 5]
        lanes.dispatch_nowait(10, 1)  # remembered are only the last 2 x buffer: taken again
        await trio.sleep(10)
    assert inbox.done(10) == [1, 2, 3, 4, 5, 1]


async def test_a_redrive_of_the_update_at_the_cursor_during_a_read_back_is_handled_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 1 was handled (and dead-lettered); the lane is reading back after it when an operator
    # redrives it: the read-back only brings what comes after 1, so the lane must queue it.
    inbox = Inbox(read_time=0.5)
    async with lanes_of(inbox, buffer=1) as (lanes, keys):
        send(lanes, keys, inbox, 10, 1)
        send(lanes, keys, inbox, 10, 2)  # left to the inbox
        await trio.sleep_until(1.2)
        assert inbox.reads == [(10, 1, 1)]  # in flight
        lanes.redrive_nowait(10, 1)
        await trio.sleep(10)
    assert inbox.done(10) == [1, 1, 2]


async def test_a_later_update_redriven_during_a_read_back_is_read_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox(read_time=0.5)
    async with lanes_of(inbox, buffer=1) as (lanes, keys):
        for item in (1, 2, 3):
            send(lanes, keys, inbox, 10, item)  # 2 and 3 left to the inbox
        # 1 done at t=1, read back until 1.5, 2 done at 2.5: the read after 2 is in flight.
        await trio.sleep_until(2.7)
        assert inbox.reads == [(10, 1, 1), (10, 2, 1)]
        # 5 (dead-lettered before a restart) is made undone again after the read's snapshot.
        keys[5] = 10
        inbox.commit(10, 5)
        lanes.redrive_nowait(10, 5)
        await trio.sleep(10)
        assert inbox.done(10) == [1, 2, 3, 5]
        assert lanes.statistics().overflowing_lanes == 0


async def test_a_redrive_leaves_the_lane_remembering_its_last_two_buffers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox(work=0.1)
    async with lanes_of(inbox, buffer=2) as (lanes, keys):
        keys.update({item: 10 for item in range(6)})
        for item in (2, 3):
            send(lanes, keys, inbox, 10, item)
            await trio.sleep(1)
        lanes.redrive_nowait(10, 1)  # taken again: remembered beside 2 and 3
        await trio.sleep(1)
        for item in (2, 3, 1):  # second dispatches of those: skipped
            lanes.dispatch_nowait(10, item)
        await trio.sleep(1)
        assert inbox.done(10) == [2, 3, 1]
        for item in (4, 5):
            send(lanes, keys, inbox, 10, item)
            await trio.sleep(1)
        lanes.redrive_nowait(10, 0)  # the lane remembers 1, 4, 5 and 0 now: 2 x buffer
        await trio.sleep(1)
        for item in (1, 4, 5, 0):
            lanes.dispatch_nowait(10, item)
        await trio.sleep(1)
        assert inbox.done(10) == [2, 3, 1, 4, 5, 0]
        lanes.dispatch_nowait(10, 3)  # forgotten (memory is bounded): taken again
        await trio.sleep(1)
    assert inbox.done(10) == [2, 3, 1, 4, 5, 0, 3]
