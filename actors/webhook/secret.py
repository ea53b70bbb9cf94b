"""Each webhook bot's ``secret_token``, derived from one master secret: nothing secret is stored.

Telegram sends a bot's ``secret_token`` (set with ``setWebhook``) in the header
``X-Telegram-Bot-Api-Secret-Token`` of every delivery. botvisor derives it as
HMAC-SHA256(master, bot id), so the database holds no webhook secret, a receiver checks a
delivery without a lookup, and rotating the master secret changes every bot's token (their
registrations no longer match, so each is registered again).

The token has a shape of its own, ``bvw_`` and 43 base64url characters (47 in all, inside
Telegram's 1–256 of ``A-Za-z0-9_-``), so :func:`actors.redact` can recognise one anywhere
without a registry of secrets. What is stored to tell whether a registration is current is a
fingerprint: a hash of the token that cannot be turned back into it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = [
    "SECRET_TOKEN_PREFIX",
    "derive_secret_token",
    "secret_fingerprint",
    "secret_matches",
]

SECRET_TOKEN_PREFIX = "bvw_"
_CONTEXT = b"botvisor webhook secret v1:"


def derive_secret_token(master: str, bot_id: int) -> str:
    """The ``secret_token`` of the bot ``bot_id`` (the token's numeric part) under ``master``."""
    digest = hmac.new(
        master.encode("utf-8"), _CONTEXT + str(bot_id).encode("ascii"), hashlib.sha256
    ).digest()
    return SECRET_TOKEN_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def secret_fingerprint(secret_token: str) -> str:
    """What is stored of a registration's secret: 16 hex digits of its SHA-256."""
    return hashlib.sha256(secret_token.encode("ascii")).hexdigest()[:16]


def secret_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of a delivery's header with the bot's ``secret_token``."""
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode("ascii"), presented.encode("utf-8", "replace"))
