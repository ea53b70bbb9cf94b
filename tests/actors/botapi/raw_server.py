"""A minimal HTTP/1.1 Bot API on a real socket of 127.0.0.1 (plain or TLS), for the tests of
the network path: httpcore's real pool, real timeouts, real TLS."""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Callable
from functools import partial

import trio

from actors.botapi import HttpClient, make_http_client
from actors.config import TelegramConfig

__all__ = ["HangingServer", "serve"]

OK_ID_1 = b'{"ok":true,"result":{"id":1}}'


def http_response(status: bytes, body: bytes, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 response: the status line (``b"200 OK"``), headers, the body."""
    head = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 %s\r\n%scontent-length: %d\r\n\r\n%s" % (status, head, len(body), body)


class HangingServer:
    """It answers every call at once (``reply``, by default ``{"ok":true,"result":{"id":1}}``),
    except the slow tenant's (bot 111111), which it never answers; it counts the
    connections those hold and keeps every request it read (``requests``: head, body)."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.connections = 0  # accepted
        self.slow_connections = 0
        self.slow_seen = trio.Event()  # set once ``expect_slow`` connections hang
        self.expect_slow = 0
        self.reply = reply or http_response(b"200 OK", OK_ID_1, b"content-type: application/json")
        self.requests: list[tuple[bytes, bytes]] = []

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        # A client that gave up (a refused certificate) ends its connection only.
        with contextlib.suppress(trio.BrokenResourceError):
            await self._serve(stream)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some()
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                size = int(length.group(1)) if length else 0
                while len(buffer) < size:
                    buffer += await stream.receive_some()
                self.requests.append((head, buffer[:size]))
                buffer = buffer[size:]
                if b"/bot111111:" in head.split(b"\r\n", 1)[0]:
                    self.slow_connections += 1
                    if self.slow_connections == self.expect_slow:
                        self.slow_seen.set()
                    await trio.sleep_forever()
                await stream.send_all(self.reply)


async def serve(
    nursery: trio.Nursery,
    server: HangingServer,
    *,
    tls: ssl.SSLContext | None = None,
    client_tls: ssl.SSLContext | None = None,
    telegram: TelegramConfig | None = None,
) -> tuple[TelegramConfig, Callable[[int], HttpClient]]:
    """``server`` on a real socket of 127.0.0.1 (over TLS with ``tls``, a server context),
    and a factory of clients bound to it (trusting ``client_tls``'s roots over TLS)."""
    if tls is None:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    else:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, server.handle, 0, tls, host="127.0.0.1")
        )
    raw = listeners[0].transport_listener if tls is not None else listeners[0]
    port = raw.socket.getsockname()[1]
    base = f"{'https' if tls is not None else 'http'}://127.0.0.1:{port}"
    settings = (telegram or TelegramConfig()).model_dump()
    configured = TelegramConfig(**{**settings, "api_base": base})

    def new_client(connections: int) -> HttpClient:
        return make_http_client(
            ssl_context=client_tls, telegram=configured, max_connections=connections
        )

    return configured, new_client
