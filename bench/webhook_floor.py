"""The floor of webhook ingest: a bare ASGI app on Hypercorn/Trio answering the same POSTs.

``python -m bench.webhook_floor`` serves, on 127.0.0.1 (a free port), an app that does the
least any receiver must: read the body, parse its JSON, look at the secret header, answer 200
with no body. It prints ``{"port": P}`` and serves until stdin closes or SIGTERM. botvisor's
receiver answers the same requests after committing each update to SQLite; the benchmark
compares CPU per delivery of the two in the same run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

__all__ = ["floor_app", "main"]


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = dict(scope["headers"])
    ok = headers.get(b"x-telegram-bot-api-secret-token") is not None and "update_id" in json.loads(
        body
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200 if ok else 401,
            "headers": [(b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _main() -> None:
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 600
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, floor_app, config)
        port = int(binds[0].rsplit(":", 1)[1])
        print(json.dumps({"port": port}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


def main() -> None:
    trio.run(_main)


if __name__ == "__main__":
    main()
