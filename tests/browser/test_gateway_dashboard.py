"""The dashboard through the fleet gateway, in a real browser: Debian's Chromium, two real
``botvisor run --shard i/2`` processes, ``botvisor gateway`` over them, the simulator on a
thread. The page shows the fleet of both shards; with one shard hung (SIGSTOP) a banner names
it and the counts are the other shard's."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from actors import jump_hash
from actors.simulator import SimulatedBotApi
from tests.browser.harness import (
    CHROMIUM_ARGS,
    CHROMIUM_MISSING,
    DaemonChild,
    GatewayChild,
    SimThread,
    chromium_path,
    new_sim,
    write_dashboard_config,
)

CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_MISSING)

ADMIN_TOKEN = "gateway-browser-test-token-7c21"
FIRST_BOT = 8_200_000_001
USERS = tuple(range(2001, 2009))
SHARDS = 2
WITHIN = 20.0


class Fleet:
    def __init__(self, shards: list[DaemonChild], gateway: GatewayChild) -> None:
        self.shards = shards
        self.gateway = gateway
        self.url = gateway.admin_url


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("gateway-dashboard")
    rng = random.Random(2024)
    tokens = {
        user_id: SimulatedBotApi.make_token(FIRST_BOT + i, rng) for i, user_id in enumerate(USERS)
    }
    assert {jump_hash(u, SHARDS) for u in USERS} == {0, 1}
    sim = SimThread(lambda: new_sim(tokens.values()))
    sim.start()
    shards = [
        DaemonChild(
            write_dashboard_config(
                tmp / f"shard-{i}.toml",
                api_base=sim.url,
                db_path=tmp / f"shard-{i}.db",
                bots=tokens,
            ),
            ADMIN_TOKEN,
            args=("--shard", f"{i}/{SHARDS}"),
        )
        for i in range(SHARDS)
    ]
    gateway: GatewayChild | None = None
    codes: list[int] = []
    try:
        urls = [shard.start() for shard in shards]
        config = tmp / "gateway.toml"
        listed = ", ".join(f'"{url}"' for url in urls)
        config.write_text(
            f'[gateway]\nlisten = "127.0.0.1:0"\nshard_urls = [{listed}]\nshard_timeout = 1\n'
        )
        gateway = GatewayChild(config, ADMIN_TOKEN)
        gateway.start()
        yield Fleet(shards, gateway)
    finally:
        if gateway is not None:
            codes.append(gateway.stop())
        codes += [shard.stop() for shard in shards]
        sim.stop()
    assert codes == [0] * (SHARDS + 1), gateway.text if gateway else ""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, fleet: Fleet) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WITHIN * 1000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield tab
    finally:
        context.close()
    assert problems == []


def sign_in(page: Page, fleet: Fleet) -> None:
    page.goto(fleet.url + "/")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()


def total(page: Page) -> int:
    text = page.locator('[data-testid="status-counts"] li[data-key="total"] .n').inner_text()
    return int(text.replace(",", ""))


def test_the_overview_and_the_bot_list_show_the_bots_of_every_shard(
    page: Page, fleet: Fleet
) -> None:
    sign_in(page, fleet)
    expect(page.locator('#view[data-ready="true"]')).to_be_visible()
    assert total(page) == len(USERS)
    expect(page.get_by_test_id("shards-banner")).to_be_hidden()
    expect(page.get_by_text("live: on")).to_be_visible()
    page.goto(fleet.url + "/#/bots")
    rows = page.locator('[data-testid="bot-rows"] tr')
    expect(rows).to_have_count(len(USERS))
    assert [int(r.locator("td").first.inner_text()) for r in rows.all()] == list(USERS)


def test_a_bot_page_of_either_shard_works_through_the_gateway(page: Page, fleet: Fleet) -> None:
    sign_in(page, fleet)
    expect(page.locator('#view[data-ready="true"]')).to_be_visible()
    for user_id in (min(u for u in USERS if jump_hash(u, SHARDS) == s) for s in range(SHARDS)):
        page.goto(f"{fleet.url}/#/bot/{user_id}")
        expect(page.locator('#view[data-loaded="true"]')).to_be_visible()
        expect(page.get_by_role("heading", name=f"Bot {user_id}")).to_be_visible()
        expect(page.get_by_test_id("breaker-state")).to_have_attribute("data-value", "closed")
        expect(page.get_by_test_id("dead-letters")).to_contain_text("no dead letters")


def test_a_hung_shard_is_named_in_a_banner_and_its_bots_are_missing(
    page: Page, fleet: Fleet
) -> None:
    hung = fleet.shards[1]
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        sign_in(page, fleet)
        expect(page.locator('#view[data-ready="true"]')).to_be_visible()
        banner = page.get_by_test_id("shards-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("shard 1 did not answer (timeout after 1 s)")
        assert total(page) == sum(1 for u in USERS if jump_hash(u, SHARDS) == 0)
        # One of its bots: the gateway's answer names the shard on the page.
        theirs = min(u for u in USERS if jump_hash(u, SHARDS) == 1)
        page.goto(f"{fleet.url}/#/bot/{theirs}")
        expect(page.locator("#view .error")).to_contain_text("shard 1 did not answer")
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    # Back: the next fleet answer has every shard, and the banner goes.
    page.goto(fleet.url + "/#/")
    expect(page.locator('#view[data-ready="true"]')).to_be_visible()
    expect(page.get_by_test_id("shards-banner")).to_be_hidden()
    assert total(page) == len(USERS)
