"""FleetInstruments: the fleet's Prometheus counters and histograms, with bounded labels."""

from __future__ import annotations

import math
import random
import string

from actors import (
    CALL_LATENCY_BOUNDS,
    INSTRUMENT_METHODS,
    INSTRUMENT_UPDATE_TYPES,
    REPLY_LATENCY_BOUNDS,
    UPDATE_TYPES,
    FleetInstruments,
)
from actors.botapi import BOT_API_METHODS, ErrorCategory, method_label
from actors.usage import UsageMeter, call_outcome
from storage import LATENCY_BOUNDS_MS, LATENCY_METRICS, OUTCOMES, latency_quantile


def test_updates_are_counted_by_type_and_unknown_types_are_other() -> None:
    instruments = FleetInstruments()
    for kind in ("message", "message", "callback_query", "edited_message", "guest_message"):
        instruments.count_update(kind)
    updates = instruments.statistics().updates
    assert list(updates) == [*UPDATE_TYPES, "other"]
    assert updates["message"] == 2
    assert updates["callback_query"] == 1
    assert updates["edited_message"] == 1
    assert updates["other"] == 1  # a type Telegram added after this release
    assert sum(updates.values()) == 5


def test_a_latency_on_a_bucket_edge_counts_in_that_bucket_and_buckets_are_cumulative() -> None:
    instruments = FleetInstruments()
    instruments.count_call("sendMessage", "ok", 0.05)  # le="0.05" (Prometheus: <=)
    instruments.count_call("sendMessage", "ok", 0.0501)  # le="0.1"
    instruments.count_call("sendMessage", "failed_transient_network", 95.0)  # above 60: +Inf
    instruments.count_call("sendMessage", "retried")  # a retry scheduled: no latency
    stats = instruments.statistics()
    histogram = stats.call_latency["sendMessage"]
    assert histogram.bounds == CALL_LATENCY_BOUNDS
    by_bound = dict(zip([*CALL_LATENCY_BOUNDS, float("inf")], histogram.cumulative, strict=True))
    assert by_bound[0.025] == 0
    assert by_bound[0.05] == 1
    assert by_bound[0.1] == 2
    assert by_bound[60.0] == 2
    assert by_bound[float("inf")] == histogram.count == 3
    assert list(histogram.cumulative) == sorted(histogram.cumulative)
    assert histogram.sum == 0.05 + 0.0501 + 95.0
    assert stats.calls == {
        ("sendMessage", "ok"): 2,
        ("sendMessage", "failed_transient_network"): 1,
        ("sendMessage", "retried"): 1,
    }


def test_messages_sent_are_successful_send_calls_only() -> None:
    instruments = FleetInstruments()
    instruments.count_call("sendMessage", "ok", 0.1)
    instruments.count_call("sendPhoto", "ok", 1.2)
    instruments.count_call("sendMessage", "failed_chat", 0.1)  # 403 blocked: nothing sent
    instruments.count_call("sendMessage", "throttled", 0.1)
    instruments.count_call("answerCallbackQuery", "ok", 0.1)
    instruments.count_call("getUpdates", "ok")  # a long poll: counted, not timed
    stats = instruments.statistics()
    assert stats.messages_sent == 2
    assert stats.calls[("getUpdates", "ok")] == 1
    assert "getUpdates" not in stats.call_latency


def test_method_labels_stay_in_the_fixed_set_whatever_handlers_call() -> None:
    instruments = FleetInstruments()
    rng = random.Random(7)
    names = ["".join(rng.choices(string.ascii_letters, k=12)) for _ in range(500)]
    for name in [*names, "sendMesage", "SENDMESSAGE", "sendMessage"]:
        instruments.count_call(name, rng.choice(OUTCOMES), rng.uniform(0, 2))
    stats = instruments.statistics()
    assert set(stats.call_latency) == {"other", "sendMessage"}
    assert {method for method, _outcome in stats.calls} == {"other", "sendMessage"}
    assert {outcome for _method, outcome in stats.calls} <= set(OUTCOMES)
    assert stats.call_latency["other"].count == 502
    assert method_label("sendMesage") == "other"


def test_every_method_botvisor_itself_calls_has_its_own_label() -> None:
    called = (
        "getMe",
        "getUpdates",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "sendMessage",
        "answerCallbackQuery",
        "answerInlineQuery",
        "editMessageText",
        "sendChatAction",
    )
    assert all(method_label(method) == method for method in called)
    assert len(set(BOT_API_METHODS)) == len(BOT_API_METHODS)
    assert INSTRUMENT_METHODS[-1] == "other"
    assert INSTRUMENT_UPDATE_TYPES[-1] == "other"


def test_reply_latency_uses_the_usage_analytics_buckets() -> None:
    """PromQL's quantile and /admin/analytics' p95 read the same bucket edges."""
    assert [b * 1000 for b in REPLY_LATENCY_BOUNDS] == [
        b for b in LATENCY_BOUNDS_MS if b != float("inf")
    ]
    meter = UsageMeter(instruments := FleetInstruments())
    for seconds in (0.03, 0.2, 0.2, 0.9, 7.0):
        meter.count_reply_latency(seconds)
    reply = instruments.statistics().reply_latency
    by_bound = dict(zip([*REPLY_LATENCY_BOUNDS, float("inf")], reply.cumulative, strict=True))
    assert (by_bound[0.05], by_bound[0.25], by_bound[1.0], by_bound[10.0]) == (1, 3, 4, 5)
    assert reply.count == 5
    # The usage meter counted the same replies, and its p95 is the same bucket's edge.
    assert latency_quantile(meter.pending(), 0.95) == 10_000


def test_a_latency_on_any_edge_falls_in_the_same_bucket_for_usage_and_prometheus() -> None:
    """The meter finds the bucket once for both; the same latencies observed on the fleet
    directly (its own bisect) land in the same buckets, on and just beside every edge."""
    latencies = [0.0, 400.0, float("nan")]
    for bound in REPLY_LATENCY_BOUNDS:
        latencies += [bound, math.nextafter(bound, 0.0), math.nextafter(bound, math.inf)]
    via_meter, direct = FleetInstruments(), FleetInstruments()
    meter = UsageMeter(via_meter)
    for seconds in latencies:
        meter.count_reply_latency(seconds)
        direct.observe_reply_latency(seconds)
    by_meter = via_meter.statistics().reply_latency.cumulative
    assert by_meter == direct.statistics().reply_latency.cumulative
    # The usage counts agree bucket by bucket with the histogram's (non-cumulative) slots.
    usage = meter.pending()
    slots = [b - a for a, b in zip((0, *by_meter), by_meter, strict=False)]
    assert [usage.get(name, 0) for name in LATENCY_METRICS] == slots
    assert sum(slots) == len(latencies)


def test_the_usage_meter_feeds_the_fleet_and_two_fleets_do_not_share() -> None:
    one, two = FleetInstruments(), FleetInstruments()
    meter = UsageMeter(one)
    meter.count_call("sendMessage", "ok", 0.3)
    meter.count_call("getMe", "failed_permanent", 0.1)
    assert meter.pending() == {
        "calls.sendMessage.ok": 1,
        "sends": 1,
        "calls.getMe.failed_permanent": 1,
    }
    stats = one.statistics()
    assert stats.calls == {("sendMessage", "ok"): 1, ("getMe", "failed_permanent"): 1}
    assert stats.messages_sent == 1
    assert two.statistics().calls == {}
    assert two.statistics().messages_sent == 0


def test_every_error_category_has_an_outcome_label() -> None:
    """A category without one would make the pipeline's count raise on the hot path."""
    instruments = FleetInstruments()
    for category in ErrorCategory:
        outcome = call_outcome(category.value)
        assert outcome in OUTCOMES
        instruments.count_call("sendMessage", outcome, 0.1)
    assert sum(instruments.statistics().calls.values()) == len(ErrorCategory)
