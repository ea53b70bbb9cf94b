"""Test data for the storage tests."""

from __future__ import annotations

from typing import Any

from storage import HealthRow


def health_row(
    user_id: int, recorded_at: float, status: str = "healthy", **changes: Any
) -> HealthRow:
    """A plausible health row; ``changes`` overrides any column."""
    values: dict[str, Any] = {
        "user_id": user_id,
        "recorded_at": recorded_at,
        "status": status,
        "total_requests": 10,
        "successful_requests": 9,
        "failed_requests": 1,
        "error_rate": 0.1,
        "avg_response_time_ms": 42.5,
        "consecutive_failures": 0,
        "circuit_state": "closed",
        "circuit_failure_count": 0,
        "retry_attempts": 2,
        "rate_limited_count": 0,
        "last_success_at": recorded_at - 1.5,
        "last_failure_at": None,
        "last_error": None,
    }
    values.update(changes)
    return HealthRow(**values)
