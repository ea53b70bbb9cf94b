"""The HTTP servers of the daemon, Hypercorn on Trio: one wrapper, two listeners.

:class:`HttpServer` serves any ASGI app (bind check first, a listen error naming the setting
to change, ``stop`` as a shutdown trigger); :class:`AdminServer` is the admin API on it,
:class:`WebhookServer` the public webhook listener (the receiver of ``actors``).
"""

from __future__ import annotations

import logging
import socket
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette

from actors import find_exception
from admin.config import is_loopback

__all__ = [
    "AdminListenError",
    "AdminServer",
    "HttpServer",
    "ListenError",
    "WebhookListenError",
    "WebhookServer",
    "serve_app",
]

log = logging.getLogger("botvisor.admin")


# Telegram keeps its webhook connections open between deliveries (and a proxy its upstream
# ones): a connection idle this long is closed, and a connection serves this many requests.
WEBHOOK_KEEP_ALIVE_SECONDS = 75.0
WEBHOOK_KEEP_ALIVE_REQUESTS = 100_000


def _hypercorn_config(
    host: str,
    port: int,
    graceful_timeout: float,
    tls: tuple[str, str] | None = None,
    keep_alive: tuple[float, int] | None = None,
) -> HypercornConfig:
    config = HypercornConfig()
    if keep_alive is not None:
        config.keep_alive_timeout, config.keep_alive_max_requests = keep_alive
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if tls is not None:
        config.certfile, config.keyfile = tls
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("botvisor.hypercorn")
    config.loglevel = "WARNING"
    return config


async def serve_app(
    app: Any,
    *,
    host: str,
    port: int,
    shutdown: trio.Event,
    graceful_timeout: float = 1.0,
    tls: tuple[str, str] | None = None,
    keep_alive: tuple[float, int] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` until ``shutdown`` is set; ``started()`` gets the base URL.
    ``tls``, (certificate chain file, private key file), serves HTTPS; ``keep_alive``,
    (idle seconds, requests per connection), overrides Hypercorn's defaults."""
    config = _hypercorn_config(host, port, graceful_timeout, tls, keep_alive)

    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            lambda task_status: serve(
                cast(ASGIFramework, app),
                config,
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )
        )
        task_status.started(urls[0])


class ListenError(OSError):
    """A listener could not bind its address (in use, not allowed, not local)."""


class AdminListenError(ListenError):
    """The admin API could not bind its address."""


class WebhookListenError(ListenError):
    """The webhook listener could not bind its address."""


class HttpServer:
    """One ASGI app served by Hypercorn on Trio; ``stop`` ends it.

    ``setting`` names the key an operator changes when the address cannot be bound
    (``admin.listen``), ``name`` what listens (``the admin API``).
    """

    listen_error: type[ListenError] = ListenError

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        name: str,
        setting: str,
        graceful_timeout: float = 1.0,
        tls: tuple[str, str] | None = None,
        keep_alive: tuple[float, int] | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._name = name
        self._setting = setting
        self._graceful_timeout = graceful_timeout
        self._tls = tls
        self._keep_alive = keep_alive
        self._shutdown = trio.Event()
        self._done = trio.Event()
        self.url: str | None = None

    @property
    def listening(self) -> bool:
        """Bound and serving (False before start and from ``stop`` on)."""
        return self.url is not None and not self._shutdown.is_set() and not self._done.is_set()

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
                log.info("%s listening on %s", self._name, self.url)
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

    def _listen_error(self, exc: OSError) -> ListenError:
        return self.listen_error(
            f"{self._name} cannot listen on {self._host}:{self._port}: "
            f"{exc.strerror or exc}; change {self._setting}"
        )

    async def _serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        await serve_app(
            self._app,
            host=self._host,
            port=self._port,
            shutdown=self._shutdown,
            graceful_timeout=self._graceful_timeout,
            tls=self._tls,
            keep_alive=self._keep_alive,
            task_status=task_status,
        )

    async def stop(self) -> None:
        """Stop accepting requests and wait until the server has closed (requests in flight
        get ``graceful_timeout``)."""
        self._shutdown.set()
        await self._done.wait()


class AdminServer(HttpServer):
    """The admin API's server; ``stop`` ends it (open WebSockets are closed first).

    With no admin token the API is open, so it refuses to listen anywhere but on loopback.
    """

    listen_error = AdminListenError

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
        super().__init__(
            app,
            host=host,
            port=port,
            name="the admin API",
            setting="admin.listen",
            graceful_timeout=graceful_timeout,
            tls=tls,
        )

    async def stop(self) -> None:
        """Close the live-event WebSockets, stop accepting requests and wait until the server
        has closed."""
        # Hypercorn would wait its whole grace period for open WebSockets.
        streams = getattr(self._app.state, "event_streams", None)
        if streams is not None:
            await streams.close_all()
        await super().stop()


class WebhookServer(HttpServer):
    """The public webhook listener: Telegram's deliveries to the receiver (``actors``'
    :class:`~actors.WebhookReceiver`), keep-alive on, HTTPS when ``tls`` is given.

    Stopped first at shutdown: deliveries then meet a refused connection and Telegram
    retries them; every delivery answered 200 was committed before its answer."""

    listen_error = WebhookListenError

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        graceful_timeout: float = 1.0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(
            app,
            host=host,
            port=port,
            name="the webhook listener",
            setting="webhook.listen",
            graceful_timeout=graceful_timeout,
            tls=tls,
            keep_alive=(WEBHOOK_KEEP_ALIVE_SECONDS, WEBHOOK_KEEP_ALIVE_REQUESTS),
        )
