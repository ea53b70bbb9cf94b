"""Bearer-token authentication for every ``/admin`` route (plain ASGI middleware)."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from admin.errors import refuse

__all__ = ["EVENTS_SUBPROTOCOL", "TOKEN_SUBPROTOCOL_PREFIX", "BearerAuth", "offered_subprotocols"]

# A browser's WebSocket cannot send an Authorization header, and a token in the URL would land
# in logs and history; so, as Kubernetes does, it offers the token as a subprotocol:
# ``new WebSocket(url, ["botvisor.events", "base64url.bearer.botvisor." + b64url(token)])``.
# The server answers with EVENTS_SUBPROTOCOL, never echoing the token's entry.
TOKEN_SUBPROTOCOL_PREFIX = b"base64url.bearer.botvisor."
EVENTS_SUBPROTOCOL = "botvisor.events"

UNAUTHORIZED = (
    "this route needs 'Authorization: Bearer <admin token>' "
    "(the token is in the variable named by admin.token_env)"
)


class BearerAuth:
    """Requires ``Authorization: Bearer <token>`` on paths under ``prefix`` and on the exact
    ``paths`` (``/metrics`` unless it is configured public).

    The comparison is constant-time. With no token configured the admin API is open; the
    config and ``AdminServer`` refuse that unless the server listens on loopback only.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        prefix: str = "/admin",
        paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._prefix = prefix
        self._paths = frozenset(paths)

    def protects(self, path: str) -> bool:
        """Whether ``path`` needs the token (when one is configured)."""
        return path in self._paths or path == self._prefix or path.startswith(self._prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] in ("http", "websocket")
            and self._token is not None
            and self.protects(scope["path"])
            and not self._authorized(scope)
        ):
            await refuse(
                scope,
                send,
                401,
                UNAUTHORIZED,
                headers={"WWW-Authenticate": 'Bearer realm="botvisor"'},
            )
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        if scope["type"] == "websocket":
            for offered in offered_subprotocols(scope):
                if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                    return hmac.compare_digest(_decoded(offered), self._token)
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                )
        return False


def offered_subprotocols(scope: Scope) -> list[bytes]:
    """The subprotocols a WebSocket client offered (``Sec-WebSocket-Protocol``)."""
    offered: list[bytes] = []
    for name, value in scope.get("headers", []):
        if name == b"sec-websocket-protocol":
            offered += [part.strip() for part in value.split(b",") if part.strip()]
    return offered


def _decoded(offered: bytes) -> bytes:
    encoded = offered[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return b""
