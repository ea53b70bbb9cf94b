"""The daemon's webhook listener over real HTTP on 127.0.0.1: a delivery with the bot's
derived secret is committed to SQLite before its 200, /metrics counts it, and the listener
is stopped first at shutdown."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest
import trio

from actors import BotMode, BotToken, WebhookConfig, derive_secret_token
from supervisor import Config
from tests import payloads
from tests.harness import ADMIN_TOKEN, running_fleet

MASTER = "the webhook master secret of this test"


def webhook_bots(config: Config) -> Config:
    bots = tuple(b.model_copy(update={"mode": BotMode.WEBHOOK}) for b in config.bots)
    admin = config.admin.model_copy(update={"token": ADMIN_TOKEN})
    return config.model_copy(
        update={
            "bots": bots,
            "admin": admin,
            "webhook": WebhookConfig(
                listen="127.0.0.1:0", public_url="https://bots.example.com/tg", secret=MASTER
            ),
        }
    )


async def test_a_delivery_over_real_http_is_in_sqlite_when_it_is_answered_200(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="botvisor")
    db = tmp_path / "hook.db"
    update = payloads.forum_topic_message(501)
    async with running_fleet(db, [1001], admin=True, configure=webhook_bots) as fleet:
        url = fleet.handle.webhook_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        secret = derive_secret_token(MASTER, BotToken(fleet.tokens[1001]).bot_id)
        async with httpx.AsyncClient(base_url=url) as client:
            with trio.fail_after(30):
                wrong = await client.post(
                    "/tg/1001",
                    content=json.dumps(update),
                    headers={"X-Telegram-Bot-Api-Secret-Token": "bvw_" + "x" * 43},
                )
                answer = await client.post(
                    "/tg/1001",
                    content=json.dumps(update),
                    headers={
                        "X-Telegram-Bot-Api-Secret-Token": secret,
                        "content-type": "application/json",
                    },
                )
            assert wrong.status_code == 401
            assert answer.status_code == 200
            assert answer.content == b""
            # Committed before the answer: another connection to the file sees it now.
            with sqlite3.connect(db) as conn:
                stored = conn.execute(
                    "SELECT user_id, update_id, payload FROM inbox WHERE user_id = 1001"
                ).fetchall()
            assert [(uid, upd) for uid, upd, _ in stored] == [(1001, 501)]
            assert json.loads(stored[0][2]) == update
        async with httpx.AsyncClient(base_url=fleet.handle.admin_url or "") as admin:
            with trio.fail_after(30):
                metrics = await admin.get(
                    "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                )
                ready = await admin.get("/readyz")
        assert 'botvisor_webhook_deliveries_accepted_total{outcome="new"} 1.0' in metrics.text
        assert 'botvisor_webhook_deliveries_rejected_total{reason="bad_secret"} 1.0' in (
            metrics.text
        )
        assert "botvisor_webhook_commit_seconds_count 1.0" in metrics.text
        assert secret not in metrics.text
        assert ready.status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "botvisor"]
    first = next(i for i, m in enumerate(messages) if m.startswith("shutdown: webhook"))
    admin_stopped = next(i for i, m in enumerate(messages) if m.startswith("shutdown: admin"))
    assert first < admin_stopped


async def test_a_taken_webhook_address_is_a_setup_error_naming_webhook_listen(
    tmp_path: Path,
) -> None:
    from supervisor.daemon import setup_error

    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        def on_taken_port(config: Config) -> Config:
            hooked = webhook_bots(config)
            return hooked.model_copy(
                update={
                    "webhook": hooked.webhook.model_copy(update={"listen": f"127.0.0.1:{port}"})
                }
            )

        with pytest.raises(BaseException) as caught:
            async with running_fleet(tmp_path / "t.db", [1001], configure=on_taken_port):
                pass
    error = setup_error(caught.value)
    assert error is not None
    assert "webhook.listen" in str(error)
    assert f"127.0.0.1:{port}" in str(error)
