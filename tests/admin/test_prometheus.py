"""A real Prometheus (Debian's ``prometheus`` package) scrapes the daemon's ``/metrics`` with
the admin token from a credentials file, and PromQL reads the fleet's counters and
histograms back: the target is up, updates by type sum to what the simulated Telegram
delivered, ``histogram_quantile`` gives numbers, and the method label stays bounded.

Real time and real sockets (Prometheus is a real server): the test polls Prometheus's HTTP
API until each condition holds, under one overall deadline that fails it.
"""

from __future__ import annotations

import math
import random
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import CALL_LATENCY_BOUNDS, INSTRUMENT_METHODS
from actors.simulator import SimulatedBotApi
from tests import payloads
from tests.admin.helpers import ADMIN_TOKEN, served
from tests.harness import bot_token, running_fleet

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="install Debian's prometheus package (apt-get install prometheus)"
)

# Everything, Prometheus's start included, within this (the test takes ~5 s here).
DEADLINE = 18.0
POLL = 0.1  # between two queries of Prometheus's API


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(tmp_path: Path, target: str) -> Path:
    """prometheus.yml scraping ``target`` every second with the admin token, which only a
    0600 file holds (never a command line or a URL)."""
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN)
    token_file.chmod(0o600)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: botvisor\n"
        "    metrics_path: /metrics\n"
        "    authorization:\n"
        "      type: Bearer\n"
        f"      credentials_file: {token_file}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    return config


@asynccontextmanager
async def prometheus(tmp_path: Path, target: str) -> AsyncIterator[httpx.AsyncClient]:
    """Prometheus scraping ``target``, and a client of its API; killed at the end."""
    assert PROMETHEUS is not None
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = await trio.lowlevel.open_process(
        [
            PROMETHEUS,
            f"--config.file={write_config(tmp_path, target)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            yield api
    finally:
        # Reliably gone, whatever happened: SIGTERM, then SIGKILL if it lingers.
        process.terminate()
        with trio.move_on_after(3) as waited:
            waited.shield = True
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        log.close()


async def query(api: httpx.AsyncClient, promql: str) -> list[dict[str, Any]] | None:
    """The vector result of an instant query; None while Prometheus is not answering yet."""
    try:
        response = await api.get("/api/v1/query", params={"query": promql})
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def scalar(api: httpx.AsyncClient, promql: str) -> float | None:
    """The single value of ``promql`` now, or None if it has none (yet)."""
    result = await query(api, promql)
    if not result:
        return None
    (sample,) = result
    return float(sample["value"][1])


async def until(api: httpx.AsyncClient, promql: str, wanted: float) -> None:
    """Poll until ``promql`` equals ``wanted`` (the overall deadline fails the test)."""
    while await scalar(api, promql) != wanted:  # noqa: ASYNC110 - an external server
        await trio.sleep(POLL)


async def finite(api: httpx.AsyncClient, promql: str) -> float:
    """Poll until ``promql`` is a finite number, and return it."""
    while True:
        value = await scalar(api, promql)
        if value is not None and math.isfinite(value):
            return value
        await trio.sleep(POLL)


async def answered(api: SimulatedBotApi, count: int) -> None:
    while api.report().answered < count:  # noqa: ASYNC110 - the simulator has no event
        await trio.sleep(0.02)


async def test_a_real_prometheus_scrapes_counters_and_histograms(tmp_path: Path) -> None:
    api = SimulatedBotApi(rng=random.Random(5))
    typo = bot_token(2)
    api.add_bot(typo)
    with trio.fail_after(DEADLINE):
        async with running_fleet(tmp_path / "p.db", [1], api=api, configure=served()) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            target = url.removeprefix("http://").rstrip("/")
            token = fleet.tokens[1]
            # Before the first scrape: the series exist, so the later rise is a rate.
            for n in range(5):
                api.send_user_message(token, 1000 + n, f"early {n}")
            await answered(api, 5)

            async with prometheus(tmp_path, target) as prom:
                try:
                    await until(prom, 'up{job="botvisor"}', 1)
                    first = await finite(prom, "sum(botvisor_updates_received_total)")
                    assert first == 5

                    # Traffic between scrapes, of several update types and one tenant whose
                    # handler calls a method Telegram does not have.
                    async with httpx.AsyncClient(base_url=url) as admin:
                        response = await admin.post(
                            "/admin/bots",
                            json={
                                "user_id": 2,
                                "token": typo,
                                "handler": "tests.handlers_for_tests:call_a_misspelled_method",
                            },
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                        )
                    assert response.status_code == 201, response.text
                    for n in range(20):
                        api.send_user_message(token, 2000 + n, f"later {n}")
                    api.send_update(token, payloads.edited_message(chat_id=2000))
                    api.send_update(token, payloads.my_chat_member(chat_id=-4001, user_id=222))
                    api.send_update(token, payloads.inline_query(user_id=333))
                    api.send_update(token, payloads.future_update(chat_id=-4001))
                    api.send_user_message(typo, 777, "typo")
                    await answered(api, 25)
                    while sum(b.updates_pending for b in api.report().bots):  # noqa: ASYNC110
                        await trio.sleep(0.02)
                    delivered = api.report().updates_confirmed
                    assert delivered == 5 + 20 + 4 + 1

                    await until(prom, "sum(botvisor_updates_received_total)", delivered)
                    assert await scalar(prom, 'botvisor_updates_received_total{type="other"}') == 1
                    assert (
                        await scalar(prom, 'botvisor_updates_received_total{type="message"}') == 26
                    )

                    reply_p95 = await finite(
                        prom,
                        "histogram_quantile(0.95, sum by (le) "
                        "(rate(botvisor_reply_latency_seconds_bucket[1m])))",
                    )
                    assert 0 < reply_p95 <= 60
                    call_p95 = await finite(
                        prom,
                        "histogram_quantile(0.95, sum by (le) (rate("
                        'botvisor_api_call_duration_seconds_bucket{method="sendMessage"}[1m])))',
                    )
                    assert 0 < call_p95 <= CALL_LATENCY_BOUNDS[-1]

                    # Bounded labels: methods from the fixed list (the typo is "other"), and
                    # no per-bot histogram although per-bot series are on.
                    methods = await query(prom, "group by (method) (botvisor_api_calls_total)")
                    assert methods is not None
                    labels = {sample["metric"]["method"] for sample in methods}
                    assert labels <= set(INSTRUMENT_METHODS)
                    assert {"getUpdates", "sendMessage", "other"} <= labels
                    per_method = await scalar(
                        prom,
                        "count(count by (method) (botvisor_api_call_duration_seconds_bucket))",
                    )
                    assert per_method is not None and per_method <= len(INSTRUMENT_METHODS)
                    assert await scalar(
                        prom, "count(botvisor_api_call_duration_seconds_bucket)"
                    ) == per_method * (len(CALL_LATENCY_BOUNDS) + 1)
                    assert not await query(
                        prom, 'botvisor_api_call_duration_seconds_bucket{user_id!=""}'
                    )
                    assert await query(prom, 'botvisor_bot_requests_total{user_id="1"}')
                except BaseException:
                    print((tmp_path / "prometheus.log").read_text(errors="replace")[-3000:])
                    raise
