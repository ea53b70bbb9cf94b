"""``[cluster]``: the Postgres URL comes from the environment variable it names, is checked
without connecting and never shown with its password; a cluster needs a shard."""

from __future__ import annotations

import base64
import socket
import tomllib
from pathlib import Path

import pytest

from supervisor import ConfigError, cli, parse_config
from supervisor.sealing import MAKE_KEY, TokenSealer

URL = "postgresql://botvisor:s3cret-pw@db.internal:5432/fleet"
# A registry key (32 bytes in base64); every [cluster] needs one.
KEY = base64.b64encode(bytes(range(32))).decode()


def problems_of(text: str, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), env, source="botvisor.toml")
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            "[cluster]\n",
            {"BOTVISOR_REGISTRY_KEY": KEY},
            [
                "cluster.database_env: the environment variable BOTVISOR_DATABASE_URL is not "
                "set: set it to the shards' Postgres URL "
                "(postgresql://user:password@host:5432/database)"
            ],
        ),
        (
            '[cluster]\ndatabase_env = "PG"\n',
            {"PG": "mysql://u:s3cret-pw@h/db", "BOTVISOR_REGISTRY_KEY": KEY},
            [
                "$PG must be a postgresql:// URL (postgresql://user:password@host:5432/database), "
                "its scheme is 'mysql'"
            ],
        ),
        (
            f'[cluster]\ndatabase_url = "{URL}"\n',
            {"BOTVISOR_DATABASE_URL": URL, "BOTVISOR_REGISTRY_KEY": KEY},
            [
                "cluster.database_url: the database URL (with its password) is never written in "
                "the file; set cluster.database_env to the name of an environment variable"
            ],
        ),
        (
            "[cluster]\nlock_check_interval = 0\n",
            {"BOTVISOR_DATABASE_URL": URL, "BOTVISOR_REGISTRY_KEY": KEY},
            ["cluster.lock_check_interval must be from 0.1 to 600, got 0"],
        ),
        (
            "[cluster]\n",
            {"BOTVISOR_DATABASE_URL": URL},
            [
                "cluster.registry_key_env: the environment variable BOTVISOR_REGISTRY_KEY is "
                "not set: set it to the registry key (32 random bytes in base64, the same on "
                f"every shard), made with: {MAKE_KEY}"
            ],
        ),
        (
            '[cluster]\nregistry_key_env = "RK"\n',
            {"BOTVISOR_DATABASE_URL": URL, "RK": base64.b64encode(b"s3cret-pw").decode()},
            [
                "$RK must be 32 random bytes in base64, it decodes to 9 bytes; make one with: "
                + MAKE_KEY
            ],
        ),
        (
            f'[cluster]\nregistry_key = "{KEY}"\n',
            {"BOTVISOR_DATABASE_URL": URL, "BOTVISOR_REGISTRY_KEY": KEY},
            [
                "cluster.registry_key: the registry key is never written in the file; set "
                "cluster.registry_key_env to the name of an environment variable"
            ],
        ),
    ],
)
def test_a_bad_cluster_table_names_the_key_and_never_the_password(
    text: str, env: dict[str, str], expected: list[str]
) -> None:
    problems = problems_of(text, env)
    assert problems == expected
    assert not any("s3cret-pw" in problem for problem in problems)


def test_the_url_is_read_from_the_environment_and_not_shown_in_the_config() -> None:
    config = parse_config(
        tomllib.loads("[cluster]\n"),
        {"BOTVISOR_DATABASE_URL": URL, "BOTVISOR_REGISTRY_KEY": KEY},
    )
    assert config.cluster is not None
    assert config.cluster.database_url == URL
    assert config.cluster.registry_key == KEY
    assert "s3cret-pw" not in repr(config) and KEY not in repr(config)
    # Without the table, nothing of it.
    assert parse_config({}, {"BOTVISOR_DATABASE_URL": URL}).cluster is None


@pytest.fixture
def cluster_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("BOTVISOR_SHARD_INDEX", "BOTVISOR_SHARD_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOTVISOR_DATABASE_URL", URL)
    monkeypatch.setenv("BOTVISOR_REGISTRY_KEY", KEY)
    path = tmp_path / "botvisor.toml"
    path.write_text(
        f'[storage]\npath = "{tmp_path / "b.db"}"\n[admin]\nenabled = false\n[cluster]\n'
    )
    return path


NO_SHARD = (
    "[cluster] needs a shard: give --shard INDEX/COUNT (or set $BOTVISOR_SHARD_INDEX and "
    "$BOTVISOR_SHARD_COUNT), or remove [cluster] to run one process"
)


def test_a_cluster_without_a_shard_is_a_config_error_of_run_and_check_config(
    cluster_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[object] = []

    async def fake_daemon(*args: object) -> None:
        started.append(args)

    monkeypatch.setattr(cli, "run_daemon", fake_daemon)
    assert cli.main(["run", "--config", str(cluster_file)]) == cli.EXIT_CONFIG
    assert NO_SHARD in capsys.readouterr().err
    assert cli.main(["check-config", str(cluster_file)]) == cli.EXIT_CONFIG
    assert NO_SHARD in capsys.readouterr().err
    assert started == []


def test_check_config_shows_the_cluster_without_the_password_and_connects_to_nothing(
    cluster_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # db.internal does not resolve here: a connection attempt would fail the command.
    assert cli.main(["check-config", str(cluster_file), "--shard", "1/2"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert (
        "  cluster: Postgres at postgresql://botvisor:***@db.internal:5432/fleet "
        "($BOTVISOR_DATABASE_URL; not connected to by check-config), lock checked every 5 s"
    ) in out
    assert "s3cret-pw" not in out
    key_id = TokenSealer(KEY).key_id
    assert (
        f"  registry: tokens sealed with key {key_id} ($BOTVISOR_REGISTRY_KEY; AES-256-GCM)"
    ) in out
    assert KEY not in out


def test_postgres_away_at_start_exits_75_so_a_supervisor_starts_the_shard_again(
    cluster_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Exit 1 is a configuration to fix, which systemd's RestartPreventExitStatus leaves
    # down; Postgres not answering passes, so the shard's start is worth trying again.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("BOTVISOR_DATABASE_URL", f"postgresql://bv:s3cret-pw@127.0.0.1:{port}/db")
    code = cli.main(["run", "--config", str(cluster_file), "--shard", "0/1"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_TRY_AGAIN == 75, err
    assert "cannot take shard 0/1's lock on Postgres at postgresql://bv:***@127.0.0.1:" in err
    assert "s3cret-pw" not in err
