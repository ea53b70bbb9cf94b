"""/metrics: Prometheus text that prometheus-client's parser (and promtool, where installed)
accepts, with the numbers the fleet's statistics() report."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import prometheus_client
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from actors import CALL_LATENCY_BOUNDS, INSTRUMENT_METHODS, REPLY_LATENCY_BOUNDS
from actors.simulator import FaultProfile, SimulatedBotApi
from tests import payloads
from tests.admin.helpers import AUTH, add_api_bot, admin_fleet, client, make_app

PER_BOT = {
    "botvisor_bot_status",
    "botvisor_bot_breaker_state",
    "botvisor_bot_requests",
    "botvisor_bot_failures",
    "botvisor_bot_throttled",
    "botvisor_bot_retries",
    "botvisor_bot_response_time_seconds",
    "botvisor_bot_error_rate",
    "botvisor_bot_restarts",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_parse_and_match_the_fleet_statistics(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(2))
    api.set_faults(FaultProfile(latency=0.05))
    async with admin_fleet(tmp_path / "a.db", [1, 2], api=api) as admin:
        for n in range(3):
            admin.api.send_user_message(admin.fleet.tokens[1], 42, f"m{n}")
        await trio.sleep(10)
        actor = admin.fleet.handle.fleet.get(2)
        actor.pipeline.breaker.force_open()

        response = await admin.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = response.text
        values = samples(text)
        families = {f.name for f in text_string_to_metric_families(text)}
        assert families >= PER_BOT

        one = admin.fleet.handle.fleet.get(1).statistics()
        uid1 = (("user_id", "1"),)
        uid2 = (("user_id", "2"),)
        assert one.health.total_requests >= 3  # the replies, at least
        assert values[("botvisor_bot_requests_total", uid1)] == one.health.total_requests
        assert values[("botvisor_bot_failures_total", uid1)] == 0
        assert values[("botvisor_bot_status", uid1)] == 0
        assert values[("botvisor_bot_breaker_state", uid2)] == 2  # forced open
        assert values[("botvisor_bot_status", uid2)] == 2  # unhealthy
        assert (
            values[("botvisor_bot_response_time_seconds", uid1)]
            == (one.health.ema_latency_ms or 0) / 1000
        )
        assert values[("botvisor_bot_response_time_seconds", uid1)] > 0
        assert values[("botvisor_replies_sent_total", ())] == 3
        assert values[("botvisor_bots", (("status", "unhealthy"),))] == 1
        assert values[("botvisor_bots", (("status", "healthy"),))] == 1
        assert values[("botvisor_breakers", (("state", "forced_open"),))] == 1
        assert values[("botvisor_supervised_bots", (("state", "running"),))] == 2
        assert values[("botvisor_events_dropped_total", ())] == 0
        assert ("botvisor_supervisor_restarts_total", ()) in values
        assert ("botvisor_live_subscribers_dropped_total", ()) in values
        assert admin.fleet.tokens[1] not in text

        promtool = shutil.which("promtool")
        if promtool is not None:
            checked = await trio.run_process(
                [promtool, "check", "metrics"],
                stdin=text.encode(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            # promtool exits 0 for valid text; it may print lint hints, never errors.
            assert checked.returncode == 0, checked.stderr.decode()


async def test_large_fleets_can_turn_per_bot_series_off(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1, 2, 3]) as admin:
        per_bot = samples((await admin.http.get("/metrics")).text)
        assert (
            sum(1 for name, labels in per_bot if labels == (("user_id", "3"),)) == len(PER_BOT) - 1
        )  # no latency measured yet for a bot that never answered

        totals_only = make_app(admin.fleet, metrics_per_bot=False)
        async with client(totals_only, **AUTH) as http:
            text = (await http.get("/metrics")).text
        families = {f.name for f in text_string_to_metric_families(text)}
        assert not families & PER_BOT
        assert samples(text)[("botvisor_bots", (("status", "healthy"),))] == 3


FLEET_TOTALS = (
    "botvisor_bots",
    "botvisor_breakers",
    "botvisor_requests_total",
    "botvisor_failures_total",
    "botvisor_throttled_total",
    "botvisor_chat_errors_total",
    "botvisor_retries_total",
    "botvisor_handled_updates_total",
    "botvisor_replies_sent_total",
    "botvisor_dead_letters_total",
    "botvisor_ambiguous_sends_total",
    "botvisor_handler_errors_total",
    "botvisor_lane_updates",
    "botvisor_lanes_overflowing",
)


async def test_fleet_totals_without_per_bot_series_are_the_sums_of_the_bots(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Without per-bot series the scrape reads each bot's cheap sample instead of its full
    # statistics: the fleet's counts and sums must come out the same, busy fleet or not.
    api = SimulatedBotApi(rng=random.Random(5))
    api.set_faults(FaultProfile(error_rate_5xx=0.2, rate_limit_rate=0.1, retry_after=1))
    async with admin_fleet(tmp_path / "a.db", [1, 2, 3], api=api) as admin:
        tokens = admin.fleet.tokens
        for n in range(6):
            admin.api.send_user_message(tokens[1], 500 + n % 3, f"hello {n}")
            admin.api.send_user_message(tokens[2], 600, f"photo caption {n}")
        admin.api.send_update(tokens[3], payloads.edited_message(chat_id=700))
        token4 = await add_api_bot(
            admin, 4, handler="tests.handlers_for_tests:call_a_misspelled_method"
        )
        admin.api.send_user_message(token4, 777, "typo")
        await trio.sleep(30)
        admin.fleet.handle.fleet.get(3).pipeline.breaker.force_open()

        # The cheap read first: in the same instant, a full pull taken before would serve it.
        async with client(make_app(admin.fleet, metrics_per_bot=False), **AUTH) as http:
            totals_only = samples((await http.get("/metrics")).text)
        with_bots = samples((await admin.http.get("/metrics")).text)

    fleet_rows = {key: value for key, value in with_bots.items() if key[0] in FLEET_TOTALS}
    assert {key: totals_only[key] for key in fleet_rows} == fleet_rows
    # The fleet was busy enough for the sums to mean something.
    assert fleet_rows[("botvisor_requests_total", ())] > 12
    assert fleet_rows[("botvisor_failures_total", ())] > 0
    assert fleet_rows[("botvisor_throttled_total", ())] > 0
    assert (
        fleet_rows[("botvisor_dead_letters_total", ())]
        + fleet_rows[("botvisor_handler_errors_total", ())]
        > 0
    )
    assert fleet_rows[("botvisor_breakers", (("state", "forced_open"),))] == 1
    assert fleet_rows[("botvisor_bots", (("status", "unhealthy"),))] >= 1
    assert sum(v for (name, _), v in fleet_rows.items() if name == "botvisor_bots") == 4


async def test_the_cheap_read_counts_the_updates_lanes_hold_and_no_overflow_for_idle_bots(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Per-bot series off, /metrics reads each bot's cheap sample: the updates waiting in a
    # busy bot's chat lane must show, and a suspended bot (no lanes) adds nothing.
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        token = await add_api_bot(admin, 2, handler="tests.handlers_for_tests:slow_echo")
        for n in range(4):
            admin.api.send_user_message(token, 77, f"wait {n}")
        response = await admin.http.post("/admin/bots/1/suspend", json={})
        assert response.status_code == 200, response.text
        await trio.sleep(5)
        lanes = admin.fleet.handle.fleet.get(2).statistics().lanes
        assert lanes is not None and lanes.queued_updates > 0
        async with client(make_app(admin.fleet, metrics_per_bot=False), **AUTH) as http:
            values = samples((await http.get("/metrics")).text)
    assert values[("botvisor_lane_updates", ())] == lanes.queued_updates
    assert values[("botvisor_lanes_overflowing", ())] == 0


COUNTERS = tuple(name for name in FLEET_TOTALS if name.endswith("_total"))


async def test_fleet_counters_do_not_go_down_when_a_bot_is_removed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Prometheus reads a counter that drops as a reset: rate() would count the whole fleet's
    # total again. A removed bot's counts stay in the fleet's sums, per-bot series or not.
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        token = await add_api_bot(admin, 2)
        for n in range(4):
            admin.api.send_user_message(token, 900, f"hello {n}")
            admin.api.send_user_message(admin.fleet.tokens[1], 901, f"hi {n}")
        await trio.sleep(10)
        totals_only = make_app(admin.fleet, metrics_per_bot=False)
        async with client(totals_only, **AUTH) as http:
            before = samples((await http.get("/metrics")).text)
            assert before[("botvisor_replies_sent_total", ())] == 8
            response = await admin.http.delete("/admin/bots/2")
            assert response.status_code in (200, 204), response.text
            await trio.sleep(1)
            after = samples((await http.get("/metrics")).text)
        with_bots = samples((await admin.http.get("/metrics")).text)

    assert after[("botvisor_bots", (("status", "healthy"),))] == 1
    for name in COUNTERS:
        assert after[(name, ())] >= before[(name, ())], name
        assert with_bots[(name, ())] == after[(name, ())], name
    assert after[("botvisor_replies_sent_total", ())] == 8
    assert ("botvisor_bot_requests_total", (("user_id", "2"),)) not in with_bots


async def test_each_app_has_its_own_registry(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        other = make_app(admin.fleet)
        assert other.state.metrics_registry is not admin.app.state.metrics_registry
        global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
        assert "botvisor_" not in global_text
        async with client(other, **AUTH) as http:
            assert (await http.get("/metrics")).status_code == 200


FLEET_FAMILIES = {
    "botvisor_updates_received": "counter",
    "botvisor_api_calls": "counter",
    "botvisor_messages_sent": "counter",
    "botvisor_api_call_duration_seconds": "histogram",
    "botvisor_reply_latency_seconds": "histogram",
}


def buckets(text: str, name: str, **labels: str) -> list[tuple[float, float]]:
    """The (le, cumulative count) pairs of one histogram series, in exposition order."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            rest = {k: v for k, v in sample.labels.items() if k != "le"}
            if rest == labels:
                found.append((float(sample.labels["le"]), sample.value))
    return found


async def test_fleet_counters_and_histograms_count_what_the_simulator_saw(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(3))
    api.set_faults(FaultProfile(latency=0.2))  # every call answers in 200 ms
    async with admin_fleet(tmp_path / "a.db", [1], api=api, metrics_per_bot=False) as admin:
        token = admin.fleet.tokens[1]
        for n in range(4):
            admin.api.send_user_message(token, 111 + n % 2, f"question {n}")
        admin.api.send_update(token, payloads.edited_message(chat_id=111))
        admin.api.send_update(token, payloads.my_chat_member(chat_id=-4001, user_id=222))
        admin.api.send_update(token, payloads.inline_query(user_id=333))
        admin.api.send_update(token, payloads.future_update(chat_id=-4001))
        # A tenant whose handler calls a method Telegram does not have: a 404 the handler
        # lets through, so its update is dead-lettered.
        token2 = await add_api_bot(
            admin, 2, handler="tests.handlers_for_tests:call_a_misspelled_method"
        )
        admin.api.send_user_message(token2, 777, "typo")
        await trio.sleep(60)
        report = admin.api.report()

        response = await admin.http.get("/metrics")
        text = response.text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name, kind in FLEET_FAMILIES.items():
            assert families[name].type == kind, name
            # Fleet-wide only: no family of these has a user_id label, per_bot or not.
            assert all("user_id" not in s.labels for s in families[name].samples), name
        values = samples(text)

        def updates(kind: str) -> float:
            return values[("botvisor_updates_received_total", (("type", kind),))]

        assert updates("message") == 5  # four for bot 1, one for bot 2
        assert updates("edited_message") == 1
        assert updates("my_chat_member") == 1
        assert updates("inline_query") == 1
        assert updates("other") == 1  # the future update type
        assert updates("callback_query") == 0  # every known type is there, zeros too
        delivered = sum(
            v for (n, _l), v in values.items() if n == "botvisor_updates_received_total"
        )
        assert delivered == report.updates_confirmed == 9

        def calls(method: str, outcome: str) -> float:
            key = ("botvisor_api_calls_total", (("method", method), ("outcome", outcome)))
            return values.get(key, 0)

        # Echo answers the four messages and the edit.
        assert calls("sendMessage", "ok") == report.replies == 5
        assert values[("botvisor_messages_sent_total", ())] == 5
        # sendMesage: Telegram's 404 for one call (the token is fine), labelled other.
        assert calls("other", "failed_chat") == 1
        assert values[("botvisor_handler_errors_total", ())] == 1
        assert values[("botvisor_dead_letters_total", ())] == 1
        assert calls("getUpdates", "ok") >= 2
        methods = {
            dict(labels)["method"] for (n, labels) in values if n == "botvisor_api_calls_total"
        }
        assert methods <= set(INSTRUMENT_METHODS)
        assert "sendMesage" not in text

        # The call latency histogram: every 200 ms sendMessage in the (0.1, 0.25] bucket.
        send = buckets(text, "botvisor_api_call_duration_seconds", method="sendMessage")
        assert [le for le, _count in send] == [*CALL_LATENCY_BOUNDS, float("inf")]
        by_le = dict(send)
        assert by_le[0.1] == 0
        assert by_le[0.25] == by_le[float("inf")] == 5
        count = values[("botvisor_api_call_duration_seconds_count", (("method", "sendMessage"),))]
        total = values[("botvisor_api_call_duration_seconds_sum", (("method", "sendMessage"),))]
        assert count == 5
        assert abs(total - 5 * 0.2) < 1e-6
        # Long polls are not timed: getUpdates has counts but no latency series.
        assert not buckets(text, "botvisor_api_call_duration_seconds", method="getUpdates")

        # Reply latency: one per update answered (five), cumulative, at least the call's 200 ms.
        reply = buckets(text, "botvisor_reply_latency_seconds")
        assert [le for le, _count in reply] == [*REPLY_LATENCY_BOUNDS, float("inf")]
        counts = [count for _le, count in reply]
        assert counts == sorted(counts)
        assert dict(reply)[0.1] == 0
        assert counts[-1] == values[("botvisor_reply_latency_seconds_count", ())] == 5
        assert values[("botvisor_reply_latency_seconds_sum", ())] >= 5 * 0.2
        assert admin.fleet.tokens[1] not in text

        promtool = shutil.which("promtool")
        if promtool is not None:
            checked = await trio.run_process(
                [promtool, "check", "metrics"],
                stdin=text.encode(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert checked.returncode == 0, checked.stderr.decode()


async def test_per_bot_series_add_no_per_bot_histograms(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1, 2]) as admin:
        admin.api.send_user_message(admin.fleet.tokens[1], 42, "hi")
        await trio.sleep(10)
        text = (await admin.http.get("/metrics")).text
        per_bot_families = {
            family.name
            for family in text_string_to_metric_families(text)
            if any("user_id" in s.labels for s in family.samples)
        }
        assert per_bot_families == PER_BOT
        assert samples(text)[("botvisor_reply_latency_seconds_count", ())] == 1
