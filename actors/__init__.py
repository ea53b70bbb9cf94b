"""Actors: tenant bots, their resilience state, and the metrics actor.

Other packages import from here only.
"""

from actors.bot import BotActor, BotStatistics, HealthSample
from actors.botapi import (
    BotApiClient,
    BotApiError,
    BotReport,
    CircuitOpenError,
    ErrorCategory,
    FaultProfile,
    FloodLimits,
    OutageMode,
    SimReport,
    SimulatedBotApi,
    SimulatedTransport,
    TelegramError,
    TransportError,
    create_sim_app,
    make_http_client,
    serve_sim,
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
from actors.delivery import DeliveryFailed
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
from actors.ids import MAX_USER_ID, UserId, user_id_problem
from actors.lanes import ChatLanes, LaneStatistics, chat_key
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
from actors.retry import RetryCounters, RetryPolicy, RetryStatistics
from actors.retry import combine as combine_retry_statistics
from actors.secrets import BotToken, RedactingFilter, redact
from actors.services import FleetServices

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
    "BotReport",
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
    "FaultProfile",
    "FleetHealth",
    "FleetServices",
    "FleetSummary",
    "FloodGate",
    "FloodLimits",
    "GlobalLimiterStatistics",
    "GlobalRateLimiter",
    "HandlerContext",
    "HandlerError",
    "HealthConfig",
    "HealthPull",
    "HealthSample",
    "HealthStatistics",
    "HealthTracker",
    "JitterKind",
    "LaneStatistics",
    "LifecycleError",
    "LifecycleEvent",
    "LimitsConfig",
    "MetricsActor",
    "MetricsStatistics",
    "OutageMode",
    "PipelineStatistics",
    "RedactingFilter",
    "RequestPipeline",
    "RetryConfig",
    "RetryCounters",
    "RetryPolicy",
    "RetryPolicyConfig",
    "RetryStatistics",
    "SimReport",
    "SimulatedBotApi",
    "SimulatedTransport",
    "StatusChanged",
    "Subscription",
    "TelegramConfig",
    "TelegramError",
    "TokenBucket",
    "TransportError",
    "UserId",
    "chat_key",
    "combine_retry_statistics",
    "create_sim_app",
    "health_row",
    "load_handler",
    "make_http_client",
    "redact",
    "serve_sim",
    "shared_ssl_context",
    "user_id_problem",
]
