"""The webhook listener's certificate as setWebhook uploads it: multipart/form-data with a
``certificate`` InputFile, accepted by the simulated Bot API only when it is a PEM
certificate, and shown by getWebhookInfo as ``has_custom_certificate``."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pytest

from actors import WebhookCertificate
from actors.botapi import BotApiClient, TelegramError, make_http_client
from actors.config import TelegramConfig
from actors.secrets import BotToken
from actors.simulator import SimulatedBotApi, SimulatedTransport
from tests.certificates import needs_openssl, self_signed
from tests.harness import bot_token

pytestmark = needs_openssl

TELEGRAM = TelegramConfig(api_base="http://sim.invalid")
URL = "https://127.0.0.1:8443/tg/1"


def der_sha256(cert: Path) -> str:
    der = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return hashlib.sha256(der).hexdigest()


def test_the_first_certificate_of_a_pem_file_and_its_fingerprint(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "hook")
    other, _ = self_signed(tmp_path, "other")
    loaded = WebhookCertificate.from_pem(cert.read_bytes())
    assert loaded.fingerprint == der_sha256(cert)
    assert loaded.pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" not in loaded.pem
    # A file with the key first and a chain after: the first certificate only.
    bundle = key.read_bytes() + cert.read_bytes() + other.read_bytes()
    assert WebhookCertificate.from_pem(bundle) == loaded
    assert WebhookCertificate.from_pem(other.read_bytes()).fingerprint != loaded.fingerprint
    assert "pem=" not in repr(loaded)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "no PEM certificate"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not an X.509"),
    ],
)
def test_a_file_without_a_certificate_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        WebhookCertificate.from_pem(data)


async def test_set_webhook_uploads_the_certificate_as_multipart_and_the_api_shows_it(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path, "hook")
    pem = WebhookCertificate.from_pem(cert.read_bytes()).pem
    api = SimulatedBotApi(rng=random.Random(1), record=True)
    token = BotToken(bot_token(1))
    api.add_bot(token)
    transport = SimulatedTransport(api)
    async with make_http_client(transport=transport, ssl_context=None, telegram=TELEGRAM) as http:
        client = BotApiClient(http, token=token, telegram=TELEGRAM)
        assert await client.set_webhook(
            url=URL,
            secret_token="bvw_secret",
            max_connections=7,
            allowed_updates=["message", "callback_query"],
            certificate=pem,
        )
        info = await client.get_webhook_info()
        assert info["has_custom_certificate"] is True
        assert (info["url"], info["max_connections"]) == (URL, 7)
        assert info["allowed_updates"] == ["message", "callback_query"]
        # The other parameters came as form fields, read as the JSON ones are.
        (call,) = [c for c in api.calls if c.method == "setWebhook"]
        assert call.params["secret_token"] == "bvw_secret"
        assert call.params["drop_pending_updates"] == "false"

        # A key is no certificate: refused, the webhook as it was.
        with pytest.raises(TelegramError) as refused:
            await client.call(
                "setWebhook",
                {"url": "https://127.0.0.1:8443/tg/2"},
                files={"certificate": ("hook.pem", key.read_bytes(), "application/x-pem-file")},
            )
        assert refused.value.error_code == 400
        assert "not a PEM certificate" in refused.value.description
        assert (await client.get_webhook_info())["url"] == URL

        # Set again without one: no custom certificate any more.
        await client.set_webhook(
            url=URL, secret_token="bvw_secret", max_connections=7, allowed_updates=["message"]
        )
        assert (await client.get_webhook_info())["has_custom_certificate"] is False
