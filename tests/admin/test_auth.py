"""Authentication: every /admin route (HTTP and WebSocket) and /metrics need the admin token."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from admin import AdminConfig, AdminServer
from admin.auth import BearerAuth
from tests.admin.helpers import ADMIN_TOKEN, AUTH, admin_fleet, client, make_app

# "/" is the dashboard page: public, as it holds no data (its calls send the token).
OPEN_PATHS = {"/healthz", "/readyz", "/openapi.json", "/"}
WRONG = [
    {},
    {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    # Prefixes of the token, down to nothing: only the whole token opens the API.
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:1]}"},
    {"Authorization": "Bearer "},
    # The token with one character changed, at the start and at the end.
    {"Authorization": f"Bearer X{ADMIN_TOKEN[1:]}"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}X"},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": ADMIN_TOKEN},
]


def http_routes(app: Starlette) -> list[tuple[str, str]]:
    """(method, concrete path) of every HTTP route of the app."""
    found = []
    for route in app.routes:
        if isinstance(route, Route) and route.include_in_schema:
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                found.append((method, route.path.replace("{user_id}", "1")))
    return found


async def websocket_status(app: Starlette, path: str, headers: dict[str, str]) -> int:
    """Open a WebSocket on ``path`` at the ASGI level: the HTTP status of a refused handshake,
    or 101 when the app accepts it."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("admin.test", 80),
        "scheme": "ws",
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    with trio.move_on_after(1):
        await app(scope, receive, send)
    first = sent[0]
    if first["type"] == "websocket.accept":
        return 101
    assert first["type"] == "websocket.http.response.start", first
    body = json.loads(sent[1]["body"])
    assert set(body["error"]) == {"code", "message"}
    return int(first["status"])


async def test_every_admin_route_refuses_a_missing_or_wrong_token(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        routes = http_routes(admin.app)
        admin_routes = [(m, p) for m, p in routes if p.startswith("/admin")]
        # The walk covers the eleven system endpoints, bot management and events.
        assert len(admin_routes) >= 18
        assert {p for _, p in routes} - {p for _, p in admin_routes} == OPEN_PATHS | {"/metrics"}
        for headers in WRONG:
            async with client(admin.app, **headers) as anonymous:
                for method, path in [*admin_routes, ("GET", "/metrics")]:
                    response = await anonymous.request(method, path)
                    assert response.status_code == 401, (method, path, headers)
                    assert response.json()["error"]["code"] == "unauthorized"
                    assert response.headers["www-authenticate"].startswith("Bearer")
                for path in OPEN_PATHS:
                    assert (await anonymous.get(path)).status_code == 200, path
        # With the token the same requests get past authentication (so the walk can fail).
        for method, path in admin_routes:
            if method == "GET":
                response = await admin.http.request(method, path)
                assert response.status_code != 401, (method, path)


async def test_the_events_websocket_refuses_a_missing_or_wrong_token(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        ws_paths = [r.path for r in admin.app.routes if isinstance(r, WebSocketRoute)]
        assert ws_paths == ["/admin/events"]
        for headers in WRONG:
            assert await websocket_status(admin.app, "/admin/events", headers) == 401
        assert await websocket_status(admin.app, "/admin/events", AUTH) == 101


async def test_metrics_are_open_only_when_configured_public(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        public = make_app(admin.fleet, metrics_public=True)
        async with client(public) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 200
            assert (await anonymous.get("/admin/bots")).status_code == 401


async def test_without_a_token_the_server_only_listens_on_loopback(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        open_app = make_app(admin.fleet, admin_token=None)
        for host in ("0.0.0.0", "192.0.2.10", "::"):
            with pytest.raises(ValueError, match="only listens on loopback"):
                AdminServer(open_app, host=host, port=0)
        AdminServer(open_app, host="127.0.0.1", port=0)
        AdminServer(open_app, host="::1", port=0)
        # With a token it may listen anywhere.
        AdminServer(admin.app, host="0.0.0.0", port=0)
        # On loopback without a token the API is open, as configured.
        async with client(open_app) as anonymous:
            assert (await anonymous.get("/admin/bots")).status_code == 200
    with pytest.raises(ValueError, match="no admin token is set"):
        AdminConfig(listen="0.0.0.0:8080")


async def test_tokens_never_appear_in_answers(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1, 2]) as admin:
        secrets = [admin.fleet.tokens[uid] for uid in (1, 2)]
        texts = [
            (await admin.http.get(path)).text
            for path in (
                "/admin/bots",
                "/admin/bots/1",
                "/metrics",
                "/admin/system/bot-health/1",
                "/admin/system/bot-health/unhealthy",
            )
        ]
        for text in texts:
            for secret in secrets:
                assert secret not in text
                assert secret.split(":")[1] not in text
        assert f"{admin.fleet.bot_id(1)}:…" in texts[0]


@pytest.mark.parametrize(
    "credentials",
    [
        ADMIN_TOKEN[:-1],
        ADMIN_TOKEN[:1],
        "",
        ADMIN_TOKEN + "x",
        "x" + ADMIN_TOKEN,
        ADMIN_TOKEN.upper(),
        ADMIN_TOKEN[::-1],
    ],
)
async def test_bearer_auth_accepts_only_the_whole_token(credentials: str) -> None:
    """The middleware alone, over a bare ASGI app: a near miss is a 401, never a pass."""
    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    auth = BearerAuth(inner, token=ADMIN_TOKEN, paths=["/metrics"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(auth), base_url="http://admin.test"
    ) as http:
        for path in ("/admin", "/admin/bots", "/metrics"):
            refused = await http.get(path, headers={"Authorization": f"Bearer {credentials}"})
            assert refused.status_code == 401, (path, credentials)
        assert reached == []
        # The scheme in any case, and the blanks a hand-typed header may carry.
        for value in (
            f"Bearer {ADMIN_TOKEN}",
            f"bearer {ADMIN_TOKEN}",
            f"BEARER  {ADMIN_TOKEN} ",
        ):
            allowed = await http.get("/admin/bots", headers={"Authorization": value})
            assert allowed.status_code == 204, value
        # Paths outside the prefix are not guarded (and not mistaken for it).
        for path in ("/healthz", "/administrator", "/metricsx"):
            assert (await http.get(path)).status_code == 204, path
    assert reached == ["/admin/bots"] * 3 + ["/healthz", "/administrator", "/metricsx"]


async def test_a_request_without_any_header_is_refused_not_an_error() -> None:
    # ASGI servers always send a header list, but the middleware must not depend on it.
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be reached")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    auth = BearerAuth(inner, token=ADMIN_TOKEN)
    scope = {"type": "http", "method": "GET", "path": "/admin/bots", "query_string": b""}
    await auth(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"])["error"]["code"] == "unauthorized"
