"""The real ``botvisor run`` process at the fleet's limits: the open-files limit it raises or
refuses, and a token configured for two tenants."""

from __future__ import annotations

import random
import resource
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from actors.simulator import SimulatedBotApi, serve_sim
from tests.e2e.process import BOTVISOR, DaemonProcess, write_config

BOTS = 20  # needs 64 + 4 × 20 = 144 open files


def open_files(soft: int, hard: int) -> tuple[int, int]:
    """Limits to start the child with: never above the test's own hard limit."""
    own = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if own != resource.RLIM_INFINITY:
        hard = min(hard, own)
    return min(soft, hard), hard


def limited(soft: int, hard: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return preexec


def tokens(count: int, seed: int) -> dict[int, str]:
    rng = random.Random(seed)
    return {3001 + i: SimulatedBotApi.make_token(6_300_000_001 + i, rng) for i in range(count)}


def max_open_files(pid: int) -> tuple[str, str]:
    """The soft and hard 'Max open files' of a running process, as the kernel reports them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no 'Max open files' line")


async def test_a_low_soft_limit_is_raised_to_the_hard_one_and_the_fleet_starts(
    tmp_path: Path,
) -> None:
    soft, hard = open_files(40, 256)
    if hard < 144:
        pytest.skip("this machine's hard open-files limit is below the fleet's 144")
    api = SimulatedBotApi(rng=random.Random(1))
    bots = tokens(BOTS, 2)
    for token in bots.values():
        api.add_bot(token)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sim, api)
        config = write_config(
            tmp_path / "botvisor.toml", api_base=url, db_path=tmp_path / "d.db", bots=bots
        )
        daemon = DaemonProcess(config, preexec_fn=limited(soft, hard))
        await daemon.start(nursery)
        assert daemon.process is not None
        assert max_open_files(daemon.process.pid) == (str(hard), str(hard))
        for token in bots.values():
            api.send_user_message(token, 77, "are you there?")
        with trio.fail_after(30):
            while api.report().answered < BOTS:  # noqa: ASYNC110
                await trio.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        code = await daemon.wait()
        nursery.cancel_scope.cancel()
    assert code == 0, daemon.text
    assert f"open-files limit raised from {soft} to {hard}" in daemon.text


async def test_a_fleet_that_cannot_fit_the_hard_limit_is_refused_naming_the_numbers(
    tmp_path: Path,
) -> None:
    soft, hard = open_files(100, 100)
    config = write_config(
        tmp_path / "botvisor.toml",
        api_base="http://127.0.0.1:9",
        db_path=tmp_path / "d.db",
        bots=tokens(BOTS, 3),
    )
    with trio.fail_after(60):
        done = await trio.run_process(
            [BOTVISOR, "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            preexec_fn=limited(soft, hard),
        )
    text = done.stderr.decode()
    assert done.returncode == 1, text
    assert (
        f"{BOTS} polling bots need about 144 open files (64 + 4 per polling bot), but this "
        f"process may open only {hard} (soft limit {hard}, hard limit {hard}; raised from "
        f"{soft} as far as allowed): raise the hard limit, e.g. 'ulimit -n 4096' in the shell "
        "that starts botvisor, or 'LimitNOFILE=4096' in its systemd unit"
    ) in text
    assert "Traceback" not in text and "Too many open files" not in text


async def test_one_token_in_two_bots_of_the_config_is_refused_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    token = tokens(1, 4)[3001]
    db = tmp_path / "d.db"
    config = write_config(
        tmp_path / "botvisor.toml",
        api_base="http://127.0.0.1:9",
        db_path=db,
        bots={1001: token, 1002: token},
    )
    with trio.fail_after(60):
        done = await trio.run_process(
            [BOTVISOR, "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    text = done.stderr.decode()
    assert done.returncode == 1, text
    bot_id = token.split(":")[0]
    assert (
        f"bots[1].token: the same bot ({bot_id}:…) as bots[0].token (user_id 1001); one token "
        "serves one tenant: remove one of the two [[bots]] entries"
    ) in text
    assert token not in text and token.split(":")[1] not in text
    assert not db.exists()
