"""The operator's dashboard: a static page at ``/`` and its assets under ``/static/``.

The files ship inside the package (``admin/static``) and are read once, when the app is
built, with ``importlib.resources``, so a wheel install serves them as an editable one does,
with no build step and no CDN. The page is a thin client of the documented JSON API: it holds
no data the API does not give, and it signs in with the same bearer token (kept in the
browser's ``sessionStorage``, never in a URL).

Every response of the admin server carries the security headers of :class:`SecurityHeaders`;
the page's Content-Security-Policy admits only its own scripts, styles and connections, so
the page needs (and allows) no inline script or style.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.errors import ApiError
from admin.operations import Reply, operation

__all__ = [
    "ASSET_PREFIX",
    "Asset",
    "DashboardAssets",
    "SecurityHeaders",
    "dashboard_routes",
    "page_policy",
]

ASSET_PREFIX = "/static/"
_PACKAGE = "admin"
_DIRECTORY = "static"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
# Files of the package directory that are not served (documentation of the vendored code).
_NOT_SERVED = frozenset({"README.md"})

# A Host header this server may name in its own policy: a host name or address and a port.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


@dataclass(frozen=True)
class Asset:
    """One file of the page, read once: its bytes, media type and validator."""

    name: str
    body: bytes
    content_type: str
    etag: str


class DashboardAssets:
    """The page's files, keyed by their path under ``admin/static`` (``js/app.js``).

    Only files found at load time are served: a request names a key of this table, never a
    path on disk, so no request can reach outside the directory.
    """

    def __init__(self, assets: Mapping[str, Asset]) -> None:
        self._assets = dict(assets)

    @classmethod
    def load(cls) -> DashboardAssets:
        root = resources.files(_PACKAGE).joinpath(_DIRECTORY)
        assets = {}
        for name, entry in _walk(root, ""):
            suffix = name[name.rfind(".") :] if "." in name else ""
            if suffix not in _CONTENT_TYPES or name.rsplit("/", 1)[-1] in _NOT_SERVED:
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            assets[name] = Asset(name, body, _CONTENT_TYPES[suffix], etag)
        if "index.html" not in assets:
            raise RuntimeError(
                f"the dashboard's files are missing from the package ({_PACKAGE}/{_DIRECTORY}/"
                "index.html): reinstall botvisor"
            )
        return cls(assets)

    def get(self, name: str) -> Asset | None:
        return self._assets.get(name)

    def names(self) -> list[str]:
        return sorted(self._assets)

    def total_bytes(self) -> int:
        """What loading every file of the page costs, uncompressed."""
        return sum(len(asset.body) for asset in self._assets.values())


def _walk(directory: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for entry in directory.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            if entry.name != "__pycache__":
                yield from _walk(entry, name + "/")
        else:
            yield name, entry


def _answer(request: Request, asset: Asset) -> Response:
    # Names carry no version, so the browser revalidates each time; an unchanged file costs
    # a 304 without a body.
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


def _assets(request: Request) -> DashboardAssets:
    assets: DashboardAssets = request.app.state.dashboard
    return assets


@operation(
    "The operator's dashboard (an HTML page; sign in with the admin token). Its scripts and "
    "styles are under /static/",
    {200: Reply("the page", media_type="text/html", schema={"type": "string"})},
    public=True,
    tag="dashboard",
)
async def dashboard_page(request: Request) -> Response:
    asset = _assets(request).get("index.html")
    assert asset is not None  # DashboardAssets.load refuses a package without it
    return _answer(request, asset)


async def dashboard_asset(request: Request) -> Response:
    name = str(request.path_params["name"])
    asset = _assets(request).get(name)
    if asset is None or name == "index.html":
        raise ApiError(404, f"no file {ASSET_PREFIX}{name} in the dashboard")
    return _answer(request, asset)


def dashboard_routes() -> list[BaseRoute]:
    """The page and its files, for ``create_app`` (which loads the files onto app.state)."""
    return [
        Route("/", dashboard_page, methods=["GET"]),
        # Files, not API: left out of the OpenAPI document, like a static mount.
        Route(
            ASSET_PREFIX + "{name:path}",
            dashboard_asset,
            methods=["GET"],
            include_in_schema=False,
        ),
    ]


def page_policy(host: str | None) -> str:
    """The page's Content-Security-Policy: its own scripts, styles and API only, the live
    WebSocket of the same host, and no framing. ``host`` (the request's Host header) is named
    for ``ws:``/``wss:`` only when it is a plain host and port."""
    sockets = f" ws://{host} wss://{host}" if host is not None and _HOST.match(host) else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


# Everything that is not the page is data: it may load nothing and be framed by no one.
_DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"


class SecurityHeaders:
    """Adds the security headers to every HTTP answer (plain ASGI, outermost, so refusals
    such as 401 and 429 carry them too): ``X-Content-Type-Options: nosniff``,
    ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY``, a Content-Security-Policy
    (the page's on the page, a deny-all one elsewhere) and ``Cache-Control: no-store`` on
    ``/admin`` answers, which hold the fleet's data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        policy = page_policy(_header(scope, b"host")) if path == "/" else _DATA_POLICY
        data = path == "/admin" or path.startswith("/admin/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                added = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", policy.encode("latin-1")),
                ]
                if data:
                    added.append((b"cache-control", b"no-store"))
                headers += [(name, value) for name, value in added if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            text: str = value.decode("latin-1")
            return text
    return None
