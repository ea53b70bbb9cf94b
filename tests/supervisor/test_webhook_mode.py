"""Webhook bots in the fleet: dormant until a delivery, registered only when it changed,
leftover webhooks of polling bots deleted before they poll (issue 12)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors import ActorState, BotConfig, BotMode, BotStatus, BotToken, WebhookConfig, chat_key
from actors.lanes import key_chat_id, lane_name, usage_kind
from actors.poller import POLL_ERROR_PAUSE
from storage import InboxEntry
from supervisor import Config
from supervisor.fleet import FIRST_WEBHOOK_CHECK_DELAY
from tests import payloads
from tests.harness import Fleet, admin_client, bot_token, running_fleet
from tests.supervisor.webhook_telegram import BotCall, WebhookTelegram

PUBLIC_URL = "https://bots.example.com/tg"
IDLE = 60.0


def webhook_mode(
    *, secret: str = "master-secret-1", mode: BotMode = BotMode.WEBHOOK
) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        return config.model_copy(
            update={
                "webhook": WebhookConfig(
                    listen="127.0.0.1:0", public_url=PUBLIC_URL, secret=secret, idle_seconds=IDLE
                ),
                "bots": tuple(bot.model_copy(update={"mode": mode}) for bot in config.bots),
            }
        )

    return configure


async def deliver(fleet: Fleet, user_id: int, update: Mapping[str, Any]) -> None:
    """What the receiver does with a delivery: commit it to the inbox, then tell the fleet."""
    handle = fleet.handle
    key: Hashable = chat_key(update)
    received_at = 1_800_000_000.0 + trio.current_time()
    new = await handle.store.inbox_add(
        user_id, [InboxEntry(update, key_chat_id(key), lane_name(key))], None, received_at
    )
    if new:
        handle.fleet.webhook_stored(user_id, update, key, received_at, usage_kind(update)[0])


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for n in task.child_nurseries for child in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


async def test_dormant_webhook_bots_cost_no_task_and_a_restart_makes_no_call(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "w.db"
    telegram = WebhookTelegram()
    bots = list(range(1, 41))
    async with running_fleet(db, [1], configure=webhook_mode(), wrap_transport=telegram.wrap):
        await trio.sleep(1)
        one_bot_tasks = count_tasks()
    async with running_fleet(
        db, bots, configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        await trio.sleep(1)
        # Forty dormant bots: not one task more than one dormant bot, no supervised child.
        assert count_tasks() == one_bot_tasks
        assert fleet.handle.supervisor.statistics().children == 0
        assert all(a.state is ActorState.IDLE for a in fleet.handle.fleet.actors())
        registered = {c.bot_id for c in telegram.calls if c.method == "setWebhook"}
        assert sorted({fleet.bot_id(uid) for uid in bots} - registered) == []
        assert sorted(registered - {fleet.bot_id(uid) for uid in bots}) == []
        call = next(c for c in telegram.calls if c.bot_id == fleet.bot_id(7))
        assert call.params["url"] == f"{PUBLIC_URL}/7"
        assert call.params["drop_pending_updates"] is False
        assert call.params["secret_token"] == fleet.handle.fleet.webhook_secret(7)
        # The fleet-wide summary works without waking anyone.
        assert fleet.handle.supervisor.statistics().children == 0
    calls_before = len(telegram.calls)
    async with running_fleet(db, bots, configure=webhook_mode(), wrap_transport=telegram.wrap):
        await trio.sleep(30)
    # Unchanged registrations: a start makes no Bot API call at all for webhook bots.
    assert telegram.methods()[calls_before:] == []


async def test_a_rotated_master_secret_registers_every_bot_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "w.db"
    telegram = WebhookTelegram()
    async with running_fleet(db, [1, 2], configure=webhook_mode(), wrap_transport=telegram.wrap):
        await trio.sleep(1)
    first = {c.bot_id: c.params["secret_token"] for c in telegram.calls}
    telegram.calls.clear()
    async with running_fleet(
        db, [1, 2], configure=webhook_mode(secret="master-secret-2"), wrap_transport=telegram.wrap
    ):
        await trio.sleep(1)
    assert telegram.methods() == ["setWebhook", "setWebhook"]
    second = {c.bot_id: c.params["secret_token"] for c in telegram.calls}
    assert second.keys() == first.keys()
    assert all(second[bot] != first[bot] for bot in first)


async def test_a_delivery_wakes_a_dormant_bot_which_handles_it_once_then_sleeps(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        await trio.sleep(1)
        actor = fleet.handle.fleet.get(1)
        assert actor.state is ActorState.IDLE
        await deliver(fleet, 1, payloads.message(41, chat_id=111, text="hi"))
        await deliver(fleet, 1, payloads.callback_query(42, chat_id=111))
        await deliver(fleet, 1, payloads.message(41, chat_id=111, text="hi"))  # a redelivery
        await trio.sleep(1)
        assert actor.state.value == "running"
        assert [p["text"] for p in telegram.sent()] == ["hi"]
        assert actor.statistics().handled_updates == 2
        await trio.sleep(IDLE + 1)
        # Dormant again: no incarnation, no supervised child, nothing undone.
        assert actor.state is ActorState.IDLE
        assert fleet.handle.supervisor.child_state(1) is None
        assert await fleet.handle.store.inbox_pending(1) == []
        # The operator sees the dormant bot, with its counters, without waking it.
        async with admin_client(fleet) as admin:
            shown = (await admin.get("/admin/bots/1")).json()
            summary = (await admin.get("/admin/system/bot-health/summary")).json()
        assert (shown["mode"], shown["state"], shown["supervisor_state"]) == (
            "webhook",
            "idle",
            None,
        )
        assert summary["total_bots"] == 1
        assert fleet.handle.supervisor.child_state(1) is None
        # And a later delivery wakes it once more.
        await deliver(fleet, 1, payloads.message(43, chat_id=222, text="again"))
        await trio.sleep(1)
        assert [p["text"] for p in telegram.sent()] == ["hi", "again"]
    assert telegram.methods().count("sendMessage") == 2


async def test_each_delivery_keeps_a_webhook_bot_awake_for_another_idle_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="botvisor.bot")
    telegram = WebhookTelegram()

    def configure(config: Config) -> Config:
        # Lanes reaped 5 s after their last update: the bot has no lane at work when the
        # first delivery's idle time ends, so only the second delivery keeps it awake.
        config = webhook_mode()(config)
        limits = config.limits.model_copy(update={"lane_idle_seconds": 5.0})
        return config.model_copy(update={"limits": limits})

    async with running_fleet(
        tmp_path / "w.db", [1], configure=configure, wrap_transport=telegram.wrap
    ) as fleet:
        await trio.sleep(1)
        actor = fleet.handle.fleet.get(1)
        await deliver(fleet, 1, payloads.message(41, chat_id=111, text="first"))
        await trio.sleep(30)
        await deliver(fleet, 1, payloads.message(42, chat_id=111, text="second"))
        # Past the first delivery's idle time, within the second's: still awake.
        await trio.sleep(IDLE - 30 + 5)
        assert actor.state is ActorState.RUNNING
        assert fleet.handle.supervisor.child_state(1) is not None
        await trio.sleep(30)
        assert actor.state.value == "idle"  # dormant
        assert [p["text"] for p in telegram.sent()] == ["first", "second"]
    dormant = [r.getMessage() for r in caplog.records if "going dormant" in r.getMessage()]
    assert dormant == ["bot 1: idle for 60 s, going dormant"]


async def test_a_webhook_bots_update_left_undone_at_a_restart_is_handled_after_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "w.db"
    telegram = WebhookTelegram()
    async with running_fleet(
        db, [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        await trio.sleep(1)
        # Committed by the receiver as the daemon stopped, before the bot was told.
        update = payloads.message(51, chat_id=111, text="left")
        key = chat_key(update)
        entry = InboxEntry(update, key_chat_id(key), lane_name(key))
        await fleet.handle.store.inbox_add(1, [entry], None, 1_800_000_001.0)
    assert telegram.sent() == []
    async with running_fleet(
        db, [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        await trio.sleep(5)
        assert [p["text"] for p in telegram.sent()] == ["left"]
        assert await fleet.handle.store.inbox_pending(1) == []


async def test_a_delivery_while_the_bot_goes_dormant_is_handled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        actor = fleet.handle.fleet.get(1)
        seen: list[ActorState] = []
        async with trio.open_nursery() as nursery:
            original = actor._transition

            def transition(target: ActorState) -> None:
                original(target)
                if target is ActorState.STOPPING and not seen:
                    # The delivery lands while the incarnation is going dormant.
                    async def late() -> None:
                        seen.append(actor.state)
                        await deliver(fleet, 1, payloads.callback_query(52, chat_id=111))
                        await deliver(fleet, 1, payloads.message(53, chat_id=111, text="late"))

                    nursery.start_soon(late)

            monkeypatch.setattr(actor, "_transition", transition)
            await deliver(fleet, 1, payloads.message(51, chat_id=111, text="first"))
            await trio.sleep(IDLE + 5)
        assert seen == [ActorState.STOPPING]
        await trio.sleep(1)
        assert [p["text"] for p in telegram.sent()] == ["first", "late"]
        assert await fleet.handle.store.inbox_pending(1) == []
        await trio.sleep(IDLE + 5)
        assert actor.state is ActorState.IDLE
        assert fleet.handle.supervisor.child_state(1) is None


async def test_a_suspended_webhook_bot_keeps_its_delivery_for_later(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        await fleet.handle.fleet.suspend(1)
        await deliver(fleet, 1, payloads.message(61, chat_id=111, text="wait"))
        await trio.sleep(5)
        assert telegram.sent() == []
        assert fleet.handle.supervisor.child_state(1) is None
        assert [row["update_id"] for row in await fleet.handle.store.inbox_pending(1)] == [61]


async def test_a_woken_bot_takes_its_deliveries_in_hand_in_order_reading_no_inbox(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        store = fleet.handle.store
        reads: list[str] = []
        for name in ("inbox_pending", "load_offset", "load_bot_chat_migrations"):
            original = getattr(store, name)

            async def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
                reads.append(_name)
                return await _original(*args)

            monkeypatch.setattr(store, name, counted)
        await trio.sleep(1)
        actor = fleet.handle.fleet.get(1)
        # Two chats' updates, committed in a burst before the woken bot has started.
        await deliver(fleet, 1, payloads.message(71, chat_id=111, text="one"))
        await deliver(fleet, 1, payloads.message(72, chat_id=222, text="a"))
        await deliver(fleet, 1, payloads.message(73, chat_id=111, text="two"))
        await deliver(fleet, 1, payloads.message(74, chat_id=111, text="three"))
        await trio.sleep(10)  # a chat's replies are paced (Telegram's per-chat limit)
        sent = telegram.sent()
        assert [p["text"] for p in sent if p["chat_id"] == 111] == ["one", "two", "three"]
        assert [p["text"] for p in sent if p["chat_id"] == 222] == ["a"]
        assert actor.statistics().handled_updates == 4
        # Dormant again, then woken again: still nothing read back from SQLite.
        await trio.sleep(IDLE + 5)
        assert fleet.handle.supervisor.child_state(1) is None
        await deliver(fleet, 1, payloads.edited_message(75, chat_id=111))
        await deliver(fleet, 1, payloads.message(76, chat_id=111, text="four"))
        await trio.sleep(5)
        assert [p["text"] for p in telegram.sent()][-1] == "four"
        assert actor.statistics().handled_updates == 6
        assert reads == []
        assert await store.inbox_pending(1) == []


async def test_a_delivery_stored_while_suspended_is_handled_after_resume(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        # Woken once and dormant again (its undone inbox known to be empty), then suspended.
        await deliver(fleet, 1, payloads.message(81, chat_id=111, text="before"))
        await trio.sleep(IDLE + 5)
        assert fleet.handle.supervisor.child_state(1) is None
        await fleet.handle.fleet.suspend(1)
        await deliver(fleet, 1, payloads.message(82, chat_id=111, text="while suspended"))
        await trio.sleep(5)
        await fleet.handle.fleet.resume(1)
        await trio.sleep(1)
        # Delivered after the resume: handled after the one stored while suspended.
        await deliver(fleet, 1, payloads.message(83, chat_id=111, text="after"))
        await trio.sleep(5)
        assert [p["text"] for p in telegram.sent()] == ["before", "while suspended", "after"]
        assert await fleet.handle.store.inbox_pending(1) == []


async def test_a_polling_bot_deletes_its_leftover_webhook_before_it_polls(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "w.db"
    telegram = WebhookTelegram()
    async with running_fleet(db, [1], configure=webhook_mode(), wrap_transport=telegram.wrap):
        await trio.sleep(1)
    async with running_fleet(
        db, [1], configure=webhook_mode(mode=BotMode.POLLING), wrap_transport=telegram.wrap
    ) as fleet:
        # Telegram kept what came while the webhook was set: nothing of it is lost.
        telegram.keep(fleet.bot_id(1), payloads.message(71, chat_id=111, text="kept"))
        await trio.sleep(5)
        methods = telegram.methods(fleet.bot_id(1))
        assert methods[:3] == ["setWebhook", "deleteWebhook", "getUpdates"]
        assert [p["text"] for p in telegram.sent()] == ["kept"]
        assert fleet.handle.fleet.registration(1) is None
        assert await fleet.handle.store.load_webhook_registrations() == {}


async def test_a_409_for_an_active_webhook_deletes_it_and_polling_goes_on(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(tmp_path / "w.db", [1], wrap_transport=telegram.wrap) as fleet:
        bot = telegram.bot(fleet.bot_id(1))
        # Someone else set a webhook: botvisor's store knows nothing of it.
        bot.webhook = {"url": "https://elsewhere.example/hook"}
        telegram.keep(fleet.bot_id(1), payloads.message(81, chat_id=111, text="pending"))
        await trio.sleep(60)
        assert bot.webhook is None
        assert "deleteWebhook" in telegram.methods()
        deletes = [c.params for c in telegram.calls if c.method == "deleteWebhook"]
        assert deletes == [{"drop_pending_updates": False}]
        assert [p["text"] for p in telegram.sent()] == ["pending"]


class RefusingDeletes(WebhookTelegram):
    """Refuses the first ``refusals`` deleteWebhook calls with a 400 (recorded all the same)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/deleteWebhook") and self.refusals:
            self.refusals -= 1
            bot_id = int(request.url.path.split("/bot", 1)[1].split(":", 1)[0])
            self.calls.append(BotCall(bot_id, "deleteWebhook", {}, trio.current_time()))
            body = {"ok": False, "error_code": 400, "description": "Bad Request: not now"}
            return httpx.Response(400, json=body, request=request)
        return await super().handle_async_request(request)


async def test_a_refused_delete_webhook_is_logged_and_tried_again_a_second_later(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "w.db"
    telegram = RefusingDeletes(refusals=1)
    async with running_fleet(db, [1], configure=webhook_mode(), wrap_transport=telegram.wrap):
        await trio.sleep(1)
    caplog.set_level(logging.INFO, logger="botvisor")
    async with running_fleet(
        db, [1], configure=webhook_mode(mode=BotMode.POLLING), wrap_transport=telegram.wrap
    ) as fleet:
        telegram.keep(fleet.bot_id(1), payloads.message(71, chat_id=111, text="kept"))
        await trio.sleep(30)
        # The leftover webhook's delete is refused: the bot waits a second and polls, which
        # Telegram refuses (409, the webhook is still set), and deletes it again.
        deletes = [c.at for c in telegram.calls if c.method == "deleteWebhook"]
        assert len(deletes) == 2
        assert deletes[1] - deletes[0] >= POLL_ERROR_PAUSE
        assert telegram.bot(fleet.bot_id(1)).webhook is None
        assert [p["text"] for p in telegram.sent()] == ["kept"]
        assert await fleet.handle.store.load_webhook_registrations() == {}
        # Refused, not crashed: the same incarnation polled on.
        lifecycle = [
            e.to_json()["event"]
            for e in fleet.handle.metrics.recent_events()
            if e.user_id == 1 and e.kind == "lifecycle"
        ]
        assert lifecycle == ["started"]
        # The call is counted under its method's name (in the bot's usage, where the
        # fleet's periodic flush put it, or still in the bot's meter).
        metric = "calls.deleteWebhook.ok"
        counted = fleet.handle.fleet.get(1).pipeline.usage.take().get(metric, 0)
        await fleet.handle.store.flush()
        for row in await fleet.handle.store.usage("day", 0, 4e9, user_id=1):
            counted += row.counts.get(metric, 0)
        assert counted == 1
        # Deleted once: the bot's next incarnation polls straight away.
        await fleet.handle.fleet.suspend(1, "maintenance")
        await fleet.handle.fleet.resume(1)
        await trio.sleep(5)
        assert telegram.methods(fleet.bot_id(1)).count("deleteWebhook") == 2
    logged = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "botvisor.bot" and "webhook" in r.getMessage()
    ]
    assert logged[0] == (
        logging.WARNING,
        "bot 1: could not delete its webhook: deleteWebhook failed: 400 Bad Request: not now",
    )
    assert logged[-1] == (logging.INFO, "bot 1: webhook deleted (pending updates kept); polling")


async def test_a_mode_switch_at_run_time_loses_no_update(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db",
        [1],
        configure=webhook_mode(mode=BotMode.POLLING),
        wrap_transport=telegram.wrap,
    ) as fleet:
        fleet.api.add_bot(bot_token(2))
        await fleet.handle.fleet.add(BotConfig(user_id=2, token=BotToken(bot_token(2))))
        bot = BotToken(bot_token(2)).bot_id
        telegram.keep(bot, payloads.message(1, chat_id=111, text="one"))
        await trio.sleep(5)
        async with admin_client(fleet) as admin:
            # A config file's bot: its mode is the file's.
            refused = await admin.post("/admin/bots/1/mode", json={"mode": "webhook"})
            assert refused.status_code == 409
            assert "bots[].mode" in refused.json()["error"]["message"]
            bad = await admin.post("/admin/bots/2/mode", json={"mode": "carrier-pigeon"})
            assert bad.status_code == 422

            switched = await admin.post("/admin/bots/2/mode", json={"mode": "webhook"})
            assert switched.status_code == 200
            assert switched.json()["mode"] == "webhook"
            assert telegram.bot(bot).webhook is not None
            # Telegram kept what came meanwhile and pushes it.
            telegram.keep(bot, payloads.message(2, chat_id=111, text="two"))
            for update in telegram.bot(bot).pending[-1:]:
                await deliver(fleet, 2, update)
            await trio.sleep(5)
            telegram.bot(bot).pending.clear()
            # Pending at Telegram when the switch back comes: fetched by the first poll.
            telegram.keep(bot, payloads.callback_query(3, chat_id=111))
            telegram.keep(bot, payloads.message(4, chat_id=111, text="four"))
            back = await admin.post("/admin/bots/2/mode", json={"mode": "polling"})
            assert back.status_code == 200
            assert back.json()["mode"] == "polling"
            await trio.sleep(5)
        methods = telegram.methods(bot)
        assert methods.index("setWebhook") < methods.index("deleteWebhook")
        after_switch = methods[methods.index("deleteWebhook") :]
        assert after_switch[:2] == ["deleteWebhook", "getUpdates"]
        assert [p["text"] for p in telegram.sent()] == ["one", "two", "four"]
        assert await fleet.handle.store.inbox_pending(2) == []
        stored = await fleet.handle.store.get_bot(2)
        assert stored is not None and stored.settings["mode"] == "polling"


async def test_telegram_failing_to_deliver_makes_the_bot_degraded_then_unhealthy(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    telegram = WebhookTelegram()

    def configure(config: Config) -> Config:
        config = webhook_mode()(config)
        webhook = config.webhook.model_copy(update={"info_interval": 100.0})
        return config.model_copy(update={"webhook": webhook})

    async with running_fleet(
        tmp_path / "w.db", [1], configure=configure, wrap_transport=telegram.wrap
    ) as fleet:
        bot = telegram.bot(fleet.bot_id(1))
        actor = fleet.handle.fleet.get(1)
        await trio.sleep(1)
        assert bot.webhook is not None
        # No check during start-up: the first comes a minute after the start, then every
        # info_interval / bots.
        await trio.sleep(FIRST_WEBHOOK_CHECK_DELAY)
        assert telegram.methods().count("getWebhookInfo") == 0
        bot.pending.append(payloads.message(91))
        now = int(1_800_000_000 + trio.current_time())
        bot.last_error = (now, "Connection timed out")
        await trio.sleep(100)  # the first check
        assert actor.status() is BotStatus.DEGRADED
        assert "Connection timed out" in (actor.statistics().health.last_error or "")
        # Telegram keeps retrying and failing: the error's date moves on.
        bot.last_error = (int(1_800_000_000 + trio.current_time()), "Connection timed out")
        await trio.sleep(100)  # the second check reports it again
        assert actor.status() is BotStatus.UNHEALTHY
        bot.last_error = None
        await trio.sleep(100)
        assert actor.status() is BotStatus.HEALTHY
        assert telegram.methods().count("getWebhookInfo") == 3
        told = [
            (e.to_json()["status"], e.to_json()["reason"])
            for e in fleet.handle.metrics.recent_events()
            if e.user_id == 1 and e.kind == "status"
        ]
        # The events say why each status came (the dashboard shows the reason).
        problem = "Telegram cannot deliver to the webhook (1 updates pending): Connection timed out"
        assert told == [
            ("degraded", problem),
            ("unhealthy", problem),
            ("healthy", "webhook delivery recovered"),
        ]
        # The dormant bot was never woken for any of it.
        assert fleet.handle.supervisor.child_state(1) is None
        # Someone set another webhook: botvisor registers its own again.
        bot.webhook = {"url": "https://elsewhere.example/hook"}
        await trio.sleep(100)
        assert bot.webhook["url"] == f"{PUBLIC_URL}/1"
        assert telegram.methods().count("setWebhook") == 2


async def test_a_webhook_bot_removed_from_the_config_deletes_its_webhook_and_registration(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "w.db"
    telegram = WebhookTelegram()
    async with running_fleet(
        db, [1, 2], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        await trio.sleep(1)
        gone = fleet.bot_id(2)
    telegram.calls.clear()
    async with running_fleet(
        db, [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        await trio.sleep(1)
        # Telegram would otherwise push bot 2's updates to a URL that now answers 404.
        assert telegram.methods(gone) == ["deleteWebhook"]
        call = next(c for c in telegram.calls if c.bot_id == gone)
        assert call.params["drop_pending_updates"] is True
        assert telegram.methods(fleet.bot_id(1)) == []
        assert set(await fleet.handle.store.load_webhook_registrations()) == {1}


def hold_inbox_reads(
    store: Any, monkeypatch: pytest.MonkeyPatch, *, before: bool = False
) -> tuple[trio.Event, trio.Event]:
    """Hold the store's next ``inbox_pending`` read until ``release`` is set (after it read,
    or ``before`` it reads); ``held`` is set once a start is waiting there."""
    held, release = trio.Event(), trio.Event()
    original = store.inbox_pending

    async def inbox_pending(*args: Any) -> Any:
        first = not held.is_set()
        if first:
            held.set()
        if first and before:
            await release.wait()
        rows = await original(*args)
        if first and not before:
            await release.wait()
        return rows

    monkeypatch.setattr(store, "inbox_pending", inbox_pending)
    return held, release


async def test_a_delivery_while_a_woken_bot_reads_its_inbox_is_handled_once(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        actor = fleet.handle.fleet.get(1)
        await deliver(fleet, 1, payloads.message(81, chat_id=111, text="before"))
        await trio.sleep(IDLE + 5)
        # Suspended while dormant; the resumption starts it, reading the inbox.
        await fleet.handle.fleet.suspend(1)
        await deliver(fleet, 1, payloads.message(82, chat_id=111, text="while suspended"))
        held, release = hold_inbox_reads(fleet.handle.store, monkeypatch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fleet.handle.fleet.resume, 1)  # returns once the bot started
            with trio.fail_after(30):
                await held.wait()
            assert actor.state is ActorState.STARTING
            # Committed after the start's read: only the start's list of early ones has it.
            await deliver(fleet, 1, payloads.message(83, chat_id=111, text="while it starts"))
            await deliver(fleet, 1, payloads.message(84, chat_id=222, text="another chat"))
            release.set()
        await trio.sleep(10)
        sent = telegram.sent()
        assert [p["text"] for p in sent if p["chat_id"] == 111] == [
            "before",
            "while suspended",
            "while it starts",
        ]
        assert [p["text"] for p in sent if p["chat_id"] == 222] == ["another chat"]
        assert actor.statistics().handled_updates == 4
        assert await fleet.handle.store.inbox_pending(1) == []
        # Nothing crashed meanwhile (a crash's restart would read the inbox again).
        assert [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()] == []


async def test_deliveries_told_in_one_burst_to_a_dormant_bot_are_handled_once_in_order(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        handle = fleet.handle
        actor = handle.fleet.get(1)
        await deliver(fleet, 1, payloads.message(91, chat_id=111, text="first"))
        await trio.sleep(IDLE + 5)
        assert handle.supervisor.child_state(1) is None  # dormant, its undone inbox known
        # Three committed, then told with no checkpoint between: the first wakes the bot,
        # the others join it in the hand-over before the start takes it.
        updates = [
            payloads.message(92, chat_id=111, text="one"),
            payloads.message(93, chat_id=222, text="a"),
            payloads.message(94, chat_id=111, text="two"),
        ]
        received_at = 1_800_000_000.0 + trio.current_time()
        for update in updates:
            key = chat_key(update)
            entry = InboxEntry(update, key_chat_id(key), lane_name(key))
            await handle.store.inbox_add(1, [entry], None, received_at)
        for update in updates:
            key = chat_key(update)
            handle.fleet.webhook_stored(1, update, key, received_at, usage_kind(update)[0])
        await trio.sleep(10)
        sent = telegram.sent()
        assert [p["text"] for p in sent if p["chat_id"] == 111] == ["first", "one", "two"]
        assert [p["text"] for p in sent if p["chat_id"] == 222] == ["a"]
        assert actor.statistics().handled_updates == 4
        assert await handle.store.inbox_pending(1) == []
        assert [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()] == []


async def test_a_woken_bot_that_crashes_at_its_start_reads_its_inbox_at_the_restart(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    telegram = WebhookTelegram()
    async with running_fleet(
        tmp_path / "w.db", [1], configure=webhook_mode(), wrap_transport=telegram.wrap
    ) as fleet:
        actor = fleet.handle.fleet.get(1)
        await deliver(fleet, 1, payloads.message(95, chat_id=111, text="first"))
        await trio.sleep(IDLE + 5)
        assert fleet.handle.supervisor.child_state(1) is None  # dormant, its undone inbox known
        poller = actor._poller
        original = poller.dispatch_nowait
        crashes: list[int] = []

        def dispatch_nowait(*args: Any) -> None:
            if not crashes:
                crashes.append(1)
                raise RuntimeError("the start crashed")
            original(*args)

        monkeypatch.setattr(poller, "dispatch_nowait", dispatch_nowait)
        # Taken from the hand-over in memory, then the start crashes before it is dispatched.
        await deliver(fleet, 1, payloads.message(96, chat_id=111, text="after the crash"))
        await trio.sleep(30)
        assert crashes == [1]
        assert [p["text"] for p in telegram.sent()] == ["first", "after the crash"]
        assert await fleet.handle.store.inbox_pending(1) == []
