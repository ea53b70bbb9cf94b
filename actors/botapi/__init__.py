"""The Telegram Bot API: a client and its error categories.

Other packages import from here only:

- :class:`BotApiClient`, :func:`make_http_client`, :func:`shared_ssl_context`: calling the API;
  :class:`HttpClient`: the POST-only HTTP client below it (no ``httpx.AsyncClient``);
  :class:`FleetHttpPool`: the fleet's connections, small shared pools, a bounded share per bot.
- :class:`BotApiError` and its subclasses, :class:`ErrorCategory`: what a failed call means.
- :data:`BOT_API_METHODS`, :func:`method_label`: the method names, a bounded metric label.

The simulated server is :mod:`actors.simulator`, which production code never imports.
"""

from actors.botapi.client import (
    BOT_CONNECTIONS,
    KEEPALIVE_EXPIRY,
    BotApiClient,
    ClientStatistics,
    make_http_client,
    shared_ssl_context,
)
from actors.botapi.errors import (
    BotApiError,
    CircuitOpenError,
    ErrorCategory,
    MalformedResponseError,
    TelegramError,
    TransportError,
    categorize,
)
from actors.botapi.http import HttpClient
from actors.botapi.methods import BOT_API_METHODS, OTHER_METHOD, method_label
from actors.botapi.pool import (
    LEASES_PER_CLIENT,
    SPARE_CLIENTS,
    BotHttp,
    FleetHttpPool,
    HttpClientFactory,
    HttpPoolStatistics,
    HttpPoster,
)

__all__ = [
    "BOT_API_METHODS",
    "BOT_CONNECTIONS",
    "KEEPALIVE_EXPIRY",
    "LEASES_PER_CLIENT",
    "OTHER_METHOD",
    "SPARE_CLIENTS",
    "BotApiClient",
    "BotApiError",
    "BotHttp",
    "CircuitOpenError",
    "ClientStatistics",
    "ErrorCategory",
    "FleetHttpPool",
    "HttpClient",
    "HttpClientFactory",
    "HttpPoolStatistics",
    "HttpPoster",
    "MalformedResponseError",
    "TelegramError",
    "TransportError",
    "categorize",
    "make_http_client",
    "method_label",
    "shared_ssl_context",
]
