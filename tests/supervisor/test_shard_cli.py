"""``botvisor run --shard``: a shard that cannot be one is a usage error naming what to fix,
before the configuration is read or anything is started; the flag wins over the
environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import Shard, jump_hash
from supervisor import cli
from supervisor.fdlimit import OpenFilesLimit


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--shard", "3/3"], {}, "the shard index must be from 0 to 2 (index < count), got 3"),
        (["--shard", "0/0"], {}, "the shard count must be from 1 to 4096, got 0"),
        (["--shard", "one/3"], {}, "--shard's INDEX (before the /) must be a whole number"),
        ([], {"BOTVISOR_SHARD_INDEX": "1"}, "$BOTVISOR_SHARD_COUNT is not: set both, or neither"),
        (
            [],
            {"BOTVISOR_SHARD_INDEX": "4", "BOTVISOR_SHARD_COUNT": "4"},
            "the shard index must be from 0 to 3 (index < count), got 4",
        ),
    ],
)
def test_a_bad_shard_is_a_usage_error_before_anything_starts(
    argv: list[str],
    environ: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("BOTVISOR_SHARD_INDEX", "BOTVISOR_SHARD_COUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    started: list[object] = []

    async def fake_daemon(*args: object) -> None:
        started.append(args)

    monkeypatch.setattr(cli, "run_daemon", fake_daemon)
    # The file does not even exist: the shard is checked first.
    code = cli.main(["run", "--config", str(tmp_path / "missing.toml"), *argv])
    assert code == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert started == []


def test_the_flag_wins_over_the_environment_and_the_environment_names_the_shard(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "botvisor.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "b.db"}"\n[admin]\nenabled = false\n')
    shards: list[Shard | None] = []

    async def fake_daemon(
        config: object, files: object, prune: object, shard: Shard | None
    ) -> None:
        shards.append(shard)

    monkeypatch.setattr(cli, "run_daemon", fake_daemon)
    monkeypatch.setattr(
        "supervisor.cli.raise_open_files_limit", lambda: OpenFilesLimit(1024, 1024, 1024)
    )
    monkeypatch.setenv("BOTVISOR_SHARD_INDEX", "2")
    monkeypatch.setenv("BOTVISOR_SHARD_COUNT", "3")
    assert cli.main(["run", "--config", str(config)]) == cli.EXIT_OK
    assert cli.main(["run", "--config", str(config), "--shard", "0/5"]) == cli.EXIT_OK
    monkeypatch.delenv("BOTVISOR_SHARD_INDEX")
    monkeypatch.delenv("BOTVISOR_SHARD_COUNT")
    assert cli.main(["run", "--config", str(config)]) == cli.EXIT_OK
    assert shards == [Shard(2, 3), Shard(0, 5), None]


def test_check_config_lists_the_bots_a_shard_would_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.harness import bot_token

    user_ids = list(range(1001, 1013))
    lines = [f'[storage]\npath = "{tmp_path / "c.db"}"']
    for uid in user_ids:
        lines.append(f'[[bots]]\nuser_id = {uid}\ntoken = "{bot_token(uid)}"')
    config = tmp_path / "botvisor.toml"
    config.write_text("\n".join(lines) + "\n")
    assert cli.main(["check-config", str(config), "--shard", "2/3"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    owned = [uid for uid in user_ids if jump_hash(uid, 3) == 2]
    assert 0 < len(owned) < len(user_ids)
    shown = ", ".join(str(uid) for uid in owned[:10])
    assert f"  shard 2/3: runs {len(owned)} of them ({shown}" in out
    assert "webhook URLs {public_url}/s/2/{user_id}" in out
    assert cli.main(["check-config", str(config), "--shard", "2/2"]) == cli.EXIT_USAGE
    assert "the shard index must be from 0 to 1" in capsys.readouterr().err
