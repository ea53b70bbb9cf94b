"""Settings of a bot actor and its request pipeline, as frozen dataclasses.

Each class validates itself in ``__post_init__`` and names the ``botvisor.toml`` key that is
wrong (``"breaker.open_seconds must be > 0, got -1"``). The loader in ``supervisor.config``
builds them from the file; tests build them directly.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from actors.secrets import BotToken

__all__ = [
    "AutoreplyRule",
    "BackoffKind",
    "BotConfig",
    "BreakerConfig",
    "HealthConfig",
    "JitterKind",
    "LimitsConfig",
    "RetryConfig",
    "RetryPolicyConfig",
    "TelegramConfig",
    "check",
]


def check(condition: bool, key: str, rule: str, value: object) -> None:
    """Raise ``ValueError("<key> must <rule>, got <value>")`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{key} must {rule}, got {value!r}")


def _positive(key: str, value: float) -> None:
    check(
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0, key, "be > 0", value
    )


def _non_negative(key: str, value: float) -> None:
    check(
        isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
        key,
        "be >= 0",
        value,
    )


def _fraction(key: str, value: float) -> None:
    check(isinstance(value, (int, float)) and 0 < value <= 1, key, "be in (0, 1]", value)


@dataclass(frozen=True)
class TelegramConfig:
    """``[telegram]``: where the Bot API is and how to long-poll it."""

    api_base: str = "https://api.telegram.org"
    # getUpdates long-poll timeout in seconds; Telegram caps it at 50.
    poll_timeout: int = 30
    # The HTTP read timeout of getUpdates is poll_timeout + this margin.
    poll_http_margin: float = 10.0
    # HTTP timeout of every other call.
    request_timeout: float = 30.0
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        check(
            self.api_base.startswith(("http://", "https://")),
            "telegram.api_base",
            "start with http:// or https://",
            self.api_base,
        )
        check(
            isinstance(self.poll_timeout, int) and 0 <= self.poll_timeout <= 50,
            "telegram.poll_timeout",
            "be a whole number of seconds from 0 to 50",
            self.poll_timeout,
        )
        _positive("telegram.poll_http_margin", self.poll_http_margin)
        _positive("telegram.request_timeout", self.request_timeout)
        _positive("telegram.connect_timeout", self.connect_timeout)


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: Telegram's rate limits, per chat, per bot and for the whole process."""

    # A token bucket grants at most rate × T + burst in any T seconds: small bursts keep the
    # busiest second near Telegram's ~30 messages/s (a burst equal to the rate would allow
    # twice the rate in the first second).
    global_rps: float = 25.0
    global_burst: int = 5
    bot_rps: float = 30.0
    bot_burst: int = 5
    private_chat_per_second: float = 1.0
    group_chat_per_minute: float = 20.0
    # Chats of one bot handled concurrently; updates of one chat are always in order.
    max_concurrent_chats: int = 16
    # A chat lane with nothing to do for this long is reaped.
    lane_idle_seconds: float = 60.0

    def __post_init__(self) -> None:
        _positive("limits.global_rps", self.global_rps)
        check(
            isinstance(self.global_burst, int) and self.global_burst >= 1,
            "limits.global_burst",
            "be a whole number >= 1",
            self.global_burst,
        )
        _positive("limits.bot_rps", self.bot_rps)
        check(
            isinstance(self.bot_burst, int) and self.bot_burst >= 1,
            "limits.bot_burst",
            "be a whole number >= 1",
            self.bot_burst,
        )
        _positive("limits.private_chat_per_second", self.private_chat_per_second)
        _positive("limits.group_chat_per_minute", self.group_chat_per_minute)
        check(
            isinstance(self.max_concurrent_chats, int) and self.max_concurrent_chats >= 1,
            "limits.max_concurrent_chats",
            "be a whole number >= 1",
            self.max_concurrent_chats,
        )
        _positive("limits.lane_idle_seconds", self.lane_idle_seconds)


@dataclass(frozen=True)
class BreakerConfig:
    """``[breaker]``: each bot's circuit breaker."""

    failure_threshold: int = 5
    open_seconds: float = 60.0
    half_open_successes: int = 2
    # Optional failure-rate rule: OPEN when, over the last ``rate_window_seconds``, at least
    # ``rate_minimum_calls`` calls were made and the failed share reached ``failure_rate``.
    failure_rate: float | None = None
    rate_window_seconds: float = 60.0
    rate_minimum_calls: int = 20

    def __post_init__(self) -> None:
        check(
            isinstance(self.failure_threshold, int) and self.failure_threshold >= 1,
            "breaker.failure_threshold",
            "be a whole number >= 1",
            self.failure_threshold,
        )
        _positive("breaker.open_seconds", self.open_seconds)
        check(
            isinstance(self.half_open_successes, int) and self.half_open_successes >= 1,
            "breaker.half_open_successes",
            "be a whole number >= 1",
            self.half_open_successes,
        )
        if self.failure_rate is not None:
            _fraction("breaker.failure_rate", self.failure_rate)
        _positive("breaker.rate_window_seconds", self.rate_window_seconds)
        check(
            isinstance(self.rate_minimum_calls, int) and self.rate_minimum_calls >= 1,
            "breaker.rate_minimum_calls",
            "be a whole number >= 1",
            self.rate_minimum_calls,
        )


class BackoffKind(enum.Enum):
    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIXED = "fixed"
    FIBONACCI = "fibonacci"


class JitterKind(enum.Enum):
    NONE = "none"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"


@dataclass(frozen=True)
class RetryPolicyConfig:
    """One error category's retry policy: ``[retry.<category>]``."""

    max_retries: int
    backoff: BackoffKind = BackoffKind.EXPONENTIAL
    jitter: JitterKind = JitterKind.FULL
    base_delay: float = 0.5
    max_delay: float = 30.0
    # Set by the loader so messages name the right table.
    key: str = "retry"

    def __post_init__(self) -> None:
        check(
            isinstance(self.max_retries, int) and 0 <= self.max_retries <= 100,
            f"{self.key}.max_retries",
            "be a whole number from 0 to 100",
            self.max_retries,
        )
        _non_negative(f"{self.key}.base_delay", self.base_delay)
        _positive(f"{self.key}.max_delay", self.max_delay)
        check(
            self.base_delay <= self.max_delay,
            f"{self.key}.base_delay",
            f"be <= max_delay ({self.max_delay})",
            self.base_delay,
        )


def _default_policy(key: str, retries: int, **kw: object) -> RetryPolicyConfig:
    return RetryPolicyConfig(max_retries=retries, key=f"retry.{key}", **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RetryConfig:
    """``[retry]``: the quick retries per error category, and delivery beyond them.

    RATE_LIMIT waits exactly the server's ``retry_after`` (its backoff applies only when the
    server gave none). PERMANENT and CHAT errors are never retried.
    """

    rate_limit: RetryPolicyConfig = field(
        default_factory=lambda: _default_policy(
            "rate_limit", 3, jitter=JitterKind.NONE, backoff=BackoffKind.FIXED, base_delay=1.0
        )
    )
    transient_network: RetryPolicyConfig = field(
        default_factory=lambda: _default_policy("transient_network", 2)
    )
    unknown: RetryPolicyConfig = field(
        default_factory=lambda: _default_policy(
            "unknown", 2, base_delay=2.0, jitter=JitterKind.EQUAL
        )
    )
    # Retry a non-idempotent call (sendMessage) whose request may have reached the server.
    # Off by default: such a retry could send a message twice.
    retry_uncertain_sends: bool = False
    # A reply that exhausted its quick retries is parked and re-sent until this many seconds
    # after its update arrived; then it is dead-lettered.
    delivery_deadline: float = 900.0

    def __post_init__(self) -> None:
        _positive("retry.delivery_deadline", self.delivery_deadline)


@dataclass(frozen=True)
class HealthConfig:
    """``[health]``: how outcomes turn into HEALTHY / DEGRADED / UNHEALTHY."""

    window_seconds: float = 300.0
    degraded_error_rate: float = 0.10
    unhealthy_error_rate: float = 0.50
    # The error-rate rules apply only with at least this many calls in the window.
    minimum_volume: int = 10
    degraded_consecutive_failures: int = 3
    unhealthy_consecutive_failures: int = 5
    slow_response_ms: float = 2000.0
    ema_alpha: float = 0.2

    def __post_init__(self) -> None:
        _positive("health.window_seconds", self.window_seconds)
        _fraction("health.degraded_error_rate", self.degraded_error_rate)
        _fraction("health.unhealthy_error_rate", self.unhealthy_error_rate)
        check(
            self.degraded_error_rate <= self.unhealthy_error_rate,
            "health.degraded_error_rate",
            f"be <= unhealthy_error_rate ({self.unhealthy_error_rate})",
            self.degraded_error_rate,
        )
        check(
            isinstance(self.minimum_volume, int) and self.minimum_volume >= 1,
            "health.minimum_volume",
            "be a whole number >= 1",
            self.minimum_volume,
        )
        check(
            isinstance(self.degraded_consecutive_failures, int)
            and self.degraded_consecutive_failures >= 1,
            "health.degraded_consecutive_failures",
            "be a whole number >= 1",
            self.degraded_consecutive_failures,
        )
        check(
            isinstance(self.unhealthy_consecutive_failures, int)
            and self.unhealthy_consecutive_failures >= self.degraded_consecutive_failures,
            "health.unhealthy_consecutive_failures",
            f"be a whole number >= degraded_consecutive_failures "
            f"({self.degraded_consecutive_failures})",
            self.unhealthy_consecutive_failures,
        )
        _positive("health.slow_response_ms", self.slow_response_ms)
        _fraction("health.ema_alpha", self.ema_alpha)


@dataclass(frozen=True)
class AutoreplyRule:
    """Reply ``reply`` to a message whose text contains ``contains`` (case-insensitive)."""

    contains: str
    reply: str


@dataclass(frozen=True)
class BotConfig:
    """One tenant bot: ``[[bots]]``."""

    user_id: int
    token: BotToken
    handler: str = "echo"
    autoreply: tuple[AutoreplyRule, ...] = ()
    # Reply when no autoreply rule matches; None sends nothing.
    autoreply_default: str | None = None
    # Per-tenant override of limits.bot_rps.
    rps: float | None = None
    key: str = "bots[?]"

    def __post_init__(self) -> None:
        check(
            isinstance(self.user_id, int)
            and not isinstance(self.user_id, bool)
            and self.user_id > 0,
            f"{self.key}.user_id",
            "be a whole number > 0",
            self.user_id,
        )
        check(
            bool(self.handler) and (self.handler in ("echo", "autoreply") or ":" in self.handler),
            f"{self.key}.handler",
            "be 'echo', 'autoreply' or 'package.module:function'",
            self.handler,
        )
        if self.rps is not None:
            _positive(f"{self.key}.rps", self.rps)
