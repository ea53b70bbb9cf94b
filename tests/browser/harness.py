"""The parts of the dashboard's browser tests: the simulated Bot API on a thread of its own,
the real daemon as a child process, and Debian's Chromium driven by Playwright.

The tests are plain (not Trio) functions because Playwright's sync API runs its own loop. The
simulator runs in ``trio.run`` on a thread; the tests reach it with ``trio.from_thread`` (its
methods are not thread-safe, so every call runs on the simulator's own thread). Every wait is
bounded and event-driven; nothing here sleeps.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio

from actors.simulator import SimulatedBotApi, serve_sim
from bench.dashboard import CHROMIUM_ARGS, CHROMIUM_MISSING, chromium_path
from supervisor.clock import system_wall_clock
from tests.e2e.process import BOTVISOR, ROOT

__all__ = [
    "CHROMIUM_ARGS",
    "CHROMIUM_MISSING",
    "DaemonChild",
    "GatewayChild",
    "SimThread",
    "chromium_path",
    "new_sim",
    "write_dashboard_config",
]

T = TypeVar("T")

_ADMIN_URL = re.compile(r"admin API listening on (http://\S+)")


class SimThread:
    """A ``SimulatedBotApi`` served over HTTP by ``trio.run`` on its own thread.

    ``make`` builds the simulator inside that run (its wall clock is anchored to Trio's)."""

    def __init__(self, make: Callable[[], SimulatedBotApi]) -> None:
        self._make = make
        self.api: SimulatedBotApi | None = None
        self.url = ""
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="simulated-bot-api", daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the test thread by start()/stop()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        api = self.api = self._make()
        async with trio.open_nursery() as nursery:
            self.url = await nursery.start(serve_sim, api)
            nursery.start_soon(api.run)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def start(self, within: float = 10) -> None:
        self._thread.start()
        if not self._ready.wait(within) or self._error is not None:
            raise RuntimeError(f"the simulated Bot API did not start: {self._error!r}")

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the simulator's thread and return its result."""
        assert self._token is not None
        return trio.from_thread.run_sync(lambda: fn(*args, **kwargs), trio_token=self._token)

    def stop(self, within: float = 10) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(within)
        if self._error is not None:
            raise RuntimeError("the simulated Bot API failed") from self._error


def write_dashboard_config(
    path: Path, *, api_base: str, db_path: Path, bots: dict[int, str], extra: str = ""
) -> Path:
    """A botvisor.toml for the dashboard tests: echo bots, an admin API on a free port, and a
    breaker that opens after two failed calls and stays open until an operator resets it."""
    lines = [
        "[telegram]",
        f'api_base = "{api_base}"',
        "poll_timeout = 2",
        "request_timeout = 5",
        "[storage]",
        f'path = "{db_path}"',
        "[admin]",
        'listen = "127.0.0.1:0"',
        "[limits]",
        "global_rps = 1000",
        "global_burst = 100",
        "[breaker]",
        "failure_threshold = 2",
        "open_seconds = 3600",
        "[supervisor]",
        "graceful_timeout = 2",
        extra,
    ]
    for user_id, token in bots.items():
        lines += ["[[bots]]", f"user_id = {user_id}", f'token = "{token}"', 'handler = "echo"']
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonChild:
    """``botvisor run`` as a child process (sync: the browser tests are not Trio tests)."""

    # What the process prints once it listens, and the command after ``botvisor``.
    ready_line = _ADMIN_URL

    def __init__(self, config: Path, admin_token: str, *, args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.admin_token = admin_token
        # More options of the command (``--shard 0/2``).
        self.args = args
        self.admin_url = ""
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, within: float = 30) -> str:
        env = {**os.environ, "PYTHONPATH": ROOT, "BOTVISOR_ADMIN_TOKEN": self.admin_token}
        self._process = subprocess.Popen(
            [BOTVISOR, *self.command(), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name="daemon-stderr", daemon=True)
        self._reader.start()
        if not self._ready.wait(within) or not self.admin_url:
            self.stop()
            raise AssertionError(f"the daemon did not start:\n{self.text}")
        return self.admin_url

    def command(self) -> list[str]:
        return ["run", "--config", str(self.config)]

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def _read(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self._lines.append(line)
            if not self.admin_url and (found := self.ready_line.search(line)):
                self.admin_url = found.group(1)
                self._ready.set()
        self._ready.set()

    @property
    def text(self) -> str:
        return "".join(self._lines)

    @contextmanager
    def http(self) -> Iterator[httpx.Client]:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(base_url=self.admin_url, headers=headers, timeout=10) as client:
            yield client

    def stop(self, within: float = 15) -> int:
        process = self._process
        if process is None:
            return 0
        if process.poll() is None:
            process.terminate()
        try:
            code = process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(within)
        if self._reader is not None:
            self._reader.join(within)
        if process.stderr is not None:
            process.stderr.close()
        return code


class GatewayChild(DaemonChild):
    """``botvisor gateway --config PATH`` as a child process; ``admin_url`` is its URL."""

    ready_line = re.compile(r"the gateway listening on (http://\S+)")

    def command(self) -> list[str]:
        return ["gateway", "--config", str(self.config)]


def new_sim(tokens: Iterable[str], seed: int = 14) -> SimulatedBotApi:
    """The simulated Bot API of these tests with these bots, on the real wall clock (call it
    inside ``trio.run``: ``SimThread(lambda: new_sim(tokens))``)."""
    api = SimulatedBotApi(rng=random.Random(seed), wall_clock=system_wall_clock())
    for token in tokens:
        api.add_bot(token)
    return api
