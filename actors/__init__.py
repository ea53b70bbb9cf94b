"""Actors: tenant bots, their resilience state, and the metrics actor.

Other packages import from here only.
"""

from actors.bot import ActorState, BotActor, BotStatistics, DeliveryFailed, FleetServices
from actors.botapi import (
    BotApiClient,
    BotApiError,
    CircuitOpenError,
    ErrorCategory,
    TelegramError,
    TransportError,
    make_http_client,
    shared_ssl_context,
)
from actors.breaker import BreakerState, BreakerStatistics, BreakerTransition, CircuitBreaker
from actors.config import (
    AutoreplyRule,
    BackoffKind,
    BotConfig,
    BreakerConfig,
    HealthConfig,
    JitterKind,
    LimitsConfig,
    RetryConfig,
    RetryPolicyConfig,
    TelegramConfig,
)
from actors.errors import (
    BotExists,
    FleetError,
    TelegramUnreachable,
    TokenRejected,
    UnknownBot,
    find_exception,
)
from actors.events import (
    BotEvent,
    BreakerChanged,
    EventSink,
    EventSinkStatistics,
    HealthReport,
    LifecycleEvent,
    StatusChanged,
)
from actors.handlers import HandlerContext, HandlerError, load_handler
from actors.health import BotStatus, HealthStatistics, HealthTracker, health_row
from actors.ids import MAX_USER_ID, UserId, user_id_problem
from actors.lanes import ChatLanes, LaneStatistics, chat_key
from actors.limits import (
    ChatLimiters,
    FloodGate,
    GlobalLimiterStatistics,
    GlobalRateLimiter,
    TokenBucket,
)
from actors.metrics import FleetSummary, MetricsActor, MetricsStatistics, Subscription
from actors.pipeline import PipelineStatistics, RequestPipeline
from actors.retry import RetryCounters, RetryPolicy, RetryStatistics
from actors.retry import combine as combine_retry_statistics
from actors.secrets import BotToken, RedactingFilter, redact

__all__ = [
    "MAX_USER_ID",
    "ActorState",
    "AutoreplyRule",
    "BackoffKind",
    "BotActor",
    "BotApiClient",
    "BotApiError",
    "BotConfig",
    "BotEvent",
    "BotExists",
    "BotStatistics",
    "BotStatus",
    "BotToken",
    "BreakerChanged",
    "BreakerConfig",
    "BreakerState",
    "BreakerStatistics",
    "BreakerTransition",
    "ChatLanes",
    "ChatLimiters",
    "CircuitBreaker",
    "CircuitOpenError",
    "DeliveryFailed",
    "ErrorCategory",
    "EventSink",
    "EventSinkStatistics",
    "FleetError",
    "FleetServices",
    "FleetSummary",
    "FloodGate",
    "GlobalLimiterStatistics",
    "GlobalRateLimiter",
    "HandlerContext",
    "HandlerError",
    "HealthConfig",
    "HealthReport",
    "HealthStatistics",
    "HealthTracker",
    "JitterKind",
    "LaneStatistics",
    "LifecycleEvent",
    "LimitsConfig",
    "MetricsActor",
    "MetricsStatistics",
    "PipelineStatistics",
    "RedactingFilter",
    "RequestPipeline",
    "RetryConfig",
    "RetryCounters",
    "RetryPolicy",
    "RetryPolicyConfig",
    "RetryStatistics",
    "StatusChanged",
    "Subscription",
    "TelegramConfig",
    "TelegramError",
    "TelegramUnreachable",
    "TokenBucket",
    "TokenRejected",
    "TransportError",
    "UnknownBot",
    "UserId",
    "chat_key",
    "combine_retry_statistics",
    "find_exception",
    "health_row",
    "load_handler",
    "make_http_client",
    "redact",
    "shared_ssl_context",
    "user_id_problem",
]
