"""The Telegram Bot API: a client, its error categories, and a simulated server.

Other packages import from here only:

- :class:`BotApiClient`, :func:`make_http_client`, :func:`shared_ssl_context`: calling the API.
- :class:`BotApiError` and its subclasses, :class:`ErrorCategory`: what a failed call means.
- :class:`SimulatedBotApi` with :class:`SimulatedTransport` (in process) or
  :func:`create_sim_app` / :func:`serve_sim` (real HTTP): a Telegram stand-in on Trio time.
"""

from actors.botapi.client import (
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
from actors.botapi.sim_app import create_sim_app, serve_sim
from actors.botapi.sim_faults import (
    FaultKind,
    FaultProfile,
    FloodLimits,
    OutageMode,
    SimulatedFault,
)
from actors.botapi.sim_report import BotReport, SimReport, tagged_text
from actors.botapi.sim_transport import SimulatedTransport
from actors.botapi.simulator import (
    CallRecord,
    SentMessage,
    SimBot,
    SimStatistics,
    SimulatedBotApi,
)

__all__ = [
    "BotApiClient",
    "BotApiError",
    "BotReport",
    "CallRecord",
    "CircuitOpenError",
    "ClientStatistics",
    "ErrorCategory",
    "FaultKind",
    "FaultProfile",
    "FloodLimits",
    "MalformedResponseError",
    "OutageMode",
    "SentMessage",
    "SimBot",
    "SimReport",
    "SimStatistics",
    "SimulatedBotApi",
    "SimulatedFault",
    "SimulatedTransport",
    "TelegramError",
    "TransportError",
    "categorize",
    "create_sim_app",
    "make_http_client",
    "serve_sim",
    "shared_ssl_context",
    "tagged_text",
]
