"""A simulated Telegram Bot API on Trio time, for the demo, tests and benchmarks.

Like ``trio.testing``, production code paths never import it: ``import actors`` does not load
it (nor Starlette and Hypercorn, which its real-HTTP server needs). Other packages import from
here only:

- :class:`SimulatedBotApi`: the server itself, bots, simulated users, faults and a report;
- :class:`SimulatedTransport` (in process, on a MockClock) or :func:`create_sim_app` /
  :func:`serve_sim` (real HTTP on 127.0.0.1): how a client reaches it;
- :class:`FaultProfile`, :class:`OutageMode`, :class:`FloodLimits`: what goes wrong;
- ``UPDATE_TYPES`` and ``DEFAULT_ALLOWED_UPDATES``: Bot API 9.x's update types and those a bot
  gets when it never chose.

It speaks real Telegram (see :mod:`actors.simulator.api` for the rules and the control
methods): every update type can be injected (``send_update``) and the simulated users write in
forum topics, edit and press buttons; replies must land in the right topic, business
connection or direct-messages topic; a basic group can be upgraded mid-conversation
(``migrate_group``); ``allowed_updates`` is kept per bot as Telegram keeps it. Webhooks are
pushed as Telegram pushes them (:mod:`actors.simulator.webhooks`): start
``await nursery.start(api.push_webhooks, httpx_client)`` once and bots' setWebhook URLs get
their updates, with per-chat order, retries and getWebhookInfo's errors.
"""

from actors.simulator.api import SIM_EPOCH, SimStatistics, SimulatedBotApi
from actors.simulator.app import create_sim_app, serve_sim
from actors.simulator.bots import (
    DEFAULT_ALLOWED_UPDATES,
    UPDATE_TYPES,
    CallRecord,
    SentMessage,
    SimBot,
)
from actors.simulator.faults import (
    FaultKind,
    FaultProfile,
    FloodLimits,
    OutageMode,
    SimulatedFault,
)
from actors.simulator.report import BotReport, SimReport, edited_text, tagged_text
from actors.simulator.transport import SimulatedTransport
from actors.simulator.webhooks import WebhookStatistics

__all__ = [
    "DEFAULT_ALLOWED_UPDATES",
    "SIM_EPOCH",
    "UPDATE_TYPES",
    "BotReport",
    "CallRecord",
    "FaultKind",
    "FaultProfile",
    "FloodLimits",
    "OutageMode",
    "SentMessage",
    "SimBot",
    "SimReport",
    "SimStatistics",
    "SimulatedBotApi",
    "SimulatedFault",
    "SimulatedTransport",
    "WebhookStatistics",
    "create_sim_app",
    "edited_text",
    "serve_sim",
    "tagged_text",
]
