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
from supervisor.config import Config, SupervisorConfig
from supervisor.fleet import (
    Fleet,
    bot_config,
)
from supervisor.loading import ConfigError, load_config, parse_config

__all__ = [
    "BotSupervisor",
    "Child",
    "ChildState",
    "ChildStatistics",
    "Config",
    "ConfigError",
    "Fleet",
    "RestartType",
    "SupervisorConfig",
    "SupervisorEvent",
    "SupervisorStatistics",
    "bot_config",
    "load_config",
    "parse_config",
]
