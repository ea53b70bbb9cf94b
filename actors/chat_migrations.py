"""Chat migration: a basic group upgraded to a supergroup gets a new chat id for good.

Telegram refuses a send to the old id with 400 and ``parameters.migrate_to_chat_id``, and
announces the upgrade with service messages (``migrate_to_chat_id`` in the old group,
``migrate_from_chat_id`` in the new supergroup). One bot's :class:`ChatMigrations` remembers
each old id's new one, so a reply to the old id goes straight to the new chat; the delivery
stores every mapping it learns, and the actor loads them at start, like its offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.lanes import update_payload

__all__ = ["ChatMigrations", "migration_announced"]

# A supergroup never migrates again, but a stored chain (or a loop written by hand into the
# file) must not send a reply round in circles.
_MAX_HOPS = 4


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def migration_announced(update: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(old chat, new chat)`` if ``update`` is a service message announcing an upgrade
    (``migrate_to_chat_id`` from the old group, ``migrate_from_chat_id`` in the new one)."""
    found = update_payload(update)
    if found is None:
        return None
    _kind, message = found
    chat = message.get("chat")
    chat_id = _whole(chat.get("id")) if isinstance(chat, Mapping) else None
    if chat_id is None:
        return None
    to_id = _whole(message.get("migrate_to_chat_id"))
    if to_id is not None and to_id != chat_id:
        return chat_id, to_id
    from_id = _whole(message.get("migrate_from_chat_id"))
    if from_id is not None and from_id != chat_id:
        return from_id, chat_id
    return None


class ChatMigrations:
    """One bot's known chat migrations (old chat id -> new chat id)."""

    def __init__(self) -> None:
        self._new: dict[int, int] = {}
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """Whether the stored mappings were loaded (the first start loads them)."""
        return self._loaded

    def restore(self, stored: Mapping[int, int]) -> None:
        """Seed from the stored mappings; what was learned meanwhile is kept."""
        if stored:
            self._new = {**stored, **self._new}
        self._loaded = True

    def record(self, old_chat_id: int, new_chat_id: int) -> bool:
        """Remember a migration; return whether it was news."""
        if old_chat_id == new_chat_id or self._new.get(old_chat_id) == new_chat_id:
            return False
        self._new[old_chat_id] = new_chat_id
        return True

    def resolve(self, chat_id: Any) -> Any:
        """The chat ``chat_id`` is now (itself if it never migrated; any non-id unchanged)."""
        for _ in range(_MAX_HOPS):
            new = self._new.get(chat_id) if _whole(chat_id) is not None else None
            if new is None:
                break
            chat_id = new
        return chat_id

    def __len__(self) -> int:
        return len(self._new)
