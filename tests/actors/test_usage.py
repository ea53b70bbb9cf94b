"""The per-bot UsageMeter and what usage analytics reads of an update."""

from __future__ import annotations

from actors.lanes import usage_kind
from actors.usage import UsageMeter, call_outcome
from tests import payloads


def test_a_successful_send_is_a_message_sent_and_other_outcomes_are_not() -> None:
    meter = UsageMeter()
    meter.count_call("sendMessage", "ok")
    meter.count_call("sendPhoto", call_outcome("rate_limit"))
    meter.count_call("sendPhoto", "retried")
    meter.count_call("sendPhoto", "ok")
    meter.count_call("getUpdates", call_outcome(None))
    meter.count_call("answerCallbackQuery", call_outcome("chat"))
    assert meter.take() == {
        "calls.sendMessage.ok": 1,
        "calls.sendPhoto.throttled": 1,
        "calls.sendPhoto.retried": 1,
        "calls.sendPhoto.ok": 1,
        "calls.getUpdates.ok": 1,
        "calls.answerCallbackQuery.failed_chat": 1,
        "sends": 2,
    }
    assert meter.take() == {}


def test_calls_of_names_that_are_not_bot_api_methods_count_as_other() -> None:
    # A handler may call any name; the usage table must not grow a row per name it makes up.
    meter = UsageMeter()
    for n in range(50):
        meter.count_call(f"myMethod{n}", call_outcome("permanent"))
    meter.count_call("sendmessage", call_outcome("permanent"))  # Telegram's case, not ours
    meter.count_call("sendMessage", "ok")
    assert meter.take() == {
        "calls.other.failed_permanent": 51,
        "calls.sendMessage.ok": 1,
        "sends": 1,
    }


def test_webhook_deliveries_are_counted_for_the_receiver() -> None:
    meter = UsageMeter()
    meter.count_webhook(accepted=True)
    meter.count_webhook(accepted=True)
    meter.count_webhook(accepted=False)
    counts = meter.take()
    assert counts == {"webhook.accepted": 2, "webhook.rejected": 1}
    # A flush that found the write queue full gives them back for the next one.
    meter.count_webhook(accepted=False)
    meter.give_back(counts)
    assert meter.pending() == {"webhook.accepted": 2, "webhook.rejected": 2}


def test_reply_latency_lands_in_its_bucket() -> None:
    meter = UsageMeter()
    meter.count_reply_latency(0.2)
    meter.count_reply_latency(0.25)
    meter.count_reply_latency(400.0)
    assert meter.take() == {"reply_latency_ms.le_250": 2, "reply_latency_ms.le_inf": 1}


def test_the_update_type_and_sender_come_from_the_update() -> None:
    assert usage_kind(payloads.message(1, chat_id=111)) == ("message", 111)
    assert usage_kind(payloads.callback_query(user_id=222)) == ("callback_query", 222)
    assert usage_kind(payloads.channel_post()) == ("channel_post", None)
    assert usage_kind(payloads.my_chat_member(user_id=222)) == ("my_chat_member", 222)
    assert usage_kind({"update_id": 9, "future_thing": {"from": {"id": 5}}}) == ("other", 5)
    assert usage_kind({"update_id": 9}) == ("other", None)
