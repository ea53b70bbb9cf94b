"""Webhooks: Telegram pushes each update to botvisor, which stores it before it answers 200.

- :mod:`actors.webhook.secret`: each bot's ``secret_token``, derived from a master secret;
- :mod:`actors.webhook.certificate`: the self-signed certificate setWebhook uploads;
- :mod:`actors.webhook.ports`: what the receiver needs of the fleet;
- :mod:`actors.webhook.receiver`: the listener's ASGI app, which commits before its 200.
"""

from actors.webhook.certificate import WebhookCertificate
from actors.webhook.ports import WebhookBots
from actors.webhook.receiver import (
    COMMIT_BUCKETS,
    REJECTION_REASONS,
    SECRET_HEADER,
    ReceiverStatistics,
    WebhookReceiver,
)
from actors.webhook.secret import (
    SECRET_TOKEN_PREFIX,
    derive_secret_token,
    secret_fingerprint,
    secret_matches,
)

__all__ = [
    "COMMIT_BUCKETS",
    "REJECTION_REASONS",
    "SECRET_HEADER",
    "SECRET_TOKEN_PREFIX",
    "ReceiverStatistics",
    "WebhookBots",
    "WebhookCertificate",
    "WebhookReceiver",
    "derive_secret_token",
    "secret_fingerprint",
    "secret_matches",
]
