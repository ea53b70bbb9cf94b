"""Bearer-token authentication for every ``/admin`` route (plain ASGI middleware)."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BearerAuth"]


class BearerAuth:
    """Requires ``Authorization: Bearer <token>`` on paths under ``/admin``.

    The comparison is constant-time. With no token configured the admin API is open; the
    config refuses that unless the server listens on loopback only.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, prefix: str = "/admin") -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] in ("http", "websocket")
            and self._token is not None
            and _under(scope["path"], self._prefix)
            and not self._authorized(scope)
        ):
            await self._refuse(scope, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                )
        return False

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "unauthorized",
                    "message": "this route needs 'Authorization: Bearer <admin token>' "
                    "(the token is in the variable named by admin.token_env)",
                }
            }
        ).encode()
        if scope["type"] == "websocket":
            # Refuse the handshake with a plain HTTP 401 (ASGI websocket denial response
            # where the server supports it, else close before accept).
            if "websocket.http.response" in scope.get("extensions", {}):
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="botvisor"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")
