"""``botvisor check-config`` runs every check ``run`` runs before it touches Telegram, lists
every problem in one pass, and agrees with ``run``: real processes, exit codes, messages."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.e2e.process import BOTVISOR, ROOT


async def botvisor(*args: str) -> tuple[int, str, str]:
    result = await trio.run_process(
        [BOTVISOR, *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "PYTHONPATH": ROOT, "BOTVISOR_ADMIN_TOKEN": ""},
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def bot(user_id: int, handler: str) -> str:
    token = f"{123450 + user_id}:{'A' * 35}"
    return f'[[bots]]\nuser_id = {user_id}\ntoken = "{token}"\nhandler = "{handler}"\n'


async def test_every_problem_run_would_meet_is_listed_in_one_pass(tmp_path: Path) -> None:
    config = tmp_path / "botvisor.toml"
    config.write_text(
        '[telegram]\napi_base = "http://"\n'
        f'[storage]\npath = "{tmp_path}/missing/dir/b.db"\n'
        '[admin]\nlisten = "127.0.0.1:99999"\n'
        "[limits]\nglobal_rps = 0\nbot_rps = -1\n"
        '[handlers]\nallowed_modules = ["tests"]\n'
        + bot(1, "tests.no_such_module:handle")
        + bot(2, "tests.handlers_failing_import:handle")
        + bot(3, "tests.handlers_for_tests:missing")
        + bot(4, "elsewhere.module:handle")
    )
    expected = [
        "telegram.api_base must name a host (https://api.telegram.org), got 'http://'",
        f"storage.path: the directory '{tmp_path}/missing/dir' does not exist: create it or "
        "choose another path",
        "admin.listen must be 'host:port' with a port from 0 to 65535, got '127.0.0.1:99999'",
        "limits.global_rps must be from 0.01 to 100000, got 0",
        "limits.bot_rps must be from 0.01 to 100000, got -1",
        "bots[3].handler: module 'elsewhere.module' is not allowed; a handler's module must "
        "equal or be below an entry of handlers.allowed_modules (now: 'tests'); add it there, "
        "or use 'echo' or 'autoreply'",
        "bots[0].handler: cannot import module 'tests.no_such_module': No module named "
        "'tests.no_such_module'",
        "bots[1].handler: importing module 'tests.handlers_failing_import' failed: "
        "RuntimeError: this module cannot be imported",
        "bots[2].handler: module 'tests.handlers_for_tests' has no attribute 'missing'",
    ]
    code, out, err = await botvisor("check-config", str(config))
    assert (code, out) == (1, "")
    listed = [line.removeprefix("  - ") for line in err.splitlines()[1:]]
    assert sorted(listed) == sorted(expected), err
    assert err.splitlines()[0] == f"botvisor: {config}: {len(expected)} problem(s):"
    assert "A" * 35 not in err

    # run refuses the same file with the same list, before anything is opened.
    code, _, run_err = await botvisor("run", "--config", str(config))
    assert code == 1
    assert sorted(line.removeprefix("  - ") for line in run_err.splitlines()[1:]) == sorted(
        expected
    )
    assert not (tmp_path / "missing").exists()


async def test_a_storage_path_that_is_a_directory_is_a_config_problem(tmp_path: Path) -> None:
    config = tmp_path / "botvisor.toml"
    config.write_text(f'[storage]\npath = "{tmp_path}"\n')
    code, _, err = await botvisor("check-config", str(config))
    assert code == 1
    assert f"storage.path: '{tmp_path}' exists and is not a file: choose a file path" in err


async def test_a_good_file_is_ok_with_exit_zero(tmp_path: Path) -> None:
    config = tmp_path / "botvisor.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path}/b.db"\n'
        '[handlers]\nallowed_modules = ["tests"]\n'
        + bot(1, "tests.handlers_for_tests:slow_echo")
        + bot(2, "echo")
    )
    code, out, err = await botvisor("check-config", str(config))
    assert (code, err) == (0, ""), err
    assert out.startswith(f"ok: {config}\n  bots: 2 (1, 2)\n")
    # Nothing was created: checking is not running.
    assert not (tmp_path / "b.db").exists()
