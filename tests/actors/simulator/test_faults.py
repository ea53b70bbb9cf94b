"""Injected faults: how often they happen, what the client sees, and what was delivered."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.testing

from actors.botapi import BotApiClient, BotApiError, ErrorCategory, TelegramError, TransportError
from actors.simulator import (
    FaultKind,
    FaultProfile,
    FloodLimits,
    OutageMode,
    SimulatedBotApi,
    SimulatedFault,
)
from tests.actors.conftest import TELEGRAM

CHAT = 777


@pytest.fixture
def chat(api: SimulatedBotApi, token: str) -> int:
    api.send_user_message(token, CHAT, "hi")
    return CHAT


async def outcome_counts(api: SimulatedBotApi, token: str, method: str, n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        try:
            status, _ = await api.handle(token, method, {"timeout": 0})
        except SimulatedFault as fault:
            counts[fault.kind.value] += 1
        else:
            counts[str(status)] += 1
    return counts


async def test_fault_rates_are_roughly_as_configured(api: SimulatedBotApi, token: str) -> None:
    api.set_faults(
        FaultProfile(
            connect_error_rate=0.05,
            error_rate_5xx=0.10,
            timeout_rate=0.05,
            drop_rate=0.05,
            conflict_409_rate=0.05,
            rate_limit_rate=0.10,
        )
    )
    n = 4000
    counts = await outcome_counts(api, token, "getUpdates", n)
    expected = {
        "connect_error": 0.05,
        "500": 0.10,
        "timeout": 0.05,
        "drop": 0.05,
        "409": 0.05,
        "429": 0.10,
        "200": 0.60,
    }
    for outcome, rate in expected.items():
        assert counts[outcome] == pytest.approx(rate * n, rel=0.2), outcome
    stats = api.statistics()
    assert (stats.injected_5xx, stats.injected_409, stats.injected_429) == (
        counts["500"],
        counts["409"],
        counts["429"],
    )
    assert (stats.connect_errors, stats.timeouts, stats.drops) == (
        counts["connect_error"],
        counts["timeout"],
        counts["drop"],
    )
    assert stats.calls == n and stats.calls_by_method["getUpdates"] == n


async def test_a_409_is_only_injected_into_get_updates(api: SimulatedBotApi, token: str) -> None:
    api.set_faults(FaultProfile(conflict_409_rate=1.0))
    assert await outcome_counts(api, token, "getMe", 50) == {"200": 50}
    assert await outcome_counts(api, token, "getUpdates", 50) == {"409": 50}


async def test_the_same_seed_gives_the_same_faults() -> None:
    runs = []
    for _ in range(2):
        api = SimulatedBotApi(rng=random.Random(11))
        secret = SimulatedBotApi.make_token(5, random.Random(1))
        api.add_bot(secret)
        api.set_faults(FaultProfile(error_rate_5xx=0.3, drop_rate=0.2))
        outcomes: list[int | str] = []
        for _ in range(100):
            try:
                outcomes.append((await api.handle(secret, "getMe", {}))[0])
            except SimulatedFault as fault:
                outcomes.append(fault.kind.value)
        runs.append(outcomes)
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 3


@pytest.mark.parametrize(
    ("profile", "category", "request_sent", "at"),
    [
        (FaultProfile(connect_error_rate=1), ErrorCategory.TRANSIENT_NETWORK, False, 0),
        (FaultProfile(drop_rate=1), ErrorCategory.TRANSIENT_NETWORK, True, 0),
        # The server never answers: the client's read timeout ends the call.
        (
            FaultProfile(timeout_rate=1),
            ErrorCategory.TRANSIENT_NETWORK,
            True,
            TELEGRAM.request_timeout,
        ),
    ],
    ids=["connect", "drop", "timeout"],
)
async def test_faults_without_an_answer_reach_the_client_as_transport_errors(
    api: SimulatedBotApi,
    client: BotApiClient,
    profile: FaultProfile,
    category: ErrorCategory,
    request_sent: bool,
    at: float,
    autojump_clock: trio.testing.MockClock,
) -> None:
    api.set_faults(profile)
    with pytest.raises(TransportError) as caught:
        await client.get_me()
    assert caught.value.category is category
    assert caught.value.request_sent is request_sent
    assert trio.current_time() == at


async def test_answered_faults_reach_the_client_as_telegram_errors(
    api: SimulatedBotApi, client: BotApiClient
) -> None:
    api.set_faults(FaultProfile(error_rate_5xx=1))
    with pytest.raises(TelegramError) as caught:
        await client.get_me()
    assert (caught.value.error_code, caught.value.category) == (
        500,
        ErrorCategory.TRANSIENT_NETWORK,
    )

    api.set_faults(FaultProfile(rate_limit_rate=1, retry_after=9))
    with pytest.raises(TelegramError) as caught:
        await client.get_me()
    assert caught.value.category is ErrorCategory.RATE_LIMIT
    assert caught.value.retry_after == 9
    assert caught.value.description == "Too Many Requests: retry after 9"

    api.set_faults(FaultProfile(conflict_409_rate=1))
    with pytest.raises(TelegramError) as caught:
        await client.get_updates(offset=None, timeout=0)
    assert caught.value.error_code == 409


@pytest.mark.parametrize(
    "profile", [FaultProfile(error_rate_5xx=1), FaultProfile(rate_limit_rate=1)]
)
async def test_a_refused_send_was_not_delivered(
    api: SimulatedBotApi, token: str, client: BotApiClient, chat: int, profile: FaultProfile
) -> None:
    api.set_faults(profile)
    with pytest.raises(TelegramError):
        await client.send_message(chat, "reply")
    assert api.report().replies == 0


@pytest.mark.parametrize("fault", ["timeout_rate", "drop_rate"])
@pytest.mark.parametrize("deliver", [0.0, 1.0])
async def test_a_timed_out_or_dropped_send_may_have_been_delivered(
    api: SimulatedBotApi,
    token: str,
    client: BotApiClient,
    chat: int,
    fault: str,
    deliver: float,
    autojump_clock: trio.testing.MockClock,
) -> None:
    rates = {"timeout_rate": 0.0, "drop_rate": 0.0, fault: 1.0}
    api.set_faults(
        FaultProfile(
            timeout_rate=rates["timeout_rate"],
            drop_rate=rates["drop_rate"],
            deliver_before_fault_rate=deliver,
        )
    )
    with pytest.raises(TransportError) as caught:
        await client.send_message(chat, "hi")
    assert caught.value.request_sent is True
    report = api.report().bot(api.bot(token).bot_id)
    assert (report.replies, report.answered) == ((1, 1) if deliver else (0, 0))
    assert api.statistics().delivered_before_fault == (1 if deliver else 0)
    (record,) = [c for c in api.calls if c.method == "sendMessage"]
    assert record.fault is FaultKind(fault.removesuffix("_rate"))
    assert record.delivered is bool(deliver)


async def test_about_half_of_the_uncertain_sends_are_delivered_by_default(
    api: SimulatedBotApi, token: str, client: BotApiClient, chat: int
) -> None:
    api.set_faults(FaultProfile(drop_rate=1.0))
    for _ in range(400):
        with pytest.raises(TransportError):
            await client.send_message(chat, "hi")
    assert api.statistics().replies == pytest.approx(200, rel=0.2)


async def test_a_faulted_poll_confirms_its_offset_but_loses_nothing(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    first = api.send_user_message(token, CHAT, "one")
    second = api.send_user_message(token, CHAT, "two")
    api.set_faults(FaultProfile(drop_rate=1.0))
    with pytest.raises(TransportError):
        await client.get_updates(offset=second, timeout=0)
    api.set_faults(None)
    assert [u["update_id"] for u in await client.get_updates(offset=None, timeout=0)] == [second]
    assert first < second


async def test_a_bots_own_profile_replaces_the_global_one(
    api: SimulatedBotApi, token: str, client: BotApiClient
) -> None:
    other = SimulatedBotApi.make_token(31337, random.Random(4))
    api.add_bot(other)
    api.set_faults(FaultProfile(error_rate_5xx=1))
    api.set_faults(FaultProfile(), token=token)
    assert (await client.get_me())["id"] == api.bot(token).bot_id
    assert (await api.handle(other, "getMe", {}))[0] == 500
    api.set_faults(None, token=token)
    with pytest.raises(TelegramError):
        await client.get_me()


@pytest.mark.parametrize(
    ("mode", "seen"),
    [
        (OutageMode.CONNECT_ERROR, {"TransportError"}),
        (OutageMode.BAD_GATEWAY, {"TelegramError"}),
        (OutageMode.MIXED, {"TransportError", "TelegramError"}),
    ],
)
async def test_an_outage_fails_every_call_until_it_ends(
    api: SimulatedBotApi,
    client: BotApiClient,
    mode: OutageMode,
    seen: set[str],
    autojump_clock: trio.testing.MockClock,
) -> None:
    api.outage(60, mode=mode)
    errors: set[str] = set()
    while trio.current_time() < 60:
        with pytest.raises(BotApiError) as caught:
            await client.get_me()
        assert caught.value.category is ErrorCategory.TRANSIENT_NETWORK
        errors.add(type(caught.value).__name__)
        await trio.sleep(2)
    assert errors == seen
    assert trio.current_time() == 60
    assert (await client.get_me())["is_bot"] is True


async def test_latency_delays_answers_and_a_late_answer_may_follow_delivery(
    api: SimulatedBotApi, token: str, client: BotApiClient, chat: int,
    autojump_clock: trio.testing.MockClock,
) -> None:  # fmt: skip
    api.set_faults(FaultProfile(latency=10))
    await client.get_me()
    assert trio.current_time() == 10

    # Half the latency passes before the server acts: a 3 s timeout misses the send entirely,
    start = trio.current_time()
    with pytest.raises(TransportError):
        await client.call("sendMessage", {"chat_id": chat, "text": "early"}, timeout=3)
    assert trio.current_time() == start + 3
    assert api.statistics().replies == 0
    # a 7 s one gives up after the message was delivered.
    with pytest.raises(TransportError):
        await client.call("sendMessage", {"chat_id": chat, "text": "late"}, timeout=7)
    assert api.statistics().replies == 1


async def test_latency_jitter_stays_within_its_bound(
    api: SimulatedBotApi, client: BotApiClient, autojump_clock: trio.testing.MockClock
) -> None:
    api.set_faults(FaultProfile(latency=1, latency_jitter=2))
    durations = []
    for _ in range(50):
        start = trio.current_time()
        await client.get_me()
        durations.append(trio.current_time() - start)
    assert all(1 <= d <= 3 for d in durations)
    assert max(durations) - min(durations) > 1


async def test_flood_limits_refuse_a_second_message_within_a_second_to_one_chat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = SimulatedBotApi(rng=random.Random(1), flood_limits=FloodLimits())
    secret = SimulatedBotApi.make_token(8, random.Random(1))
    api.add_bot(secret)
    api.send_user_message(secret, 1, "hi")
    api.send_user_message(secret, -5, "hi", chat_type="group")
    send = {"chat_id": 1, "text": "a"}
    assert (await api.handle(secret, "sendMessage", send))[0] == 200
    status, body = await api.handle(secret, "sendMessage", send)
    assert (status, body["parameters"]) == (429, {"retry_after": 1})
    await trio.sleep(0.5)
    assert (await api.handle(secret, "sendMessage", send))[0] == 429
    await trio.sleep(0.5)
    assert (await api.handle(secret, "sendMessage", send))[0] == 200
    # A group takes 20 at once, then one every 3 seconds.
    group = {"chat_id": -5, "text": "g"}
    statuses = [(await api.handle(secret, "sendMessage", group))[0] for _ in range(21)]
    assert statuses == [200] * 20 + [429]
    assert api.statistics().flood_limited == 3


def test_fault_profiles_are_validated_with_the_rule_named() -> None:
    with pytest.raises(ValueError, match=r"FaultProfile.timeout_rate must be a probability"):
        FaultProfile(timeout_rate=1.5)
    with pytest.raises(ValueError, match=r"fault rates must add up to at most 1"):
        FaultProfile(error_rate_5xx=0.6, drop_rate=0.6)
    with pytest.raises(ValueError, match=r"FaultProfile.retry_after must be a whole number"):
        FaultProfile(retry_after=0)
    with pytest.raises(ValueError, match=r"FloodLimits.private_burst must be a whole number"):
        FloodLimits(private_burst=0)
