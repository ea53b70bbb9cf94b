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

from actors.simulator import FaultProfile, SimulatedBotApi
from tests.admin.helpers import AUTH, admin_fleet, client, make_app

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
