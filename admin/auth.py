"""Bearer-token authentication for every ``/admin`` route (plain ASGI middleware)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from admin.errors import refuse

__all__ = ["BearerAuth"]

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
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                )
        return False
