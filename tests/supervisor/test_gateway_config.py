"""``botvisor gateway --config FILE``: the ``[gateway]`` table, each mistake named by its key,
the token only from the environment and never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.gateway import GatewayConfigError, load_gateway_config

TOKEN = "gateway-admin-token-0123456789"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_gateway_config(path, env if env is not None else {"BOTVISOR_ADMIN_TOKEN": TOKEN})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(GatewayConfigError) as caught:
        load(tmp_path, text, env)
    return str(caught.value)


def test_shards_from_a_list_or_from_a_template_and_a_count(tmp_path: Path) -> None:
    listed = load(
        tmp_path,
        '[gateway]\nshard_urls = ["http://10.0.0.1:8080/", "https://10.0.0.2:8443"]\n',
    )
    assert listed.urls == ["http://10.0.0.1:8080", "https://10.0.0.2:8443"]  # type: ignore[attr-defined]
    template = load(
        tmp_path,
        '[gateway]\nlisten = "0.0.0.0:8090"\n'
        'shard_url = "http://botvisor-{i}.botvisor-shards:8080"\nshards = 3\n'
        "shard_timeout = 1.5\n",
    )
    assert template.urls == [  # type: ignore[attr-defined]
        f"http://botvisor-{i}.botvisor-shards:8080" for i in range(3)
    ]
    assert template.shard_timeout == 1.5  # type: ignore[attr-defined]
    assert template.token == TOKEN  # type: ignore[attr-defined]
    assert TOKEN not in repr(template)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[telegram]\n", "no [gateway] table"),
        ("[gateway]\n", "name the shards, with shard_urls"),
        ('[gateway]\nshard_url = "http://s-{i}:8080"\n', "gateway.shards: name the shards"),
        ('[gateway]\nshard_url = "http://s:8080"\nshards = 2\n', "gateway.shard_url must be"),
        (
            '[gateway]\nshard_urls = ["http://a:1"]\nshard_url = "http://s-{i}:1"\nshards = 1\n',
            "not both",
        ),
        ('[gateway]\nshard_urls = ["ftp://a:1"]\n', "gateway.shard_urls[0] must be an http://"),
        ('[gateway]\nshard_urls = ["http://a:1"]\nshard_timeout = 0\n', "gateway.shard_timeout"),
        ('[gateway]\nshard_urls = ["http://a:1"]\nshards_urls = 3\n', "shards_urls"),
        ('[gateway]\nshard_urls = ["http://a:1"]\nshards = 0\n', "gateway.shards"),
        ('[gateway]\nshard_urls = ["http://a:1"]\nlisten = "x"\n', "gateway.listen"),
        ('[gateway]\nshard_urls = ["http://a:1"]\ntoken = "t"\n', "not read from a file"),
        ("[gateway\n", "not valid TOML"),
    ],
)
def test_each_mistake_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems(tmp_path, text)


def test_a_url_with_credentials_is_refused_without_showing_them(tmp_path: Path) -> None:
    message = problems(tmp_path, '[gateway]\nshard_urls = ["http://admin:hunter22@a:1"]\n')
    assert "gateway.shard_urls[0]" in message
    assert "hunter22" not in message


def test_without_a_token_it_listens_on_loopback_only(tmp_path: Path) -> None:
    text = '[gateway]\nlisten = "0.0.0.0:8090"\nshard_urls = ["http://a:1"]\n'
    message = problems(tmp_path, text, env={})
    assert "gateway.listen" in message and "BOTVISOR_ADMIN_TOKEN" in message
    short = problems(tmp_path, text, env={"BOTVISOR_ADMIN_TOKEN": "short"})
    assert "at least 16 characters" in short and "short" not in short.replace(
        "at least 16 characters", ""
    ).replace("shards", "")


def test_the_command_exits_1_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nshard_urls = ["http://a:1"]\nshard_timeout = "soon"\n')
    assert main(["gateway", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "botvisor gateway:" in err and "gateway.shard_timeout" in err
