"""Helpers of the shard end-to-end tests: ``botvisor sim-server`` as a process, and shard
configurations for ``botvisor run --shard i/N``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import trio

from tests.e2e.process import BOTVISOR, DaemonProcess, write_config

_API_BASE = re.compile(r'api_base = "(http://[^"]+)"')
_BOT = re.compile(r'\[\[bots\]\]\nuser_id = (\d+)\ntoken = "([^"]+)"')


class SimServer:
    """``botvisor sim-server --print-config`` on a free port: its URL and bots (user_id ->
    token) are read from the configuration it prints before serving."""

    def __init__(self, *, bots: int, rate: float = 0.02, messages: int | None = None) -> None:
        self.bots_wanted = bots
        self.rate = rate
        self.messages = messages
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
                *(() if self.messages is None else ("--messages", str(self.messages))),
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


def free_port() -> int:
    """A port free on 127.0.0.1 now (bound and closed): for the processes that cannot be told
    port 0 because another must know their port first (nginx, a webhook listener behind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def nginx_binary() -> str | None:
    """Debian installs nginx in /usr/sbin, which a user's PATH may not have."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_config(prefix: Path, *, port: int, path: str, shards: dict[int, int]) -> Path:
    """An nginx.conf serving ``127.0.0.1:port`` with the static rule of
    ``deploy/nginx/botvisor.conf``: ``{path}/s/{i}/`` goes to shard i's webhook listener
    (``shards``: index -> port), everything under ``prefix``."""
    for name in ("logs", "tmp"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    upstreams = "\n".join(
        f"    upstream botvisor_shard_{i} {{ server 127.0.0.1:{p}; keepalive 8; }}"
        for i, p in sorted(shards.items())
    )
    locations = "\n".join(
        f"""        location {path}/s/{i}/ {{
            proxy_pass http://botvisor_shard_{i};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}"""
        for i in sorted(shards)
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{upstreams}
    server {{
        listen 127.0.0.1:{port};
{locations}
        location / {{ return 404; }}
    }}
}}
"""
    )
    return conf


def write_webhook_shard_config(
    path: Path,
    *,
    api_base: str,
    db_path: Path,
    bots: Mapping[int, str],
    listen_port: int,
    public_url: str,
) -> Path:
    """A shard's botvisor.toml whose bots all take webhooks on ``127.0.0.1:listen_port``."""
    lines = [
        "[telegram]",
        f'api_base = "{api_base}"',
        "[storage]",
        f'path = "{db_path}"',
        "[admin]",
        'listen = "127.0.0.1:0"',
        "[supervisor]",
        "graceful_timeout = 2",
        "report_interval = 1",
        "[webhook]",
        f'listen = "127.0.0.1:{listen_port}"',
        f'public_url = "{public_url}"',
    ]
    for user_id, token in bots.items():
        lines += ["[[bots]]", f"user_id = {user_id}", f'token = "{token}"', 'mode = "webhook"']
    path.write_text("\n".join(lines) + "\n")
    return path


_GATEWAY_URL = re.compile(r"the gateway listening on (http://\S+)")


class GatewayProcess:
    """``botvisor gateway --config PATH`` as a child process, its stderr collected."""

    def __init__(self, config: Path, *, env: Mapping[str, str]) -> None:
        self.config = config
        self.env = {**os.environ, **env}
        self.stderr = b""
        self.process: trio.Process | None = None
        self.url: str | None = None

    async def start(self, nursery: trio.Nursery, *, within: float = 30) -> str:
        self.process = await trio.lowlevel.open_process(
            [BOTVISOR, "gateway", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        ready = trio.Event()
        nursery.start_soon(self._collect, ready)
        with trio.fail_after(within):
            await ready.wait()
        if self.url is None:
            raise AssertionError(f"the gateway exited before it listened:\n{self.text}")
        return self.url

    async def _collect(self, ready: trio.Event) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk
            if self.url is None and (found := _GATEWAY_URL.search(self.text)):
                self.url = found.group(1)
                ready.set()
        ready.set()

    @property
    def text(self) -> str:
        return self.stderr.decode(errors="replace")

    async def stop(self, *, within: float = 30) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(within):
            return await self.process.wait()
