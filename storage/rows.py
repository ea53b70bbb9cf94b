"""Plain records that cross the storage boundary."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HEALTH_COLUMNS", "HealthRow"]


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
