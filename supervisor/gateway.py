"""``botvisor gateway --config FILE``: the composition root of the fleet gateway
(``admin.gateway``): its ``[gateway]`` table read and checked, the admin token from the
environment, one HTTP client for the shards, the server until SIGINT/SIGTERM.

The file may be a whole ``botvisor.toml``: only ``[gateway]`` is read.

Exit codes: 0 stopped by a signal, 1 a bad configuration or an address it cannot listen on.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import trio
from pydantic import ValidationError

from actors import describe_problems, find_exception
from admin import GatewayConfig, GatewayServer, ListenError, create_gateway_app

__all__ = ["gateway_command", "load_gateway_config", "run_gateway"]

log = logging.getLogger("botvisor.gateway")

EXIT_OK, EXIT_CONFIG = 0, 1
# Connections kept open to each shard (a dashboard's page asks a few things at once).
CONNECTIONS_PER_SHARD = 8


class GatewayConfigError(Exception):
    """The gateway's configuration has problems; the message lists each, naming its key."""


def load_gateway_config(path: Path, env: Mapping[str, str]) -> GatewayConfig:
    """``[gateway]`` of the file at ``path``, its token from ``env``; GatewayConfigError."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GatewayConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GatewayConfigError(f"{path}: not valid TOML ({exc})") from None
    table = document.get("gateway")
    if not isinstance(table, dict):
        raise GatewayConfigError(
            f"{path}: no [gateway] table: name the shards there, e.g. "
            'shard_urls = ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]'
        )
    if "token" in table:
        raise GatewayConfigError(
            f"{path}: gateway.token is not read from a file: put the admin token in the "
            "environment variable named by gateway.token_env (BOTVISOR_ADMIN_TOKEN by default)"
        )
    data: dict[str, Any] = dict(table)
    token_env = data.get("token_env", GatewayConfig.model_fields["token_env"].default)
    if isinstance(token_env, str) and env.get(token_env):
        data["token"] = env[token_env]
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        keys = [name for name in GatewayConfig.model_fields if name != "token"]
        problems = describe_problems(
            exc, GatewayConfig, prefix=("gateway",), known_keys={GatewayConfig: keys}
        )
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise GatewayConfigError(f"{path}: {len(problems)} problem(s):\n{lines}") from None


async def run_gateway(
    config: GatewayConfig,
    *,
    signals: bool = True,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM (``signals``) or ``stop``; ``started()`` gets the URL."""
    limits = httpx.Limits(
        max_connections=CONNECTIONS_PER_SHARD * len(config.urls),
        max_keepalive_connections=CONNECTIONS_PER_SHARD * len(config.urls),
    )
    # The per-shard timeout is the gateway's own (a Trio deadline); httpx's is a backstop.
    timeout = httpx.Timeout(config.shard_timeout + 5)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        server = GatewayServer(create_gateway_app(config, http), host=config.host, port=config.port)
        stopping = stop or trio.Event()
        async with trio.open_nursery() as nursery:
            url: str = await nursery.start(server.run)
            log.info(
                "botvisor gateway on %s over %d shard(s), %g s per shard",
                url,
                len(config.urls),
                config.shard_timeout,
            )
            task_status.started(url)
            if signals:
                nursery.start_soon(_signalled, stopping)
            await stopping.wait()
            await server.stop()
            nursery.cancel_scope.cancel()


async def _signalled(stopping: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for signum in received:
            log.info("%s received: the gateway stops", signal.Signals(signum).name)
            stopping.set()
            return


def gateway_command(path: Path) -> int:
    try:
        config = load_gateway_config(path, os.environ)
    except GatewayConfigError as exc:
        print(f"botvisor gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        trio.run(run_gateway, config)
    except Exception as exc:
        listen = find_exception(exc, ListenError)
        if listen is None:
            raise
        log.error("%s", listen)
        return EXIT_CONFIG
    return EXIT_OK
