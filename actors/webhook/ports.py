"""What the webhook receiver needs of the fleet, as a Protocol (the fleet lives above actors)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Protocol

__all__ = ["WebhookBots"]


class WebhookBots(Protocol):
    """The registered bots, as the receiver sees them."""

    def webhook_secret(self, user_id: int) -> str | None:
        """The bot's ``secret_token`` (derived, see :mod:`actors.webhook.secret`), or None
        when no bot has this user_id (the receiver answers 404)."""
        ...

    def webhook_decoy_secret(self, user_id: int) -> str:
        """The ``secret_token`` the master secret would give a bot numbered ``user_id``: what
        a delivery to an unknown bot is checked against (401 on a mismatch, 404 only after),
        so the answers do not tell a caller without the secret which bots exist."""
        ...

    def webhook_stored(
        self,
        user_id: int,
        update: Mapping[str, Any],
        key: Hashable,
        received_at: float,
        kind: str,
    ) -> None:
        """A NEW update of the bot is committed to its inbox (``key``: its ``chat_key``,
        ``kind``: its update type as stored, for the fleet's counters): hand
        it to the bot — to its chat lane if it runs, else wake it (a dormant webhook bot has
        no task) or leave it in the inbox (a suspended bot handles it after resume). Never
        blocks: the receiver answers 200 right after."""
        ...

    def webhook_counted(self, user_id: int, accepted: bool) -> None:
        """One delivery to the bot ``user_id`` answered: 200 (``accepted``) or refused (a
        wrong secret, a bad body, a full or failed store). For its usage analytics."""
        ...
