"""FleetServices: what every bot actor of one daemon shares, built once and handed down."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import cached_property

from actors.botapi.errors import ErrorCategory
from actors.botapi.pool import HttpPoster
from actors.config import (
    BreakerConfig,
    HandlersConfig,
    HealthConfig,
    LimitsConfig,
    RetryConfig,
    TelegramConfig,
    WebhookConfig,
)
from actors.events import EventSink
from actors.instruments import FleetInstruments
from actors.limits import GlobalRateLimiter
from actors.retry import RetryPolicy, retry_policies
from storage import Store

__all__ = ["FleetServices"]


@dataclass(frozen=True)
class FleetServices:
    """What every bot actor of one daemon shares, built once and handed down."""

    telegram: TelegramConfig
    limits: LimitsConfig
    breaker: BreakerConfig
    retry: RetryConfig
    health: HealthConfig
    # How often a bot looks at its own status for changes that time alone makes (failures
    # ageing out of the window, a breaker due to half-open) and announces them.
    report_interval: float
    global_limiter: GlobalRateLimiter
    store: Store
    events: EventSink
    wall_clock: Callable[[], float]
    # A bounded share of one of the fleet's HTTP pools (FleetHttpPool.lease): one a bot
    # incarnation, one a fleet call (token check, webhook registration).
    http_client: Callable[[], AbstractAsyncContextManager[HttpPoster]]
    rng: random.Random
    # Where module:function handlers may come from (config and API bots alike).
    handlers: HandlersConfig = field(default_factory=HandlersConfig)
    # The [webhook] section: a webhook bot's dormancy (idle_seconds) and registration.
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    # The fleet's Prometheus counters and histograms (the metrics actor holds the same one).
    instruments: FleetInstruments = field(default_factory=FleetInstruments)
    # A shard's ([cluster]) answer to getUpdates 409 "terminated by other getUpdates request"
    # (another process polls the bot): the poller stops at once and calls this with the
    # bot's user_id; the fleet re-reads the registry and starts the bot again if it still
    # owns it. None (one process): that 409 is transient and retried, as before.
    on_poll_conflict: Callable[[int], None] | None = None

    @cached_property
    def retry_policies(self) -> dict[ErrorCategory, RetryPolicy]:
        """The retry policies of ``retry``, built once for the fleet (immutable; building
        them per bot was a third of a bot's construction)."""
        return retry_policies(self.retry)
