"""Each bot's health: outcomes over a rolling time window, latency EMA, and its status.

Status rules (DESIGN.md, thresholds from :class:`~actors.config.HealthConfig`), first match:

- SUSPENDED: suspended (permanent error, restart intensity exceeded, or an operator).
- UNHEALTHY: breaker OPEN or FORCED_OPEN, or error rate >= ``unhealthy_error_rate`` (with at
  least ``minimum_volume`` calls in the window), or >= ``unhealthy_consecutive_failures``.
- DEGRADED: breaker HALF_OPEN, or error rate >= ``degraded_error_rate`` (same volume rule), or
  >= ``degraded_consecutive_failures``, or latency EMA above ``slow_response_ms``.
- HEALTHY: otherwise.

Polls and calls are tracked apart. A poll is the bot's own ``getUpdates``; a call is every
other request (sends, ``ctx.call``). The window, its error rate, the run of
``consecutive_failures`` and the latency average describe calls only, so successful empty polls
can never hide that every send fails. Polls have their own run of consecutive failures, which
gives the *polling status* (DEGRADED and UNHEALTHY at the same consecutive-failure thresholds);
the rules above give the *call status*; the bot's status is the worse of the two (and
SUSPENDED overrides both). The cumulative counters (``total_requests``,
``successful_requests``, ``failed_requests``) and the last success, failure and error count
every request, polls included, as the stored snapshot columns always have.

What counts: a success or a failure is a call in the window; a chat error (400 on one request,
403 blocked by a user) is a call that did not fail, since the Bot API answered and the bot is
fine; a 429 is neither (it says we sent too much, not that anything is broken).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors.breaker import BreakerState, BreakerStatistics, RollingCounter
from actors.config import HealthConfig
from actors.retry import RetryStatistics
from actors.secrets import redact
from storage import HealthRow

__all__ = [
    "WEBHOOK_UNHEALTHY_CHECKS",
    "BotStatus",
    "HealthStatistics",
    "HealthTracker",
    "health_row",
    "worse",
]

# A webhook Telegram reports it cannot deliver to (getWebhookInfo: a recent last_error_date
# with updates pending) makes the bot DEGRADED at the first such check, UNHEALTHY once this
# many checks in a row report it; a clean check clears it.
WEBHOOK_UNHEALTHY_CHECKS = 2

# Longer error texts are cut: a snapshot row per bot must stay small.
_MAX_ERROR_CHARS = 500


class BotStatus(enum.Enum):
    HEALTHY = "healthy"  # below every threshold
    DEGRADED = "degraded"  # working, but erroring, slow or probing after an outage
    UNHEALTHY = "unhealthy"  # failing most calls, or its breaker is open
    SUSPENDED = "suspended"  # stopped until resumed: bad token, crash loop, or an operator


_SEVERITY = {
    BotStatus.HEALTHY: 0,
    BotStatus.DEGRADED: 1,
    BotStatus.UNHEALTHY: 2,
    BotStatus.SUSPENDED: 3,
}


def worse(a: BotStatus, b: BotStatus) -> BotStatus:
    """The more severe of two statuses."""
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


@dataclass(frozen=True)
class HealthStatistics:
    # Cumulative, named as the bot_health_metrics columns. total_requests counts every
    # recorded outcome: successes, failures, throttled (429) and chat errors.
    total_requests: int
    successful_requests: int
    failed_requests: int
    throttled: int
    chat_errors: int
    window_calls: int
    window_failures: int
    error_rate: float  # window_failures / window_calls, 0.0 with no calls
    ema_latency_ms: float | None  # None until a latency was measured
    consecutive_failures: int  # the calls' run (getUpdates not included)
    polls: int  # getUpdates outcomes since start (not stored: a restart starts at 0)
    poll_failures: int
    poll_consecutive_failures: int
    last_poll_at: float | None  # wall clock of the last successful poll
    last_success_at: float | None  # wall clock
    last_failure_at: float | None  # wall clock
    last_error: str | None  # redacted
    suspended_reason: str | None
    # Why the webhook bot's setWebhook failed (redacted), while it is not registered: it is
    # tried again with a backoff, the bot DEGRADED meanwhile. None once it succeeds.
    webhook_registration_error: str | None = None


class HealthTracker:
    """Per-request health bookkeeping of one bot; cheap enough to call on every request.

    The window uses 60 time buckets: constant memory per bot whatever its traffic.
    """

    def __init__(
        self,
        config: HealthConfig,
        *,
        wall_clock: Callable[[], float],
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._config = config
        self._wall_clock = wall_clock
        self._clock = clock
        self._window = RollingCounter(config.window_seconds)
        self._total = 0
        self._successes = 0
        self._failures = 0
        self._throttled = 0
        self._chat_errors = 0
        self._ema_ms: float | None = None
        self._consecutive_failures = 0
        self._polls = 0
        self._poll_failures = 0
        self._poll_run = 0
        self._last_poll_at: float | None = None
        self._last_success_at: float | None = None
        self._last_failure_at: float | None = None
        self._last_error: str | None = None
        self._suspended_reason: str | None = None
        # Consecutive getWebhookInfo checks that reported a delivery problem.
        self._webhook_run = 0
        self._registration_error: str | None = None
        # Moves on every change that may change the status; with the breaker state it keys
        # a remembered status (see ``status``).
        self._version = 0
        self._remembered: tuple[int, BreakerState, BotStatus] | None = None

    @property
    def config(self) -> HealthConfig:
        return self._config

    @property
    def suspended_reason(self) -> str | None:
        return self._suspended_reason

    @property
    def total_requests(self) -> int:
        """Calls with an outcome so far (cumulative), without building a statistics record."""
        return self._total

    @property
    def successes(self) -> int:
        """Successful calls so far (cumulative)."""
        return self._successes

    @property
    def ema_latency_ms(self) -> float | None:
        """The response-time average; None until a latency was measured."""
        return self._ema_ms

    @property
    def failures(self) -> int:
        """Failed calls so far (cumulative), without building a statistics record."""
        return self._failures

    @property
    def throttled(self) -> int:
        """Calls answered 429 so far (cumulative)."""
        return self._throttled

    @property
    def chat_errors(self) -> int:
        """Calls refused for one chat so far (cumulative)."""
        return self._chat_errors

    def record_success(self, latency: float | None) -> None:
        """A call succeeded; ``latency`` in seconds, None when not meaningful (long polls)."""
        self._version += 1
        self._total += 1
        self._successes += 1
        self._consecutive_failures = 0
        self._last_success_at = self._wall_clock()
        self._window.add(self._clock(), failed=False)
        self._observe(latency)

    def record_failure(self, error: str, latency: float | None) -> None:
        """A call failed in a way that counts against the bot."""
        self._version += 1
        self._total += 1
        self._failures += 1
        self._consecutive_failures += 1
        self._last_failure_at = self._wall_clock()
        self._last_error = redact(error)[:_MAX_ERROR_CHARS]
        self._window.add(self._clock(), failed=True)
        self._observe(latency)

    def record_poll_success(self) -> None:
        """A poll (getUpdates) succeeded: ends the polls' run, never the calls'."""
        if self._poll_run:
            self._version += 1
            self._poll_run = 0
        self._total += 1
        self._successes += 1
        self._polls += 1
        self._last_poll_at = self._last_success_at = self._wall_clock()

    def record_poll_failure(self, error: str) -> None:
        """A poll failed in a way that counts against the bot."""
        self._version += 1
        self._total += 1
        self._failures += 1
        self._polls += 1
        self._poll_failures += 1
        self._poll_run += 1
        self._last_failure_at = self._wall_clock()
        self._last_error = redact(error)[:_MAX_ERROR_CHARS]

    def record_throttled(self) -> None:
        """A 429: counted apart, neither a success nor a failure."""
        self._total += 1
        self._throttled += 1

    def record_chat_error(self, chat_id: int | str | None) -> None:
        """A request was refused for one chat's reason; the bot itself is fine."""
        self._version += 1
        self._total += 1
        self._chat_errors += 1
        self._window.add(self._clock(), failed=False)

    def suspend(self, reason: str) -> None:
        """SUSPENDED until :meth:`resume`, whatever the outcomes say."""
        self._version += 1
        self._suspended_reason = redact(reason)[:_MAX_ERROR_CHARS]

    def resume(self) -> None:
        """Leave SUSPENDED; the window starts afresh so old failures do not linger."""
        self._version += 1
        self._suspended_reason = None
        self._consecutive_failures = 0
        self._poll_run = 0
        self._window.clear()

    def record_webhook_info(self, problem: str | None) -> None:
        """A getWebhookInfo check: ``problem`` is Telegram's delivery error (None: clean)."""
        self._version += 1
        if problem is None:
            self._webhook_run = 0
            return
        self._webhook_run += 1
        self._last_error = redact(problem)[:_MAX_ERROR_CHARS]
        self._last_failure_at = self._wall_clock()

    def record_webhook_registration(self, problem: str | None) -> None:
        """A setWebhook of the bot: ``problem`` is why it failed (None: registered)."""
        self._version += 1
        if problem is None:
            self._registration_error = None
            return
        self._registration_error = self._last_error = redact(problem)[:_MAX_ERROR_CHARS]
        self._last_failure_at = self._wall_clock()

    @property
    def webhook_registration_error(self) -> str | None:
        """Why the last setWebhook failed, while the bot is not registered (redacted)."""
        return self._registration_error

    def webhook_status(self) -> BotStatus:
        """The webhook's status as Telegram reports it (SUSPENDED overrides); DEGRADED while
        setWebhook fails (Telegram does not know where to push)."""
        if self._suspended_reason is not None:
            return BotStatus.SUSPENDED
        if self._webhook_run >= WEBHOOK_UNHEALTHY_CHECKS:
            return BotStatus.UNHEALTHY
        if self._webhook_run or self._registration_error is not None:
            return BotStatus.DEGRADED
        return BotStatus.HEALTHY

    def polling_status(self) -> BotStatus:
        """The polls' status: from their run of consecutive failures (SUSPENDED overrides)."""
        if self._suspended_reason is not None:
            return BotStatus.SUSPENDED
        c = self._config
        if self._poll_run >= c.unhealthy_consecutive_failures:
            return BotStatus.UNHEALTHY
        if self._poll_run >= c.degraded_consecutive_failures:
            return BotStatus.DEGRADED
        return BotStatus.HEALTHY

    def call_status(self, breaker_state: BreakerState) -> BotStatus:
        """The calls' status: window, run, latency and breaker (SUSPENDED overrides)."""
        if self._suspended_reason is not None:
            return BotStatus.SUSPENDED
        return self._status(breaker_state)[0]

    def status(self, breaker_state: BreakerState) -> BotStatus:
        """The bot's status now, given its breaker's state: the worse of polls and calls."""
        if self._suspended_reason is not None:
            return BotStatus.SUSPENDED
        remembered = self._remembered
        if (
            remembered is not None
            and remembered[0] == self._version
            and remembered[1] is breaker_state
        ):
            return remembered[2]
        status, failures = self._status(breaker_state)
        status = worse(worse(status, self.polling_status()), self.webhook_status())
        # With no failure in the window, time alone cannot change the status (an ageing
        # window only loses calls, and no failure means no error rate): it holds until the
        # next outcome or breaker transition. The fleet's summary reads every bot's status,
        # and most of them are quiet and healthy.
        self._remembered = (self._version, breaker_state, status) if failures == 0 else None
        return status

    def _status(self, breaker_state: BreakerState) -> tuple[BotStatus, int]:
        """The status from the rules, and the window's failures it was computed with."""
        c = self._config
        calls, failures = self._window.totals(self._clock())
        rate = failures / calls if calls >= c.minimum_volume else 0.0
        if (
            breaker_state in (BreakerState.OPEN, BreakerState.FORCED_OPEN)
            or (calls >= c.minimum_volume and rate >= c.unhealthy_error_rate)
            or self._consecutive_failures >= c.unhealthy_consecutive_failures
        ):
            return BotStatus.UNHEALTHY, failures
        if (
            breaker_state is BreakerState.HALF_OPEN
            or (calls >= c.minimum_volume and rate >= c.degraded_error_rate)
            or self._consecutive_failures >= c.degraded_consecutive_failures
            or (self._ema_ms is not None and self._ema_ms > c.slow_response_ms)
        ):
            return BotStatus.DEGRADED, failures
        return BotStatus.HEALTHY, failures

    def statistics(self) -> HealthStatistics:
        calls, failures = self._window.totals(self._clock())
        return HealthStatistics(
            total_requests=self._total,
            successful_requests=self._successes,
            failed_requests=self._failures,
            throttled=self._throttled,
            chat_errors=self._chat_errors,
            window_calls=calls,
            window_failures=failures,
            error_rate=failures / calls if calls else 0.0,
            ema_latency_ms=self._ema_ms,
            consecutive_failures=self._consecutive_failures,
            polls=self._polls,
            poll_failures=self._poll_failures,
            poll_consecutive_failures=self._poll_run,
            last_poll_at=self._last_poll_at,
            last_success_at=self._last_success_at,
            last_failure_at=self._last_failure_at,
            last_error=self._last_error,
            suspended_reason=self._suspended_reason,
            webhook_registration_error=self._registration_error,
        )

    def restore(self, row: HealthRow) -> None:
        """Seed cumulative counters, latency EMA and last outcomes from a stored snapshot.

        The window starts empty: it describes the recent past, which a restart interrupted.
        The consecutive-failure count is kept, so a bot whose last calls all failed stays
        DEGRADED or UNHEALTHY after a restart until a call succeeds. Suspension is not restored
        from the row; the registry knows which bots are suspended.
        """
        self._version += 1
        self._consecutive_failures = row.consecutive_failures
        self._total = row.total_requests
        self._successes = row.successful_requests
        self._failures = row.failed_requests
        self._throttled = row.rate_limited_count
        self._chat_errors = max(
            0,
            row.total_requests
            - row.successful_requests
            - row.failed_requests
            - row.rate_limited_count,
        )
        self._ema_ms = row.avg_response_time_ms if row.avg_response_time_ms > 0 else None
        self._last_success_at = row.last_success_at
        self._last_failure_at = row.last_failure_at
        self._last_error = None if row.last_error is None else redact(row.last_error)

    def _observe(self, latency: float | None) -> None:
        if latency is None:
            return
        sample = latency * 1000.0
        if self._ema_ms is None:
            self._ema_ms = sample
        else:
            self._ema_ms += self._config.ema_alpha * (sample - self._ema_ms)


def health_row(
    user_id: int,
    recorded_at: float,
    status: BotStatus,
    health: HealthStatistics,
    breaker: BreakerStatistics,
    retry: RetryStatistics,
) -> HealthRow:
    """One ``bot_health_metrics`` row from a bot's statistics (``recorded_at``: wall clock)."""
    return HealthRow(
        user_id=user_id,
        recorded_at=recorded_at,
        status=status.value,
        total_requests=health.total_requests,
        successful_requests=health.successful_requests,
        failed_requests=health.failed_requests,
        error_rate=health.error_rate,
        avg_response_time_ms=health.ema_latency_ms if health.ema_latency_ms is not None else 0.0,
        consecutive_failures=health.consecutive_failures,
        circuit_state=breaker.state.value,
        circuit_failure_count=breaker.failure_count,
        retry_attempts=retry.retries,
        rate_limited_count=health.throttled,
        last_success_at=health.last_success_at,
        last_failure_at=health.last_failure_at,
        last_error=health.last_error,
    )
