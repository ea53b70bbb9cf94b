"""The supervision tree: configuration, the bot supervisor, the fleet and the daemon.

``supervisor.daemon`` and ``supervisor.cli`` are the composition root: they build the
whole tree (storage, actors, the admin API, the supervisor) and are imported on their own.
"""

from supervisor.bot_supervisor import (
    BotSupervisor,
    Child,
    ChildState,
    ChildStatistics,
    RestartType,
    SupervisorEvent,
    SupervisorStatistics,
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
    Fleet,
    bot_config,
)

__all__ = [
    "AdminConfig",
    "BotSupervisor",
    "Child",
    "ChildState",
    "ChildStatistics",
    "Config",
    "ConfigError",
    "Fleet",
    "RestartType",
    "StorageConfig",
    "SupervisorConfig",
    "SupervisorEvent",
    "SupervisorStatistics",
    "bot_config",
    "is_loopback",
    "load_config",
    "parse_config",
]
