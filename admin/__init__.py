"""The admin HTTP API: Starlette served by Hypercorn on Trio."""

# First: supervisor's config imports AdminConfig from here while admin.app is still importing
# supervisor (a cycle until admin depends on Protocols instead).
from admin.config import AdminConfig, is_loopback, parse_rate_limit, split_listen

# isort: split
from admin.app import AdminContext, create_app
from admin.errors import ApiError
from admin.events import EventStreams, EventStreamStatistics
from admin.openapi import openapi_spec
from admin.ratelimit import ClientBuckets, IpRateLimit, RateLimitStatistics, client_address
from admin.server import AdminListenError, AdminServer, serve_app

__all__ = [
    "AdminConfig",
    "AdminContext",
    "AdminListenError",
    "AdminServer",
    "ApiError",
    "ClientBuckets",
    "EventStreamStatistics",
    "EventStreams",
    "IpRateLimit",
    "RateLimitStatistics",
    "client_address",
    "create_app",
    "is_loopback",
    "openapi_spec",
    "parse_rate_limit",
    "serve_app",
    "split_listen",
]
