"""Direct TLS for webhooks (``[webhook] tls_cert`` / ``tls_key``): setWebhook uploads the
listener's self-signed certificate, Telegram (the simulated Bot API) delivers over HTTPS
trusting that certificate, and a renewed certificate registers the bots again."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from actors import BotMode, BotToken, WebhookCertificate, WebhookConfig
from actors.simulator import SimulatedBotApi
from supervisor import Config, ConfigError, load_config
from tests.certificates import needs_openssl, self_signed
from tests.harness import bot_token, running_fleet

pytestmark = needs_openssl

MASTER = "master secret of the webhook TLS tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ReplyWatch(httpx.AsyncBaseTransport):
    """Between the bots and the simulated API: ``replied`` is set by the first sendMessage."""

    def __init__(self) -> None:
        self.replied = trio.Event()
        self._inner: httpx.AsyncBaseTransport | None = None

    def wrap(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        self._inner = inner
        return self

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self._inner is not None
        response = await self._inner.handle_async_request(request)
        if request.url.path.endswith("/sendMessage"):
            self.replied.set()
        return response


def direct_tls(cert: Path, key: Path, port: int) -> Callable[[Config], Config]:
    def configure(config: Config) -> Config:
        hook = WebhookConfig(
            listen=f"127.0.0.1:{port}",
            public_url=f"https://127.0.0.1:{port}/tg",
            secret=MASTER,
            tls_cert=str(cert),
            tls_key=str(key),
        )
        bots = tuple(bot.model_copy(update={"mode": BotMode.WEBHOOK}) for bot in config.bots)
        return config.model_copy(update={"webhook": hook, "bots": bots})

    return configure


async def test_telegram_delivers_over_https_trusting_the_uploaded_certificate(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path, "hook")
    port = free_port()
    api = SimulatedBotApi(rng=random.Random(1), record=True)
    token = bot_token(1)
    watch = ReplyWatch()
    with trio.fail_after(60):
        async with running_fleet(
            tmp_path / "t.db",
            [1],
            api=api,
            configure=direct_tls(cert, key, port),
            wrap_transport=watch.wrap,
        ) as fleet:
            await trio.testing.wait_all_tasks_blocked()
            (call,) = [c for c in api.calls if c.method == "setWebhook"]
            _, info = await api.handle(token, "getWebhookInfo", {})
            assert info["result"]["has_custom_certificate"] is True
            assert info["result"]["url"] == f"https://127.0.0.1:{port}/tg/1"
            stored = (await fleet.handle.store.load_webhook_registrations())[1]
            certificate = WebhookCertificate.from_pem(cert.read_bytes())
            assert stored.certificate_fingerprint == certificate.fingerprint
            # The certificate is what makes the listener reachable: without trusting it,
            # a client's TLS handshake fails.
            async with httpx.AsyncClient() as untrusting:
                with pytest.raises(httpx.ConnectError):
                    await untrusting.post(f"https://127.0.0.1:{port}/tg/1", content=b"{}")

            chat = 4242
            api.send_user_message(token, chat, "hello over TLS")
            async with (
                httpx.AsyncClient() as plain,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(
                    partial(api.push_webhooks, plain, trust_uploaded_certificates=True)
                )
                await watch.replied.wait()
                nursery.cancel_scope.cancel()
            report = api.report()
            assert (report.user_messages, report.answered, report.duplicates) == (1, 1, 0)
            stats = api.statistics().webhooks
            assert stats is not None and stats.deliveries == 1
            assert stats.failed_deliveries == 0
            receiver = fleet.handle.webhook
            assert receiver is not None and receiver.statistics().accepted_new == 1
            replies = [c for c in api.calls if c.method == "sendMessage"]
            assert [r.params["chat_id"] for r in replies] == [chat]
            assert "hello over TLS" in str(replies[0].params["text"])
            assert BotToken(token).bot_id == call.bot_id


async def test_a_renewed_certificate_registers_again_and_an_unchanged_one_does_not(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    first = self_signed(tmp_path, "first")
    renewed = self_signed(tmp_path, "renewed")
    port = free_port()
    api = SimulatedBotApi(rng=random.Random(2), record=True)
    db = tmp_path / "t.db"

    def registrations() -> int:
        return sum(1 for c in api.calls if c.method == "setWebhook")

    for (cert, key), calls in ((first, 2), (first, 2), (renewed, 4), (renewed, 4)):
        async with running_fleet(
            db, [1, 2], api=api, configure=direct_tls(cert, key, port)
        ) as fleet:
            await trio.sleep(1)
            assert registrations() == calls
            fingerprint = WebhookCertificate.from_pem(cert.read_bytes()).fingerprint
            stored = await fleet.handle.store.load_webhook_registrations()
            assert {r.certificate_fingerprint for r in stored.values()} == {fingerprint}


def test_a_webhook_certificate_that_does_not_load_is_a_config_problem(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "hook")
    _, other_key = self_signed(tmp_path, "other")
    mismatched = tmp_path / "w.toml"
    mismatched.write_text(
        '[webhook]\npublic_url = "https://127.0.0.1:8443/tg"\n'
        f'tls_cert = "{cert}"\ntls_key = "{other_key}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(mismatched, {}, check_environment=True)
    (problem,) = caught.value.problems
    assert problem.startswith(
        f"webhook.tls_cert / webhook.tls_key: cannot load '{cert}' with '{other_key}': "
    )
    good = tmp_path / "good.toml"
    good.write_text(
        '[webhook]\npublic_url = "https://127.0.0.1:8443/tg"\n'
        f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    )
    assert load_config(good, {}, check_environment=True).webhook.tls_cert == str(cert)


async def test_a_webhook_set_again_without_the_certificate_is_registered_again(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path, "hook")
    port = free_port()
    api = SimulatedBotApi(rng=random.Random(3), record=True)
    token = bot_token(1)

    def configure(config: Config) -> Config:
        config = direct_tls(cert, key, port)(config)
        webhook = config.webhook.model_copy(update={"info_interval": 100.0})
        return config.model_copy(update={"webhook": webhook})

    async def has_certificate() -> bool:
        _, info = await api.handle(token, "getWebhookInfo", {})
        return bool(info["result"]["has_custom_certificate"])

    async with running_fleet(tmp_path / "t.db", [1], api=api, configure=configure):
        await trio.sleep(1)
        assert await has_certificate()
        # Someone (another deployment with the same token) sets it without the certificate.
        _, info = await api.handle(token, "getWebhookInfo", {})
        await api.handle(token, "setWebhook", {"url": info["result"]["url"]})
        assert not await has_certificate()
        await trio.sleep(60 + 100 + 1)  # the first getWebhookInfo check, and the queue
        assert await has_certificate()
    uploads = [c for c in api.calls if c.method == "setWebhook" and "certificate" in c.params]
    assert len(uploads) == 2
