"""A webhook bot's failed setWebhook is tried again at run time (issue 12's leftovers): with a
backoff (5 s doubling to 10 min, jittered), the Bot API's error on the bot's health while it
is not registered, cleared once it is; a bad token suspends the bot, as it does a polling
bot, and is not retried."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing

from actors import (
    BotConfig,
    BotMode,
    BotStatus,
    BotToken,
    BreakerConfig,
    RetryConfig,
    RetryPolicyConfig,
    WebhookConfig,
)
from actors.simulator import SimulatedBotApi
from supervisor import Config
from supervisor.registration import RETRY_JITTER, RETRY_MAX, RETRY_MIN
from tests.harness import admin_client, bot_token, running_fleet

# A loopback URL: the simulator accepts http there, as it does for the tests' receivers.
PUBLIC_URL = "http://127.0.0.1:8443/tg"
MASTER = "master secret of the registration tests"


def webhook_mode(mode: BotMode = BotMode.WEBHOOK) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        hook = WebhookConfig(listen="127.0.0.1:0", public_url=PUBLIC_URL, secret=MASTER)
        bots = tuple(bot.model_copy(update={"mode": mode}) for bot in config.bots)
        return config.model_copy(
            update={
                "webhook": hook,
                "bots": bots,
                # One HTTP call per registration attempt (no quick retries inside it), and a
                # breaker that stays closed: the calls the test sees are the backoff's own.
                "retry": RetryConfig(transient_network=RetryPolicyConfig(max_retries=0)),
                "breaker": BreakerConfig(failure_threshold=1000),
            }
        )

    return configure


def set_webhook_times(api: SimulatedBotApi, bot_id: int) -> list[float]:
    return [c.time for c in api.calls if c.method == "setWebhook" and c.bot_id == bot_id]


def expected_delay(failures: int) -> float:
    return min(RETRY_MAX, RETRY_MIN * 2.0 ** (failures - 1))


async def test_a_failing_set_webhook_is_retried_with_a_capped_backoff_until_it_succeeds(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(3), record=True)
    token = bot_token(1)
    api.add_bot(token)
    failures = 9  # 5, 10, 20, ..., 320, then 600 and 600: the cap holds
    api.refuse(token, "setWebhook", failures, error_code=502, description="Bad Gateway")
    async with running_fleet(tmp_path / "r.db", [1], api=api, configure=webhook_mode()) as fleet:
        actor = fleet.handle.fleet.get(1)
        await trio.sleep(1)
        # Not registered: Telegram pushes nothing; the operator sees why.
        assert api.bot(token).webhook is None
        assert actor.status() is BotStatus.DEGRADED
        async with admin_client(fleet) as admin:
            shown = (await admin.get("/admin/bots/1")).json()
            health = (await admin.get("/admin/system/bot-health/1")).json()
            unhealthy = (await admin.get("/admin/system/bot-health/unhealthy")).json()
        assert shown["status"] == "degraded"
        assert shown["webhook_registration_error"] == "setWebhook failed: 502 Bad Gateway"
        assert health["webhook_registration_error"] == "setWebhook failed: 502 Bad Gateway"
        assert health["last_error"] == "setWebhook failed: 502 Bad Gateway"
        assert [b["user_id"] for b in unhealthy["bots"]] == [1]
        assert token not in str(shown) + str(health)

        await trio.sleep(3 * 3600)
        times = set_webhook_times(api, fleet.bot_id(1))
        # The refused calls and the one that succeeded; nothing after it.
        assert len(times) == failures + 1
        for n, (before, after) in enumerate(itertools.pairwise(times), start=1):
            wanted = expected_delay(n)
            gap = after - before
            assert wanted * (1 - RETRY_JITTER) <= gap <= wanted * (1 + RETRY_JITTER), (n, gap)
        assert times[-1] - times[0] > 1800  # 5+10+...+320 + 2 x 600, jittered
        hook = api.bot(token).webhook
        assert hook is not None and hook.url == f"{PUBLIC_URL}/1"
        assert actor.status() is BotStatus.HEALTHY
        assert actor.statistics().health.webhook_registration_error is None
        told = [
            (e.to_json()["status"], e.to_json()["reason"])
            for e in fleet.handle.metrics.recent_events()
            if e.user_id == 1 and e.kind == "status"
        ]
        # The events say why each status came (the dashboard shows the reason).
        refused = "setWebhook failed: 502 Bad Gateway"
        assert told == [
            ("degraded", refused),
            ("unhealthy", refused),
            ("healthy", "webhook registered"),
        ]
        assert fleet.handle.fleet.registration_retries(1) == 0
        assert set(await fleet.handle.store.load_webhook_registrations()) == {1}
        async with admin_client(fleet) as admin:
            shown = (await admin.get("/admin/bots/1")).json()
        assert (shown["status"], shown["webhook_registration_error"]) == ("healthy", None)


async def test_a_failed_registration_after_a_mode_switch_is_retried(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(4), record=True)
    async with running_fleet(
        tmp_path / "r.db", [1], api=api, configure=webhook_mode(BotMode.POLLING)
    ) as fleet:
        token = bot_token(2)
        api.add_bot(token)
        await fleet.handle.fleet.add(BotConfig(user_id=2, token=BotToken(token)))
        await trio.sleep(1)
        api.refuse(token, "setWebhook", 2, error_code=500, description="Internal Server Error")
        async with admin_client(fleet) as admin:
            switched = await admin.post("/admin/bots/2/mode", json={"mode": "webhook"})
            assert switched.status_code == 200
            assert switched.json()["mode"] == "webhook"
            shown = (await admin.get("/admin/bots/2")).json()
        assert shown["webhook_registration_error"] == "setWebhook failed: 500 Internal Server Error"
        assert api.bot(token).webhook is None
        await trio.sleep(60)
        times = set_webhook_times(api, BotToken(token).bot_id)
        assert len(times) == 3
        assert api.bot(token).webhook is not None
        assert fleet.handle.fleet.get(2).statistics().health.webhook_registration_error is None


async def test_a_bad_token_at_set_webhook_suspends_the_bot_and_is_not_retried(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(5), record=True)
    token = bot_token(1)
    api.add_bot(token)
    api.revoke(token)
    async with running_fleet(tmp_path / "r.db", [1], api=api, configure=webhook_mode()) as fleet:
        actor = fleet.handle.fleet.get(1)
        await trio.sleep(3600)
        assert len(set_webhook_times(api, fleet.bot_id(1))) == 1
        assert actor.status() is BotStatus.SUSPENDED
        assert "401 Unauthorized" in (actor.suspended_reason or "")
        assert fleet.handle.fleet.registration_retries(1) == 0
        await fleet.handle.store.flush()
        stored = await fleet.handle.store.get_bot(1)
        assert stored is not None and "401" in (stored.suspended_reason or "")
