"""Errors of bot management, and how to find one inside exception groups.

The tree (what a request to add, remove, suspend or resume a bot can fail with)::

    FleetError               the request cannot be carried out; the message says why
    ├── UnknownBot           no bot with that user_id is registered (also a KeyError)
    ├── BotExists            the user_id is already registered
    │   └── TokenInUse       the bot (its token) is already registered for another user_id
    ├── OwnershipError       the config file and the admin API disagree about who owns a bot
    │   ├── OwnedByConfig    the API may not remove a bot the config file declares
    │   ├── OwnershipConflict  a [[bots]] user_id belongs to a bot added through the API
    │   └── ConfigBotsVanished  the file declares no bots: all of its stored bots would go
    ├── HandlerNotAllowed    the handler's module is not allowed, or cannot be imported
    ├── TokenRejected        Telegram, or the token's own format, refuses the token
    ├── TelegramUnreachable  the token could not be checked: the Bot API did not answer
    └── RegistryUnavailable  a shard's registry (Postgres) did not answer a write: nothing changed

They are declared here, below both the fleet (``supervisor``) that raises them and the admin
API that answers them, so neither layer imports the other.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "BotExists",
    "ConfigBotsVanished",
    "FleetError",
    "HandlerNotAllowed",
    "NotOwned",
    "OwnedByConfig",
    "OwnershipConflict",
    "OwnershipError",
    "RegistryUnavailable",
    "TelegramUnreachable",
    "TokenInUse",
    "TokenRejected",
    "UnknownBot",
    "find_exception",
]


class FleetError(Exception):
    """A bot-management request that cannot be carried out; the message says why."""


class UnknownBot(FleetError, KeyError):
    def __init__(self, user_id: int) -> None:
        super().__init__(f"no bot with user_id {user_id} is registered")
        self.user_id = user_id

    def __str__(self) -> str:
        return str(self.args[0])


class BotExists(FleetError):
    """The user_id is already registered."""


class TokenInUse(BotExists):
    """The bot of the token is already registered for another tenant: one token, one tenant
    (two pollers of one bot would split its updates and end each other's polls with 409)."""

    def __init__(self, message: str, *, owner: int) -> None:
        super().__init__(message)
        self.owner = owner


class OwnershipError(FleetError):
    """The config file and the admin API disagree about who owns a bot: a bot declared in the
    file is the file's (the API may suspend and resume it, not remove it); one added through
    the API is the API's."""


class OwnedByConfig(OwnershipError):
    """The API was asked to remove a bot the config file declares."""


class OwnershipConflict(OwnershipError):
    """A ``[[bots]]`` entry has the user_id of a bot added through the admin API: nothing is
    stored or started; the operator decides which one keeps the user_id."""


class ConfigBotsVanished(OwnershipError):
    """The config file declares no ``[[bots]]`` while bots registered from it are stored:
    unregistering every one of them takes an explicit flag."""


class HandlerNotAllowed(FleetError):
    """A ``module:function`` handler whose module ``[handlers] allowed_modules`` does not
    allow (refused before anything is imported, stored or asked of Telegram), or, at start,
    one that cannot be imported."""


class TokenRejected(FleetError):
    """Telegram (or the token's own format) says the token cannot be used."""


class TelegramUnreachable(FleetError):
    """The token could not be checked because the Bot API did not answer."""


class RegistryUnavailable(FleetError):
    """The fleet's registry (a shard's Postgres) could not be read or written in time; a
    write that meets it changed nothing (the registry is written first)."""


class NotOwned(FleetError):
    """The bot belongs to another shard (``owner_shard``): this one neither runs it nor
    stores anything of it. The admin API answers 421 Misdirected Request naming the owner."""

    def __init__(self, user_id: int, owner_shard: int, shard: str) -> None:
        super().__init__(
            f"user_id {user_id} belongs to shard {owner_shard}, not to this shard ({shard}): "
            f"send the request to shard {owner_shard}"
        )
        self.user_id = user_id
        self.owner_shard = owner_shard


E = TypeVar("E", bound=BaseException)


def find_exception(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` exception in ``exc``, looking through (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_exception(inner, kind)
            if found is not None:
                return found
    return None
