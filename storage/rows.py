"""Plain records that cross the storage boundary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COUNTER_COLUMNS",
    "HEALTH_COLUMNS",
    "BotCounters",
    "HealthRow",
    "InboxEntry",
    "WebhookRegistration",
]


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """An update to store in the inbox, with the chat it is about and the lane it goes to.

    The caller names the chat and the lane (the actors, by the same rule their chat lanes
    use): storage does not read Telegram updates, so the inbox row and the lane never
    disagree. A full lane re-reads its undone updates by ``lane``.
    """

    update: Mapping[str, Any]  # as Telegram sent it; must have an integer update_id
    chat_id: int | None
    lane: str | None = None
    # For usage analytics, counted only if the row is new: the update's type (the one key
    # besides update_id; "other" when unknown) and its sender (``from.id``), named by the
    # actors like the chat.
    kind: str = "other"
    sender_id: int | None = None


@dataclass(frozen=True, slots=True)
class HealthRow:
    """One bot's health at one moment: a row of ``bot_health_metrics`` (without ``id``).

    Times are wall-clock epoch seconds from the daemon's injected clock. Counters are
    cumulative since the bot was first seen (restored across restarts).
    """

    user_id: int
    recorded_at: float
    status: str  # BotStatus value: "healthy", "degraded", "unhealthy", "suspended"
    total_requests: int
    successful_requests: int
    failed_requests: int
    error_rate: float  # over the health window, 0..1
    avg_response_time_ms: float  # EMA
    consecutive_failures: int
    circuit_state: str  # BreakerState value
    circuit_failure_count: int
    retry_attempts: int
    rate_limited_count: int
    last_success_at: float | None
    last_failure_at: float | None
    last_error: str | None  # redacted


HEALTH_COLUMNS: tuple[str, ...] = tuple(HealthRow.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class BotCounters:
    """One bot's delivery counters at one moment: its row of ``bot_counters`` (one per bot,
    replaced by every snapshot). Cumulative since the bot was first seen, restored across
    restarts like the health counters."""

    user_id: int
    recorded_at: float
    handled_updates: int
    replies_sent: int
    dead_letters: int
    ambiguous_sends: int
    handler_errors: int


COUNTER_COLUMNS: tuple[str, ...] = tuple(BotCounters.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class WebhookRegistration:
    """What ``setWebhook`` was last told for one bot (a row of ``webhook_registrations``).

    Two registrations are the same when everything but ``registered_at`` is: compare them
    with :meth:`same_as`. The secret itself is never stored, only its fingerprint.
    """

    user_id: int
    url: str
    secret_fingerprint: str
    allowed_updates: tuple[str, ...]
    max_connections: int
    registered_at: float
    # SHA-256 of the certificate uploaded with it (direct TLS), None when none was.
    certificate_fingerprint: str | None = None

    def same_as(self, other: WebhookRegistration | None) -> bool:
        """Whether ``other`` asks Telegram for exactly this (``registered_at`` aside)."""
        return (
            other is not None
            and self.user_id == other.user_id
            and self.url == other.url
            and self.secret_fingerprint == other.secret_fingerprint
            and self.allowed_updates == other.allowed_updates
            and self.max_connections == other.max_connections
            and self.certificate_fingerprint == other.certificate_fingerprint
        )
