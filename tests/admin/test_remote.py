"""The ``botvisor bots`` / ``botvisor watch`` clients: finding the daemon, reading tokens,
exit codes (the end-to-end test drives them against a real daemon)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from supervisor.cli import build_parser
from supervisor.remote import Target, bots_command, dead_letters_command, resolve_target


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_the_target_comes_from_url_config_or_environment(tmp_path: Path) -> None:
    config = tmp_path / "botvisor.toml"
    config.write_text('[admin]\nlisten = "0.0.0.0:9191"\ntoken_env = "MY_ADMIN"\n')
    env = {"MY_ADMIN": "from-config-env", "BOTVISOR_ADMIN_TOKEN": "default-env"}

    from_config = resolve_target(parse("bots", "--config", str(config), "list"), env)
    # A daemon listening on every interface is reached on loopback.
    assert from_config == Target("http://127.0.0.1:9191", "from-config-env")

    explicit = resolve_target(
        parse("bots", "--url", "http://admin:1/", "--admin-token-env", "X", "list"),
        {"X": "x-token"},
    )
    assert explicit == Target("http://admin:1", "x-token")

    defaults = resolve_target(parse("watch"), {"BOTVISOR_ADMIN_URL": "http://h:2"})
    assert defaults == Target("http://h:2", None)


def test_a_missing_bot_token_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("bots", "--url", "http://127.0.0.1:9", "add", "7", "--token-env", "NOPE")
    assert bots_command(args, env={}) == 2
    assert "NOPE is not set" in capsys.readouterr().err
    args = parse("bots", "--url", "http://127.0.0.1:9", "add", "7", "--token-stdin")
    assert bots_command(args, env={}, stdin=io.StringIO("")) == 2


def test_an_unreachable_daemon_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens there.
    args = parse("bots", "--url", "http://127.0.0.1:9", "list")
    assert bots_command(args, env={}) == 3
    assert "cannot reach the admin API at http://127.0.0.1:9" in capsys.readouterr().err


def test_the_bot_token_is_never_a_command_line_argument() -> None:
    with pytest.raises(SystemExit):
        parse("bots", "add", "7", "--token", "123:abc")
    with pytest.raises(SystemExit):
        parse("bots", "add", "7")  # a token source is required


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("redrive", "1"), "give exactly one of --ids, --reason and --all"),
        (("discard", "1", "--ids", "1", "--all"), "give exactly one of --ids, --reason and --all"),
        (("redrive", "1", "--ids", "3,x"), "--ids must be comma-separated dead letter ids"),
        (("discard", "1", "--ids", ","), "--ids must name at least one dead letter id"),
        (("list", "1", "--limit", "0"), "--limit must be a whole number >= 1"),
    ],
)
def test_dead_letter_commands_check_their_selection_before_calling(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    # Nothing listens on port 9: a usage error is found before any call is made.
    args = parse("dead-letters", "--url", "http://127.0.0.1:9", *argv)
    assert dead_letters_command(args, env={}) == 2
    assert message in capsys.readouterr().err


def test_dead_letter_commands_exit_3_when_the_daemon_is_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parse("dead-letters", "--url", "http://127.0.0.1:9", "redrive", "1", "--all")
    assert dead_letters_command(args, env={}) == 3
    assert "cannot reach the admin API" in capsys.readouterr().err
