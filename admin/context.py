"""What the admin routes share: the context the daemon hands in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from actors import EventSink, MetricsActor, Shard, WebhookReceiver
from admin.ports import FleetControl, SupervisionView
from storage import Store

__all__ = ["AdminContext", "context_of"]


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
    # How long usage rows are kept (storage.usage_*retention_days): older ranges are a 422.
    usage_hour_retention_days: float = 35.0
    usage_retention_days: float = 400.0
    # The webhook listener's receiver (its statistics go to /metrics); None: no listener.
    webhook: WebhookReceiver | None = None
    # This process's shard: /metrics labels every series with it (None: no label).
    shard: Shard | None = None


def context_of(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.admin
    return context
