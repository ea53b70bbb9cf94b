"""Running the real ``botvisor`` daemon as a child process, for end-to-end tests.

The simulated Bot API runs in the test process (``serve_sim`` on 127.0.0.1, real clock); the
daemon process talks to it over HTTP. Waits are bounded with ``trio.fail_after``; nothing here
asserts on elapsed time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

BOTVISOR = str(Path(sys.executable).with_name("botvisor"))
# The repository root, so a daemon process can import handlers from tests/.
ROOT = str(Path(__file__).resolve().parents[2])
_ADMIN_URL = re.compile(r"admin API listening on (http://\S+)")


def write_config(
    path: Path,
    *,
    api_base: str,
    db_path: Path,
    bots: Mapping[int, str],
    handler: str = "echo",
    graceful_timeout: float = 2,
    poll_timeout: int = 2,
    extra: str = "",
) -> Path:
    """A botvisor.toml for the given bots (tokens inline) and an admin API on a free port."""
    lines = [
        "[telegram]",
        f'api_base = "{api_base}"',
        f"poll_timeout = {poll_timeout}",
        "[storage]",
        f'path = "{db_path}"',
        "[admin]",
        'listen = "127.0.0.1:0"',
        "[limits]",
        "global_rps = 1000",
        "global_burst = 100",
        "[supervisor]",
        f"graceful_timeout = {graceful_timeout}",
        "report_interval = 1",
        extra,
    ]
    if ":" in handler:
        # Handler modules come from the allowlist; the tests' own live under tests.
        lines += ["[handlers]", 'allowed_modules = ["tests"]']
    for user_id, token in bots.items():
        lines += [
            "[[bots]]",
            f"user_id = {user_id}",
            f'token = "{token}"',
            f'handler = "{handler}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProcess:
    """``botvisor run --config PATH`` as a child process, its stderr collected."""

    def __init__(
        self,
        config: Path,
        *,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        # More options of ``botvisor run`` (``--prune-config-bots``).
        self.args = args
        # Run in the child before botvisor starts (resource limits).
        self.preexec_fn = preexec_fn
        self.env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
        self.stderr = b""
        self.process: trio.Process | None = None
        self.admin_url: str | None = None

    async def start(self, nursery: trio.Nursery, *, within: float = 30) -> str:
        """Start the daemon and wait until its admin API listens; return its URL."""
        self.process = await trio.lowlevel.open_process(
            [BOTVISOR, "run", "--config", str(self.config), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
            preexec_fn=self.preexec_fn,
        )
        ready = trio.Event()
        nursery.start_soon(self._collect, ready)
        with trio.fail_after(within):
            await ready.wait()
        if self.admin_url is None:
            raise AssertionError(f"the daemon exited before it was ready:\n{self.text}")
        return self.admin_url

    async def _collect(self, ready: trio.Event) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk
            if self.admin_url is None and (found := _ADMIN_URL.search(self.text)):
                self.admin_url = found.group(1)
                ready.set()
        ready.set()

    @property
    def text(self) -> str:
        return self.stderr.decode(errors="replace")

    def send_signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """``kill -9``."""
        self.send_signal(signal.SIGKILL)

    async def wait(self, *, within: float = 30) -> int:
        assert self.process is not None
        with trio.fail_after(within):
            return await self.process.wait()
