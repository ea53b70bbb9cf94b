"""The supervision tree: configuration, the bot supervisor, the fleet and the daemon.

``supervisor.daemon`` and ``supervisor.cli`` are imported on their own (they depend on
``admin``, which depends on this package's fleet).
"""

from supervisor.bot_supervisor import (
    BotSupervisor,
    Child,
    ChildState,
    ChildStatistics,
    RestartType,
    SupervisorEvent,
    SupervisorStatistics,
    find_exception,
)
from supervisor.fleet import (
    BotExists,
    Fleet,
    FleetError,
    TelegramUnreachable,
    TokenRejected,
    UnknownBot,
    bot_config,
)

# isort: split
# Last: the config imports admin (for AdminConfig), and admin imports the names above from
# this package (a cycle until admin depends on Protocols instead).
from supervisor.config import Config, SupervisorConfig
from supervisor.loading import ConfigError, load_config, parse_config

__all__ = [
    "BotExists",
    "BotSupervisor",
    "Child",
    "ChildState",
    "ChildStatistics",
    "Config",
    "ConfigError",
    "Fleet",
    "FleetError",
    "RestartType",
    "SupervisorConfig",
    "SupervisorEvent",
    "SupervisorStatistics",
    "TelegramUnreachable",
    "TokenRejected",
    "UnknownBot",
    "bot_config",
    "find_exception",
    "load_config",
    "parse_config",
]
