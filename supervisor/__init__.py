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
from supervisor.config import (
    AdminConfig,
    Config,
    ConfigError,
    StorageConfig,
    SupervisorConfig,
    is_loopback,
    load_config,
    parse_config,
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

__all__ = [
    "AdminConfig",
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
    "StorageConfig",
    "SupervisorConfig",
    "SupervisorEvent",
    "SupervisorStatistics",
    "TelegramUnreachable",
    "TokenRejected",
    "UnknownBot",
    "bot_config",
    "find_exception",
    "is_loopback",
    "load_config",
    "parse_config",
]
