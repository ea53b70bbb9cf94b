"""AdminServer: the admin app served by Hypercorn on Trio."""

from __future__ import annotations

import logging
import socket

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette

from actors import find_exception
from admin.config import is_loopback

__all__ = ["AdminServer", "serve_app"]

log = logging.getLogger("botvisor.admin")


def _hypercorn_config(
    host: str, port: int, graceful_timeout: float, tls: tuple[str, str] | None = None
) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if tls is not None:
        config.certfile, config.keyfile = tls
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("botvisor.hypercorn")
    config.loglevel = "WARNING"
    return config


async def serve_app(
    app: Starlette,
    *,
    host: str,
    port: int,
    shutdown: trio.Event,
    graceful_timeout: float = 1.0,
    tls: tuple[str, str] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown`` is set; ``started()`` gets the base URL. ``tls``,
    (certificate chain file, private key file), serves HTTPS."""
    config = _hypercorn_config(host, port, graceful_timeout, tls)

    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            lambda task_status: serve(
                app,  # type: ignore[arg-type]  # Starlette is an ASGI app; hypercorn's
                config,  # protocol types are narrower than Starlette's signature
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )
        )
        task_status.started(urls[0])


class AdminListenError(OSError):
    """The admin API could not bind its address (in use, not allowed, not local)."""


class AdminServer:
    """The admin API's server; ``stop`` ends it (open WebSockets are closed first).

    With no admin token the API is open, so it refuses to listen anywhere but on loopback.
    """

    def __init__(
        self,
        app: Starlette,
        *,
        host: str,
        port: int,
        graceful_timeout: float = 1.0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        context = getattr(app.state, "admin", None)
        if context is not None and context.admin_token is None and not is_loopback(host):
            raise ValueError(
                f"the admin API has no token, so it only listens on loopback, not on {host!r}: "
                "set the variable named by admin.token_env or listen on 127.0.0.1"
            )
        self._app = app
        self._host = host
        self._port = port
        self._graceful_timeout = graceful_timeout
        self._tls = tls
        self._shutdown = trio.Event()
        self._done = trio.Event()
        self.url: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self._check_bindable()
            async with trio.open_nursery() as nursery:
                try:
                    self.url = await nursery.start(self._serve)
                except (OSError, BaseExceptionGroup) as exc:
                    bind_error = find_exception(exc, OSError)
                    if bind_error is None:
                        raise
                    raise self._listen_error(bind_error) from None
                log.info("admin API listening on %s", self.url)
                task_status.started(self.url)
        finally:
            self._done.set()

    def _check_bindable(self) -> None:
        """Try the address first: Hypercorn leaks its socket when a bind fails, and this
        gives the operator a clear message instead of a traceback."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((self._host, self._port))
        except OSError as exc:
            raise self._listen_error(exc) from None

    def _listen_error(self, exc: OSError) -> AdminListenError:
        return AdminListenError(
            f"the admin API cannot listen on {self._host}:{self._port}: "
            f"{exc.strerror or exc}; change admin.listen"
        )

    async def _serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        await serve_app(
            self._app,
            host=self._host,
            port=self._port,
            shutdown=self._shutdown,
            graceful_timeout=self._graceful_timeout,
            tls=self._tls,
            task_status=task_status,
        )

    async def stop(self) -> None:
        """Close the live-event WebSockets, stop accepting requests and wait until the server
        has closed."""
        # Hypercorn would wait its whole grace period for open WebSockets.
        streams = getattr(self._app.state, "event_streams", None)
        if streams is not None:
            await streams.close_all()
        self._shutdown.set()
        await self._done.wait()
