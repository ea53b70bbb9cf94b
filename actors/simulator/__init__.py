"""A simulated Telegram Bot API on Trio time, for the demo, tests and benchmarks.

Like ``trio.testing``, production code paths never import it: ``import actors`` does not load
it (nor Starlette and Hypercorn, which its real-HTTP server needs). Other packages import from
here only:

- :class:`SimulatedBotApi`: the server itself, bots, simulated users, faults and a report;
- :class:`SimulatedTransport` (in process, on a MockClock) or :func:`create_sim_app` /
  :func:`serve_sim` (real HTTP on 127.0.0.1): how a client reaches it;
- :class:`FaultProfile`, :class:`OutageMode`, :class:`FloodLimits`: what goes wrong.
"""

from actors.simulator.api import SIM_EPOCH, SimStatistics, SimulatedBotApi
from actors.simulator.app import create_sim_app, serve_sim
from actors.simulator.bots import CallRecord, SentMessage, SimBot
from actors.simulator.faults import (
    FaultKind,
    FaultProfile,
    FloodLimits,
    OutageMode,
    SimulatedFault,
)
from actors.simulator.report import BotReport, SimReport, tagged_text
from actors.simulator.transport import SimulatedTransport

__all__ = [
    "SIM_EPOCH",
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
    "create_sim_app",
    "serve_sim",
    "tagged_text",
]
