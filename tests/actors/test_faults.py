"""The resilience contract end to end: the real daemon on a faulty simulated Bot API.

Every test runs the whole in-process daemon (tests/harness.py) on ``autojump_clock`` and judges
it by what the simulated Telegram users saw (``api.report()``) and what an operator reads
(bot statistics, dead letters, statuses).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import (
    BotStatus,
    BreakerChanged,
    BreakerConfig,
    BreakerState,
    ChatLimiters,
    CircuitBreaker,
    CircuitOpenError,
    FloodGate,
    GlobalRateLimiter,
    HealthConfig,
    HealthTracker,
    LimitsConfig,
    RequestPipeline,
    RetryConfig,
    RetryCounters,
    StatusChanged,
    TelegramError,
    TokenBucket,
    TransportError,
)
from actors.simulator import CallRecord, FaultProfile, SimulatedBotApi
from supervisor import Config
from tests.harness import EPOCH, Fleet, running_fleet

SLOW_ECHO = "tests.handlers_for_tests:slow_echo"  # replies 100 s after the update

# Chats of every bot in the fleet tests: two private chats and one group.
CHATS = (11, 12, -13)
# Messages queued at once per chat in the outage test: more than each chat's limit allows at once.
BACKLOG = {11: 15, 12: 15, -13: 25}


def chat_type(chat_id: int) -> str:
    return "private" if chat_id > 0 else "group"


def with_handler(handler: str) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        bots = tuple(b.model_copy(update={"handler": handler}) for b in config.bots)
        return config.model_copy(update={"bots": bots})

    return configure


async def send_stream(fleet: Fleet, user_ids: Iterable[int], *, rounds: int, every: float) -> int:
    """Every chat of every bot gets one message per round, ``every`` seconds apart."""
    sent = 0
    user_ids = list(user_ids)
    for n in range(rounds):
        for uid in user_ids:
            for chat in CHATS:
                fleet.api.send_user_message(
                    fleet.tokens[uid], chat, f"u{uid} c{chat} n{n}.", chat_type=chat_type(chat)
                )
                sent += 1
        await trio.sleep(every)
    return sent


async def wait_answered(
    api: SimulatedBotApi, expected: int, *, limit: float, step: float = 10
) -> None:
    """Sleep in steps until ``expected`` messages are answered or ``limit`` seconds passed."""
    # The simulator has no event to wait on; its report is cheap to read every step.
    for _ in range(math.ceil(limit / step)):
        if api.report().answered >= expected:
            return
        await trio.sleep(step)


def calls_of(api: SimulatedBotApi, bot_id: int) -> list[CallRecord]:
    return [c for c in api.calls if c.bot_id == bot_id]


def calls_while_gated(
    calls: Iterable[CallRecord], *, retry_after: float, latency: float
) -> list[tuple[CallRecord, CallRecord]]:
    """``(429, call)`` pairs: a call of the same bot that reached the server while the 429's
    ``retry_after`` was running (from the moment the client got the 429)."""
    by_bot: dict[int | None, list[CallRecord]] = {}
    for call in calls:
        by_bot.setdefault(call.bot_id, []).append(call)
    found: list[tuple[CallRecord, CallRecord]] = []
    for bot_calls in by_bot.values():
        for limited in (c for c in bot_calls if c.status == 429):
            closed_from = limited.time + latency
            open_at = closed_from + retry_after
            found.extend(
                (limited, c) for c in bot_calls if closed_from + 1e-9 < c.time < open_at - 1e-9
            )
    return found


async def test_twenty_percent_transient_faults_lose_no_reply_and_duplicate_none(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(11), record=True, call_log_size=100_000)
    # 20% of every call fails, getUpdates included: 5xx, refused connections and 429s.
    # (Timeouts and drops are ambiguous for sendMessage; they have their own test below.)
    api.set_faults(
        FaultProfile(
            error_rate_5xx=0.10,
            connect_error_rate=0.08,
            rate_limit_rate=0.02,
            retry_after=2,
            latency=0.05,
        )
    )
    users = list(range(1, 101))
    async with running_fleet(tmp_path / "f.db", users, api=api) as fleet:
        sent = await send_stream(fleet, users, rounds=10, every=5)
        await wait_answered(api, sent, limit=900)
        report = api.report()
        stats = api.statistics()
        bots = [fleet.handle.fleet.get(uid).statistics() for uid in users]
        calls = list(api.calls)

    delivered = report.answered / report.user_messages
    assert report.user_messages == sent == 3000
    assert delivered >= 0.999, report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order == 0, report.summary()
    # The faults really were there, at the rate asked, and the retries really did the work.
    injected = stats.injected_5xx + stats.connect_errors + stats.injected_429
    assert 0.17 <= injected / stats.calls <= 0.23
    assert sum(b.retry.recovered for b in bots) > 100
    assert sum(b.dead_letters for b in bots) == 0
    # Some replies failed more often than their quick retries allow (1 try + 2 retries) and
    # were parked and sent again, still exactly once.
    tries: dict[tuple[int | None, str], int] = {}
    for call in calls:
        if call.method == "sendMessage":
            key = (call.bot_id, str(call.params["text"]))
            tries[key] = tries.get(key, 0) + 1
    assert len(tries) == sent
    assert max(tries.values()) > 3
    # Every 429 closed its bot's flood gate: no call of that bot until retry_after had passed.
    assert len(calls) < 100_000  # the call log kept every finished call
    assert stats.injected_429 > 20
    assert calls_while_gated(calls, retry_after=2, latency=0.05) == []


async def test_a_five_minute_outage_loses_no_reply_within_its_deadline(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(12), record=True)
    api.set_faults(FaultProfile(latency=0.05))
    users = [1, 2, 3, 4, 5]
    async with running_fleet(tmp_path / "o.db", users, api=api) as fleet:
        # A backlog in every chat: a private chat takes one reply a second and a group 20 a
        # minute, so replies are still queued or in flight when the API goes down at t=10,
        # the group's waiting for their chat's limit until t=60.
        for uid in users:
            for chat in CHATS:
                for n in range(BACKLOG[chat]):
                    api.send_user_message(
                        fleet.tokens[uid], chat, f"u{uid} c{chat} n{n}.", chat_type=chat_type(chat)
                    )
        await trio.sleep_until(10)
        outage_end = 10 + 300
        api.outage(until=outage_end)
        await trio.sleep(1)  # calls that arrived before t=10 have their answers
        answered_before = api.report().answered
        group_before = [
            c for c in api.calls if c.method == "sendMessage" and c.params["chat_id"] == -13
        ]
        # Users keep writing during the outage.
        for at in (100, 200):
            await trio.sleep_until(at)
            for uid in users:
                for chat in CHATS:
                    api.send_user_message(
                        fleet.tokens[uid], chat, f"u{uid} c{chat} t{at}.", chat_type=chat_type(chat)
                    )
        await trio.sleep_until(outage_end)
        assert api.report().answered == answered_before  # nothing got through the outage
        await wait_answered(api, len(users) * (sum(BACKLOG.values()) + 2 * len(CHATS)), limit=600)
        report = api.report()
        bots = [fleet.handle.fleet.get(uid).statistics() for uid in users]
        sent_after = [c.time for c in api.calls if c.method == "sendMessage" and c.status == 200]
        calls = list(api.calls)
        openings = [
            (e.user_id, e.at - EPOCH)
            for e in fleet.handle.metrics.recent_events()
            if isinstance(e, BreakerChanged) and e.state == "open"
        ]
        bot_ids = {uid: fleet.bot_id(uid) for uid in users}
        # The breakers closed again; the outage's failures age out of the 300 s health window.
        assert all(b.breaker.state is BreakerState.CLOSED for b in bots)
        await trio.sleep(300)
        statuses = {fleet.handle.fleet.get(uid).status() for uid in users}
        assert statuses == {BotStatus.HEALTHY}

    # The outage really caught replies in flight, and five of each group's waiting for the
    # group's limit.
    assert 0 < answered_before < len(users) * (sum(BACKLOG.values()) - 5)
    assert len(group_before) == len(users) * 20
    assert report.user_messages == len(users) * (sum(BACKLOG.values()) + 2 * len(CHATS))
    assert report.all_answered_once_in_order, report.summary()
    assert sum(b.dead_letters for b in bots) == 0
    # Answered promptly once Telegram is back: within one breaker open period (60 s) and the
    # chats' own pace, not after some long back-off.
    assert max(sent_after) <= outage_end + 60 + 10
    # An open breaker kept its bot off Telegram: no call for the 60 s after each opening,
    # then one probe. Without it each bot would have polled every few seconds.
    assert len(openings) >= 5 * len(users)
    for uid, opened in openings:
        during = [
            c
            for c in calls
            if c.bot_id == bot_ids[uid] and opened + 1e-3 < c.time < opened + 60 - 1e-3
        ]
        assert during == [], f"bot {uid}: calls while its breaker was open since {opened}"
    outage_calls = [c for c in calls if 10 < c.time < outage_end]
    assert len(outage_calls) <= len(users) * 20


async def test_replies_past_their_delivery_deadline_are_dead_lettered_not_sent_late(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(13), record=True)
    api.set_faults(FaultProfile(latency=0.05))
    users = [1, 2]
    async with running_fleet(
        tmp_path / "d.db", users, api=api, retry=RetryConfig(delivery_deadline=120)
    ) as fleet:
        for uid in users:
            for chat in CHATS:
                for n in range(6):
                    api.send_user_message(
                        fleet.tokens[uid], chat, f"u{uid} c{chat} n{n}.", chat_type=chat_type(chat)
                    )
        await trio.sleep(2.5)
        outage_end = trio.current_time() + 300
        api.outage(until=outage_end)
        unanswered_at_outage = api.report().unanswered
        await trio.sleep(100)
        for uid in users:
            api.send_user_message(fleet.tokens[uid], 11, f"u{uid} during", chat_type="private")
        await trio.sleep_until(outage_end + 120)
        report = api.report()
        bots = {uid: fleet.handle.fleet.get(uid).statistics() for uid in users}
        store = fleet.handle.store
        letters = {uid: await store.list_dead_letters(uid) for uid in users}
        pending = {uid: await store.inbox_pending(uid) for uid in users}

    # The replies caught by the outage waited their 120 s and were then given up, each
    # counted, logged and stored with its reason; none was sent late.
    assert unanswered_at_outage == 2 * 2 * 3  # 3 of 6 queued in each private chat
    assert report.unanswered == unanswered_at_outage
    assert report.duplicates == 0
    for uid in users:
        assert bots[uid].dead_letters == 6
        assert len(letters[uid]) == 6
        assert {letter.chat_id for letter in letters[uid]} == {11, 12}
        for letter in letters[uid]:
            assert "delivery deadline passed" in letter.reason
            # Given up at the deadline, not long after (times are wall clock).
            assert EPOCH + 120 <= letter.recorded_at <= EPOCH + 125
        assert pending[uid] == []  # done: not dispatched again after a restart
    # The message sent during the outage entered the inbox only after it, so its own deadline
    # had not passed: it was answered.
    for uid in users:
        bot_report = report.bot(fleet.bot_id(uid))
        assert bot_report.user_messages == 19
        assert bot_report.answered == 19 - 6


async def test_a_burst_of_429s_is_waited_out_exactly(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(14), record=True)
    # slow_echo replies 100 s after the update: the bot is then inside a long poll (95..125).
    async with running_fleet(
        tmp_path / "r.db", [1, 2], api=api, configure=with_handler(SLOW_ECHO)
    ) as fleet:
        token = fleet.tokens[1]
        await trio.sleep(5)
        api.send_user_message(token, 11, "patience")
        api.send_user_message(fleet.tokens[2], 11, "unaffected")
        await trio.sleep_until(100)
        # From t=100 every call of bot 1 is answered 429 "retry after 7", until t=120.
        api.set_faults(FaultProfile(rate_limit_rate=1.0, retry_after=7), token=token)
        await trio.sleep_until(120)
        api.set_faults(None, token=token)
        await trio.sleep_until(200)
        report = api.report()
        stats = fleet.handle.fleet.get(1).statistics()
        calls = calls_of(api, fleet.bot_id(1))
        other = calls_of(api, fleet.bot_id(2))

    sends = [(c.time, c.status) for c in calls if c.method == "sendMessage"]
    # Sent at 105 and refused; tried again exactly 7 s after each 429 (3 retries, the budget).
    assert sends == [(105, 429), (112, 429), (119, 429), (126, 200)]
    # The long poll that ended at 125 waited for the gate too: its successor went at 126.
    polls = [c.time for c in calls if c.method == "getUpdates" and 60 < c.time < 160]
    assert polls == [65, 95, 126, 156]
    assert calls_while_gated(calls, retry_after=7, latency=0) == []
    assert report.bot(fleet.bot_id(1)).answered == 1
    # 429s are throttling, not failures: the breaker stays closed and the bot healthy.
    assert stats.health.throttled == 3
    assert stats.health.failed_requests == 0
    assert stats.retry.retries_by_category["rate_limit"] == 3
    assert stats.retry.recovered == 1
    assert stats.breaker.state is BreakerState.CLOSED
    assert stats.status is BotStatus.HEALTHY
    # The other bot's reply did not wait for bot 1's flood gate.
    assert [(c.time, c.status) for c in other if c.method == "sendMessage"] == [(105, 200)]


def one_pipeline(
    *,
    global_limiter: GlobalRateLimiter | None = None,
    flood_gate: FloodGate | None = None,
    breaker: CircuitBreaker | None = None,
    limits: LimitsConfig | None = None,
) -> RequestPipeline:
    """One bot's pipeline, outside any fleet."""
    return RequestPipeline(
        user_id=1,
        breaker=breaker or CircuitBreaker(BreakerConfig()),
        retry=RetryConfig(),
        counters=RetryCounters(),
        bot_limiter=TokenBucket(30, 30),
        flood_gate=flood_gate or FloodGate(),
        chat_limiters=ChatLimiters(limits or LimitsConfig()),
        global_limiter=global_limiter or GlobalRateLimiter(25, 25),
        health=HealthTracker(HealthConfig(), wall_clock=lambda: EPOCH + trio.current_time()),
        rng=random.Random(1),
        on_suspend=lambda reason: None,
    )


async def test_a_call_waiting_for_its_global_token_respects_a_gate_closed_meanwhile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The fleet test above found this race; here it is on one pipeline, step by step.
    global_limiter = GlobalRateLimiter(rate=1, burst=1)
    flood_gate = FloodGate()
    pipeline = one_pipeline(global_limiter=global_limiter, flood_gate=flood_gate)
    sent: dict[str, list[float]] = {"poll": [], "reply": []}
    poll_answers: list[BaseException | None] = [
        TelegramError(
            method="getUpdates", error_code=429, description="Too Many Requests", retry_after=10
        ),
        None,
    ]

    async def poll() -> None:
        sent["poll"].append(trio.current_time())
        await trio.sleep(0.5)
        answer = poll_answers.pop(0)
        if answer is not None:
            raise answer

    async def reply() -> None:
        sent["reply"].append(trio.current_time())

    served: list[float] = []

    async def other_tenant() -> None:
        await trio.sleep(0.9)
        await global_limiter.acquire(2)
        served.append(trio.current_time())

    await global_limiter.acquire(3)  # the only token until t=1
    async with trio.open_nursery() as nursery:
        # The reply passes the (open) gate at t=0 and waits for the global token (t=1); the
        # poll gets a 429 "retry after 10" at t=0.5, which closes the gate until t=10.5.
        nursery.start_soon(partial(pipeline.call, "sendMessage", reply, chat_id=5))
        nursery.start_soon(partial(pipeline.call, "getUpdates", poll, rate_limited=False))
        nursery.start_soon(other_tenant)

    assert sent["poll"] == [0, 10.5]
    assert sent["reply"] == [10.5]  # not at t=1, while the gate was closed
    assert served == [1]  # the reply's unused token went to the next tenant at once
    assert global_limiter.statistics().handed_on == 1


async def test_a_call_waiting_for_its_chat_limit_is_refused_if_the_breaker_opened_meanwhile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The outage test above found this: a reply admitted while the breaker was closed waited
    # a minute for its group's limit and then went out although the breaker had opened.
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1))
    global_limiter = GlobalRateLimiter(25, 25)
    pipeline = one_pipeline(
        breaker=breaker,
        global_limiter=global_limiter,
        limits=LimitsConfig(group_chat_per_minute=1),
    )
    sent: list[float] = []

    async def reply() -> None:
        sent.append(trio.current_time())

    async def failing_poll() -> None:
        raise TransportError("connection refused", method="getUpdates", request_sent=False)

    refused: list[float] = []

    async def second_reply() -> None:
        try:
            await pipeline.call("sendMessage", reply, chat_id=-5)
        except CircuitOpenError:
            refused.append(trio.current_time())

    await pipeline.call("sendMessage", reply, chat_id=-5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(second_reply)  # admitted now, waits for the group until t=60
        await trio.sleep(10)
        # One refused connection opens it (threshold 1); the poll gives up at once.
        with pytest.raises(CircuitOpenError):
            await pipeline.call("getUpdates", failing_poll, rate_limited=False)
        assert breaker.state is BreakerState.OPEN  # until t=70

    assert sent == [0]
    assert refused == [60]
    assert global_limiter.statistics().granted == 1  # the refused call's token was given back


async def test_a_revoked_token_suspends_its_bot_on_the_first_401_and_no_other(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    latency = 0.05
    api = SimulatedBotApi(rng=random.Random(15), record=True, call_log_size=100_000)
    api.set_faults(FaultProfile(latency=latency))
    users = list(range(1, 101))
    revoked = 50
    others = [uid for uid in users if uid != revoked]
    async with running_fleet(tmp_path / "v.db", users, api=api) as fleet:
        sent = await send_stream(fleet, users, rounds=1, every=1)
        await wait_answered(api, sent, limit=120)
        actors = {uid: fleet.handle.fleet.get(uid) for uid in users}
        before = {uid: actors[uid].statistics() for uid in others}
        started = trio.current_time()
        api.revoke(fleet.tokens[revoked])
        await trio.sleep(1)
        assert actors[revoked].status() is BotStatus.SUSPENDED
        sent += await send_stream(fleet, users, rounds=1, every=1)
        await wait_answered(api, sent - len(CHATS), limit=120)
        await trio.sleep(120)
        after = {uid: actors[uid].statistics() for uid in others}
        suspended = actors[revoked].statistics()
        events = fleet.handle.metrics.recent_events()
        report = api.report()
        revoked_calls = calls_of(api, fleet.bot_id(revoked))

    unauthorized = [c for c in revoked_calls if c.status == 401]
    assert len(unauthorized) == 1  # suspended on the first 401 ...
    # ... and then silent (the 401 answered a long poll that began before the revocation).
    assert unauthorized[0].time < started
    assert [c for c in revoked_calls if c.time >= started] == []
    assert suspended.status is BotStatus.SUSPENDED
    assert "Unauthorized" in (suspended.health.suspended_reason or "")
    assert report.bot(fleet.bot_id(revoked)).answered == len(CHATS)  # only the first round
    # The other 99 answered everything and never left HEALTHY; their latency did not move.
    assert report.answered == sent - len(CHATS)
    assert report.duplicates == 0
    changed = {e.user_id for e in events if isinstance(e, StatusChanged)}
    assert changed == {revoked}
    for uid in others:
        assert after[uid].status is BotStatus.HEALTHY
        assert after[uid].breaker.state is BreakerState.CLOSED
        assert after[uid].health.failed_requests == 0
        assert after[uid].replies_sent == 2 * len(CHATS)
        ema_before = before[uid].health.ema_latency_ms
        ema_after = after[uid].health.ema_latency_ms
        assert ema_before is not None and ema_after is not None
        assert abs(ema_before - latency * 1000) < 1e-6
        assert abs(ema_after - ema_before) < 1e-6
    assert trio.current_time() > started  # the run really went on after the revocation


async def test_ambiguous_sends_are_counted_as_sent_and_never_repeated(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(16), record=True, call_log_size=100_000)
    # Timeouts and dropped connections: the request reached the server, the answer was lost,
    # and half of such sendMessage calls did deliver their message.
    api.set_faults(
        FaultProfile(timeout_rate=0.05, drop_rate=0.05, deliver_before_fault_rate=0.5, latency=0.05)
    )
    users = list(range(1, 21))
    async with running_fleet(tmp_path / "a.db", users, api=api) as fleet:
        sent = await send_stream(fleet, users, rounds=5, every=5)
        await trio.sleep(300)
        report = api.report()
        bots = {uid: fleet.handle.fleet.get(uid).statistics() for uid in users}
        calls = list(api.calls)

    lost_sends = [
        c for c in calls if c.method == "sendMessage" and c.fault is not None and not c.delivered
    ]
    ambiguous = [c for c in calls if c.method == "sendMessage" and c.fault is not None]
    assert report.user_messages == sent
    assert len(ambiguous) > 10
    assert report.duplicates == 0, report.summary()
    # Each ambiguous send was counted once, as sent, and not retried: a reply is missing
    # exactly when the server did not deliver that one attempt.
    assert sum(b.ambiguous_sends for b in bots.values()) == len(ambiguous)
    assert sum(b.retry.uncertain for b in bots.values()) == len(ambiguous)
    assert sum(b.replies_sent for b in bots.values()) == sent
    assert report.unanswered == len(lost_sends)
    sends_per_text: dict[tuple[int | None, str], int] = {}
    for c in calls:
        if c.method == "sendMessage":
            key = (c.bot_id, str(c.params["text"]))
            sends_per_text[key] = sends_per_text.get(key, 0) + 1
    assert max(sends_per_text.values()) == 1  # no reply was ever attempted twice


async def test_retrying_uncertain_sends_is_opt_in_because_it_duplicates_messages(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(16))
    api.set_faults(
        FaultProfile(timeout_rate=0.05, drop_rate=0.05, deliver_before_fault_rate=0.5, latency=0.05)
    )
    users = list(range(1, 21))
    async with running_fleet(
        tmp_path / "u.db", users, api=api, retry=RetryConfig(retry_uncertain_sends=True)
    ) as fleet:
        sent = await send_stream(fleet, users, rounds=5, every=5)
        await trio.sleep(300)
        report = api.report()

    # Every reply arrives, but some twice: what the default (not retrying) prevents.
    assert report.answered == sent
    assert report.duplicates > 0
