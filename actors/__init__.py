"""Actors: tenant bots, their resilience state, and the metrics actor.

Other packages import from here only.
"""

from actors.bot import BotActor, BotStatistics, HealthSample
from actors.botapi import (
    BOT_CONNECTIONS,
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
from actors.bucket import TokenBucketCore
from actors.chat_migrations import ChatMigrations, migration_announced
from actors.config import (
    DEFAULT_ALLOWED_UPDATES,
    UPDATE_TYPES,
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
from actors.context import reply_target
from actors.delivery import DeliveryFailed
from actors.errors import (
    BotExists,
    FleetError,
    TelegramUnreachable,
    TokenInUse,
    TokenRejected,
    UnknownBot,
    find_exception,
)
from actors.events import (
    BotEvent,
    BreakerChanged,
    EventSink,
    EventSinkStatistics,
    LifecycleEvent,
    StatusChanged,
)
from actors.fleet_health import FleetHealth, FleetSummary, HealthPull
from actors.handlers import HandlerContext, HandlerError, load_handler
from actors.health import BotStatus, HealthStatistics, HealthTracker, health_row
from actors.ids import MAX_USER_ID, USER_ID_RULE, UserId, user_id_problem
from actors.lanes import ChatLanes, LaneStatistics, chat_key, update_chat_id, update_payload
from actors.lifecycle import ActorState, LifecycleError
from actors.limits import (
    ChatLimiters,
    FloodGate,
    GlobalLimiterStatistics,
    GlobalRateLimiter,
    TokenBucket,
)
from actors.metrics import MetricsActor, MetricsStatistics, Subscription
from actors.pipeline import PipelineStatistics, RequestPipeline
from actors.retry import (
    Backoff,
    BackoffSchedule,
    ExponentialBackoff,
    Jitter,
    ProportionalJitter,
    RetryCounters,
    RetryPolicy,
    RetryStatistics,
)
from actors.retry import combine as combine_retry_statistics
from actors.secrets import BotToken, RedactingFilter, redact
from actors.services import FleetServices
from actors.validation import (
    Flag,
    Fraction,
    NonNegative,
    Number,
    Positive,
    Problem,
    WholeNumber,
    describe_problems,
    format_loc,
    rule_error,
    text_problems,
)

__all__ = [
    "BOT_CONNECTIONS",
    "DEFAULT_ALLOWED_UPDATES",
    "MAX_USER_ID",
    "UPDATE_TYPES",
    "USER_ID_RULE",
    "ActorState",
    "AutoreplyRule",
    "Backoff",
    "BackoffKind",
    "BackoffSchedule",
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
    "ChatMigrations",
    "CircuitBreaker",
    "CircuitOpenError",
    "DeliveryFailed",
    "ErrorCategory",
    "EventSink",
    "EventSinkStatistics",
    "ExponentialBackoff",
    "Flag",
    "FleetError",
    "FleetHealth",
    "FleetServices",
    "FleetSummary",
    "FloodGate",
    "Fraction",
    "GlobalLimiterStatistics",
    "GlobalRateLimiter",
    "HandlerContext",
    "HandlerError",
    "HealthConfig",
    "HealthPull",
    "HealthSample",
    "HealthStatistics",
    "HealthTracker",
    "Jitter",
    "JitterKind",
    "LaneStatistics",
    "LifecycleError",
    "LifecycleEvent",
    "LimitsConfig",
    "MetricsActor",
    "MetricsStatistics",
    "NonNegative",
    "Number",
    "PipelineStatistics",
    "Positive",
    "Problem",
    "ProportionalJitter",
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
    "TokenBucketCore",
    "TokenInUse",
    "TokenRejected",
    "TransportError",
    "UnknownBot",
    "UserId",
    "WholeNumber",
    "chat_key",
    "combine_retry_statistics",
    "describe_problems",
    "find_exception",
    "format_loc",
    "health_row",
    "load_handler",
    "make_http_client",
    "migration_announced",
    "redact",
    "reply_target",
    "rule_error",
    "shared_ssl_context",
    "text_problems",
    "update_chat_id",
    "update_payload",
    "user_id_problem",
]
