"""What the admin routes share: the context the daemon hands in, and request parsing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from actors import EventSink, MetricsActor
from admin.errors import ApiError
from admin.ports import FleetControl, SupervisionView
from storage import Store

__all__ = [
    "MAX_BODY",
    "MAX_USER_ID",
    "AdminContext",
    "context_of",
    "read_json",
    "user_id_param",
]

MAX_USER_ID = 2**63 - 1  # SQLite's INTEGER
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class AdminContext:
    """What the admin API needs, handed in by the daemon."""

    fleet: FleetControl
    metrics: MetricsActor
    store: Store
    supervisor: SupervisionView
    events: EventSink
    wall_clock: Callable[[], float]
    admin_token: str | None
    ready: Callable[[], Awaitable[tuple[bool, str]]]
    # Serve /metrics without the admin token.
    metrics_public: bool = False
    # Per-bot series on /metrics; off keeps only fleet totals.
    metrics_per_bot: bool = True
    # (requests, per_seconds) per client address; None turns IP rate limiting off.
    ip_rate_limit: tuple[int, float] | None = None
    ip_rate_limit_clients: int = 10_000
    trusted_proxies: tuple[str, ...] = ()
    # Seconds one live-event message may take to send before the client is dropped.
    event_send_timeout: float = 10.0


def context_of(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.admin
    return context


def user_id_param(request: Request) -> int:
    """The ``{user_id}`` path parameter, or a 422 saying what is wrong with it."""
    raw = request.path_params["user_id"]
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_USER_ID:
        raise ApiError(422, f"user_id must be a whole number from 1 to {MAX_USER_ID}, got {raw!r}")
    return int(raw)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (empty means ``{}``), or a 4xx saying what is
    wrong."""
    chunks: list[bytes] = []
    size = 0
    # Read as it arrives, so an oversized body is refused before it is all in memory.
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError(413, f"the request body must be at most {MAX_BODY // 1024} KiB")
            chunks.append(chunk)
    body = b"".join(chunks)
    try:
        data = json.loads(body or b"{}", parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(422, f"the request body must be JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the request body must be a JSON object")
    return data
