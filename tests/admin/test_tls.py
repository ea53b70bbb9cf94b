"""The admin API over HTTPS (``admin.tls_cert`` / ``admin.tls_key``): real sockets, real
clock, a self-signed certificate made with the openssl command."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trio

from supervisor import ConfigError, load_config
from tests.admin.helpers import AUTH, served
from tests.certificates import needs_openssl, self_signed
from tests.harness import running_fleet

pytestmark = needs_openssl


async def test_the_admin_api_serves_https_with_the_configured_certificate(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path)
    configure = served(admin={"tls_cert": str(cert), "tls_key": str(key)})
    with trio.fail_after(60):
        async with running_fleet(tmp_path / "t.db", [1], configure=configure) as fleet:
            url = fleet.handle.admin_url
            assert url is not None and url.startswith("https://127.0.0.1:")
            trusted = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(verify=trusted, headers=AUTH) as http:
                response = await http.get(f"{url}/admin/bots")
                assert response.status_code == 200
                assert response.json()["count"] == 1
            # Plain HTTP to the same port gets no answer from the API.
            async with httpx.AsyncClient() as plain:
                with pytest.raises(httpx.HTTPError):
                    await plain.get(url.replace("https://", "http://", 1) + "/healthz")


def test_a_certificate_without_its_key_or_a_mismatched_pair_is_a_config_problem(
    tmp_path: Path,
) -> None:
    cert, _ = self_signed(tmp_path)
    only_cert = tmp_path / "a.toml"
    only_cert.write_text(f'[admin]\ntls_cert = "{cert}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(only_cert, {})
    assert caught.value.problems == [
        "admin.tls_key must be set with tls_cert (HTTPS needs both), got None"
    ]

    other = tmp_path / "other"
    other.mkdir()
    _, other_key = self_signed(other)
    mismatched = tmp_path / "b.toml"
    mismatched.write_text(f'[admin]\ntls_cert = "{cert}"\ntls_key = "{other_key}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(mismatched, {}, check_environment=True)
    (problem,) = caught.value.problems
    assert problem.startswith(
        f"admin.tls_cert / admin.tls_key: cannot load '{cert}' with '{other_key}': "
    )
    assert load_config(mismatched, {}).admin.tls  # only the machine check loads the files
