"""The admin HTTP API: Starlette served by Hypercorn on Trio."""

from admin.app import AdminContext, create_app
from admin.config import AdminConfig, GatewayConfig, is_loopback, parse_rate_limit, split_listen
from admin.errors import ApiError
from admin.events import EventStreams, EventStreamStatistics
from admin.gateway import GatewayListenError, GatewayServer, create_gateway_app
from admin.openapi import openapi_spec
from admin.operations import Operation, Reply, operation
from admin.ratelimit import ClientBuckets, IpRateLimit, RateLimitStatistics, client_address
from admin.records import Record, record_response
from admin.requests import RequestModel, parse
from admin.server import (
    AdminListenError,
    AdminServer,
    HttpServer,
    ListenError,
    WebhookListenError,
    WebhookServer,
    serve_app,
)

__all__ = [
    "AdminConfig",
    "AdminContext",
    "AdminListenError",
    "AdminServer",
    "ApiError",
    "ClientBuckets",
    "EventStreamStatistics",
    "EventStreams",
    "GatewayConfig",
    "GatewayListenError",
    "GatewayServer",
    "HttpServer",
    "IpRateLimit",
    "ListenError",
    "Operation",
    "RateLimitStatistics",
    "Record",
    "Reply",
    "RequestModel",
    "WebhookListenError",
    "WebhookServer",
    "client_address",
    "create_app",
    "create_gateway_app",
    "is_loopback",
    "openapi_spec",
    "operation",
    "parse",
    "parse_rate_limit",
    "record_response",
    "serve_app",
    "split_listen",
]
