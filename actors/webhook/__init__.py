"""Webhooks: Telegram pushes each update to botvisor, which stores it before it answers 200.

- :mod:`actors.webhook.secret`: each bot's ``secret_token``, derived from a master secret;
- :mod:`actors.webhook.ports`: what the receiver needs of the fleet.
"""

from actors.webhook.ports import WebhookBots
from actors.webhook.secret import (
    SECRET_TOKEN_PREFIX,
    derive_secret_token,
    secret_fingerprint,
    secret_matches,
)

__all__ = [
    "SECRET_TOKEN_PREFIX",
    "WebhookBots",
    "derive_secret_token",
    "secret_fingerprint",
    "secret_matches",
]
