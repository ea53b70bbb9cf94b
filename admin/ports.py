"""What the admin API needs of the fleet and its supervisor, as Protocols.

The admin layer sits below the supervisor: it names the few operations it calls here, and the
daemon hands in the real ``Fleet`` and ``BotSupervisor``, which satisfy them structurally.
Tests may hand in anything else that does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from actors import BotActor, BotConfig, BotMode

__all__ = ["ChildView", "FleetControl", "StateView", "SupervisionView", "SupervisorTotals"]


class StateView(Protocol):
    """A lifecycle state as the API shows it (an enum member)."""

    @property
    def value(self) -> str: ...


class ChildView(Protocol):
    """One supervised bot's record."""

    @property
    def restarts(self) -> int: ...


class SupervisorTotals(Protocol):
    """The supervisor's counters over every child."""

    @property
    def running(self) -> int: ...
    @property
    def restarting(self) -> int: ...
    @property
    def suspended(self) -> int: ...
    @property
    def total_restarts(self) -> int: ...
    @property
    def total_crashes(self) -> int: ...


class SupervisionView(Protocol):
    """Read-only view of the bot supervisor."""

    def child_statistics(self, child_id: int) -> ChildView | None: ...
    def statistics(self) -> SupervisorTotals: ...


class FleetControl(Protocol):
    """The registry of tenant bots: queries and bot management.

    Management methods raise :class:`actors.FleetError` subclasses, which the routes map to
    HTTP answers; :class:`actors.NotOwned` (a bot of another shard, from ``get``, ``add`` and
    ``check_owned``) is a 421 naming the owner wherever it is raised.
    """

    def get(self, user_id: int) -> BotActor: ...
    def check_owned(self, user_id: int) -> None: ...
    def actors(self) -> Sequence[BotActor]: ...
    def source(self, user_id: int) -> str: ...
    def child_state(self, user_id: int) -> StateView | None: ...
    async def add(self, bot: BotConfig, *, source: str = "api") -> BotActor: ...
    async def remove(self, user_id: int) -> None: ...
    async def suspend(self, user_id: int, reason: str = ...) -> None: ...
    async def resume(self, user_id: int) -> None: ...
    async def set_mode(self, user_id: int, mode: BotMode) -> BotActor: ...
    def dead_letters_redriven(
        self, user_id: int, updates: Sequence[Mapping[str, Any]], received_at: float
    ) -> None: ...
