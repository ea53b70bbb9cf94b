"""Helpers of the shard end-to-end tests: ``botvisor sim-server`` as a process, and shard
configurations for ``botvisor run --shard i/N``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import trio

from tests.e2e.process import BOTVISOR, DaemonProcess, write_config

_API_BASE = re.compile(r'api_base = "(http://[^"]+)"')
_BOT = re.compile(r'\[\[bots\]\]\nuser_id = (\d+)\ntoken = "([^"]+)"')


class SimServer:
    """``botvisor sim-server --print-config`` on a free port: its URL and bots (user_id ->
    token) are read from the configuration it prints before serving."""

    def __init__(self, *, bots: int, rate: float = 0.02) -> None:
        self.bots_wanted = bots
        self.rate = rate
        self.url = ""
        self.bots: dict[int, str] = {}
        self.process: trio.Process | None = None

    async def start(self, *, within: float = 30) -> None:
        self.process = await trio.lowlevel.open_process(
            [
                BOTVISOR,
                "--log-level",
                "WARNING",
                "sim-server",
                "--port",
                "0",
                "--bots",
                str(self.bots_wanted),
                "--chats",
                "1",
                "--rate",
                str(self.rate),
                "--print-config",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        text = ""
        with trio.fail_after(within):
            async for chunk in self.process.stdout:
                text += chunk.decode()
                if len(_BOT.findall(text)) == self.bots_wanted and text.endswith("\n\n"):
                    break
        found = _API_BASE.search(text)
        assert found is not None, text[:500]
        self.url = found.group(1)
        self.bots = {int(uid): token for uid, token in _BOT.findall(text)}
        assert len(self.bots) == self.bots_wanted

    async def stop(self) -> None:
        if self.process is not None:
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
            if self.process.stdout is not None:
                await self.process.stdout.aclose()


def shard_process(
    tmp_path: Path,
    index: int,
    count: int,
    *,
    api_base: str,
    bots: dict[int, str],
    extra: str = "",
    poll_timeout: int = 2,
) -> DaemonProcess:
    """Shard ``index`` of ``count``: its own database, the fleet's whole file of bots, and
    the simulated Bot API under ``/c/shard-{index}`` (so the simulator knows who polls)."""
    config = write_config(
        tmp_path / f"shard-{index}.toml",
        api_base=f"{api_base}/c/shard-{index}",
        db_path=tmp_path / f"shard-{index}.db",
        bots=bots,
        poll_timeout=poll_timeout,
        extra=extra,
    )
    return DaemonProcess(config, args=("--shard", f"{index}/{count}"))
