"""The admin HTTP API: Starlette served by Hypercorn on Trio."""

from admin.app import AdminContext, create_app
from admin.errors import ApiError
from admin.events import EventStreams, EventStreamStatistics
from admin.openapi import openapi_spec
from admin.ratelimit import ClientBuckets, IpRateLimit, RateLimitStatistics, client_address
from admin.server import AdminListenError, AdminServer, serve_app

__all__ = [
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
    "openapi_spec",
    "serve_app",
]
