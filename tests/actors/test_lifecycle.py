"""The bot actor's lifecycle: one table of legal transitions, one owner of a suspension."""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import ActorState, BotStatus, LifecycleError
from actors.lifecycle import TRANSITIONS, check_transition
from actors.simulator import SimulatedBotApi
from tests.admin.helpers import admin_fleet
from tests.harness import running_fleet

ILLEGAL = [
    (current, target)
    for current, target in itertools.product(ActorState, ActorState)
    if target not in TRANSITIONS[current]
]


def test_every_state_has_a_way_out_and_suspended_only_leaves_by_resuming() -> None:
    assert set(TRANSITIONS) == set(ActorState)
    assert all(TRANSITIONS[state] for state in ActorState)
    assert TRANSITIONS[ActorState.SUSPENDED] == {ActorState.IDLE}
    # Only an idle bot starts: never a second incarnation beside a running one.
    assert [s for s in ActorState if ActorState.STARTING in TRANSITIONS[s]] == [ActorState.IDLE]


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_an_illegal_transition_is_a_runtime_error_saying_what_to_do(
    current: ActorState, target: ActorState
) -> None:
    with pytest.raises(RuntimeError, match=f"^bot 1001 cannot go from {current.value} to "):
        check_transition(1001, current, target)


def test_the_sentence_names_the_bot_both_states_and_the_way_out() -> None:
    with pytest.raises(LifecycleError) as caught:
        check_transition(1001, ActorState.SUSPENDED, ActorState.RUNNING)
    assert str(caught.value) == "bot 1001 cannot go from suspended to running: resume it first"


async def test_a_suspended_bot_cannot_be_started_and_nobody_else_sets_its_state(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_fleet(tmp_path / "l.db", [1]) as fleet:
        await trio.sleep(1)
        actor = fleet.handle.fleet.get(1)
        assert actor.statistics().state is ActorState.RUNNING
        await fleet.handle.fleet.suspend(1, "unpaid")
        assert actor.statistics().state is ActorState.SUSPENDED
        with pytest.raises(LifecycleError) as caught:
            await actor.run()
        assert str(caught.value) == "bot 1 cannot go from suspended to starting: resume it first"
        with pytest.raises(AttributeError):
            actor.state = ActorState.IDLE  # type: ignore[misc]
        with pytest.raises(LifecycleError, match=r"^bot 1 is already suspended \(unpaid\)"):
            actor.suspend("again")
        await fleet.handle.fleet.resume(1)
        assert actor.statistics().state is ActorState.RUNNING
        assert actor.statistics().lanes is not None  # running again: its chat lanes show
        with pytest.raises(LifecycleError, match=r"^bot 1 is not suspended"):
            actor.resume()
        # What the event stream (and the dashboard) told of it, each at the wall clock's time.
        # (The new incarnation's "started" is announced by its task, whenever it runs.)
        told = [
            e.to_json()
            for e in fleet.handle.metrics.recent_events()
            if e.user_id == 1 and e.to_json().get("event") != "started"
        ]
        at = 1_800_000_001.0
        assert told == [
            {"type": "lifecycle", "user_id": 1, "at": at, "event": "suspended", "detail": "unpaid"},
            {
                "type": "status",
                "user_id": 1,
                "at": at,
                "previous": "healthy",
                "status": "suspended",
                "reason": "unpaid",
            },
            {"type": "lifecycle", "user_id": 1, "at": at, "event": "resumed", "detail": ""},
            {
                "type": "status",
                "user_id": 1,
                "at": at,
                "previous": "suspended",
                "status": "healthy",
                "reason": "resumed",
            },
        ]
    suspended = [
        (r.levelno, r.getMessage()) for r in caplog.records if "suspended:" in r.getMessage()
    ]
    assert suspended == [(logging.ERROR, "bot 1 suspended: unpaid")]


async def test_a_suspension_restored_at_start_resumes_like_any_other(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with running_fleet(db, [1]) as fleet:
        await trio.sleep(1)
        await fleet.handle.fleet.suspend(1, "unpaid")
    async with running_fleet(db, [1]) as fleet:
        await trio.sleep(1)
        actor = fleet.handle.fleet.get(1)
        assert (actor.state, actor.status()) == (ActorState.SUSPENDED, BotStatus.SUSPENDED)
        await fleet.handle.fleet.resume(1)
        await trio.sleep(1)
        assert actor.statistics().state is ActorState.RUNNING
        told = [
            (e.to_json()["previous"], e.to_json()["status"], e.to_json()["reason"])
            for e in fleet.handle.metrics.recent_events()
            if e.user_id == 1 and e.kind == "status"
        ]
        assert told == [("suspended", "healthy", "resumed")]
        # It polls again: the offset it shows is the one it stored with the update.
        fleet.api.send_user_message(fleet.tokens[1], 7, "back?")
        await trio.sleep(5)
        offset = actor.statistics().offset
        assert offset is not None and offset == await fleet.handle.store.load_offset(1)


async def test_a_restarted_bot_polls_from_the_offset_it_stored(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    api = SimulatedBotApi(rng=random.Random(6), record=True)
    async with running_fleet(db, [1], api=api) as fleet:
        api.send_user_message(fleet.tokens[1], 7, "hello")
        await trio.sleep(5)
        stored = await fleet.handle.store.load_offset(1)
        assert stored is not None
        bot_id = fleet.bot_id(1)
    restarted_at = trio.current_time()
    async with running_fleet(db, [1], api=api):
        await trio.sleep(1)
    polls = [
        c
        for c in api.calls
        if c.method == "getUpdates" and c.bot_id == bot_id and c.time >= restarted_at
    ]
    # The first poll after the restart confirms what the last run stored, no earlier.
    assert polls[0].params.get("offset") == stored


async def test_a_revoked_token_is_announced_once_and_stored_as_the_bot_shows_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(6))
    async with running_fleet(tmp_path / "l.db", [1, 2], api=api) as fleet:
        await trio.sleep(1)
        api.revoke(fleet.tokens[2])
        for n in range(3):
            api.send_user_message(fleet.tokens[2], 9, f"hello {n}")
        await trio.sleep(60)
        actor = fleet.handle.fleet.get(2)
        assert actor.state is ActorState.SUSPENDED
        reason = actor.suspended_reason
        assert reason is not None and "Unauthorized" in reason
        announced = [
            e
            for e in fleet.handle.metrics.recent_events()
            if e.user_id == 2 and e.kind == "lifecycle" and e.to_json()["event"] == "suspended"
        ]
        assert len(announced) == 1
        await fleet.handle.store.flush()
        record = await fleet.handle.store.get_bot(2)
        assert record is not None and record.suspended_reason == reason
    # The next start restores the suspension rather than polling with the revoked token.
    async with running_fleet(tmp_path / "l.db", [1, 2], api=api) as fleet:
        await trio.sleep(1)
        actor = fleet.handle.fleet.get(2)
        assert (actor.state, actor.suspended_reason) == (ActorState.SUSPENDED, reason)


async def test_the_admin_api_answers_409_with_the_actors_own_sentence(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        resumed = await admin.http.post("/admin/bots/1/resume")
        assert resumed.status_code == 409
        assert resumed.json()["error"]["message"] == (
            "bot 1 is not suspended; only a suspended bot resumes"
        )
        assert (
            await admin.http.post("/admin/bots/1/suspend", json={"reason": "unpaid"})
        ).is_success
        again = await admin.http.post("/admin/bots/1/suspend")
        assert again.status_code == 409
        assert again.json()["error"]["message"] == (
            "bot 1 is already suspended (unpaid); resume it first"
        )


async def test_a_suspension_announced_while_the_store_is_full_is_stored_later(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with running_fleet(tmp_path / "l.db", [1]) as fleet:
        await trio.sleep(1)
        store = fleet.handle.store
        # Fill the write queue without yielding, so the writer cannot take anything out.
        with pytest.raises(trio.WouldBlock):
            while True:
                store.writer.submit_nowait(lambda conn: None)
        fleet.handle.fleet.get(1).suspend("unpaid")  # as the supervisor would, synchronously
        await fleet.handle.fleet.save_suspensions()
        record = await store.get_bot(1)
        assert record is not None and record.suspended_reason == "unpaid"
