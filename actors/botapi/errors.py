"""Errors of Bot API calls, each with the category that decides retry, breaker and health.

Exception tree::

    BotApiError                 every failed Bot API call; has ``category``
    ├── TelegramError           the server answered ``{"ok": false, ...}``
    ├── TransportError          no usable answer: connect error, timeout, dropped connection;
    │                           ``request_sent`` says whether the request may have reached
    │                           the server
    ├── MalformedResponseError  the server answered HTTP 2xx with a body that is not a Bot API
    │                           response (a proxy's page, truncated JSON); UNKNOWN category
    └── CircuitOpenError        the bot's breaker refused the call before it was made

An HTTP error status whose body is not Bot API JSON (a gateway's ``502 Bad Gateway`` page) is a
:class:`TelegramError` whose ``error_code`` is the HTTP status, so it is categorized like one.

Categories follow DESIGN.md's table:

========================  ====================================  ==============  ===========
category                  examples                              retried         breaker
========================  ====================================  ==============  ===========
RATE_LIMIT                429 with retry_after                  yes, exactly    no failure
TRANSIENT_NETWORK         connect error, timeout, 5xx, 409      yes, backoff    failure
PERMANENT                 401; 404 of getMe/getUpdates          no, suspends    failure
CHAT                      400 for one request, 403 blocked,     no              no failure
                          404 of any other method
UNKNOWN                   anything else                         yes, cautious   failure
========================  ====================================  ==============  ===========

Telegram answers 404 for an unknown method or object as well as for a bad token, so a 404 is
the token's only where nothing else can be unknown: on ``getMe`` and ``getUpdates``
(:data:`TOKEN_METHODS`). Even there it is a suspicion, which the pipeline confirms with
``getMe`` before suspending the bot.
"""

from __future__ import annotations

import enum
from typing import Any

from actors.secrets import redact

__all__ = [
    "TOKEN_METHODS",
    "BotApiError",
    "CircuitOpenError",
    "ErrorCategory",
    "MalformedResponseError",
    "TelegramError",
    "TransportError",
    "categorize",
]

# The methods on which a 404 can only mean that the token is unknown.
TOKEN_METHODS = frozenset({"getMe", "getUpdates"})


class ErrorCategory(enum.Enum):
    RATE_LIMIT = "rate_limit"  # 429: wait exactly retry_after, not a bot failure
    TRANSIENT_NETWORK = "transient_network"  # may succeed if tried again shortly
    PERMANENT = "permanent"  # the token is bad or revoked: suspend the bot
    CHAT = "chat"  # this one request or chat is wrong; the bot is fine
    UNKNOWN = "unknown"  # unclassified: retried cautiously, counted as failure

    @property
    def is_breaker_failure(self) -> bool:
        return self not in (ErrorCategory.RATE_LIMIT, ErrorCategory.CHAT)

    @property
    def is_retryable(self) -> bool:
        return self in (
            ErrorCategory.RATE_LIMIT,
            ErrorCategory.TRANSIENT_NETWORK,
            ErrorCategory.UNKNOWN,
        )


def categorize(error_code: int, method: str | None = None) -> ErrorCategory:
    """The category of a Bot API ``error_code`` answered to ``method`` (DESIGN.md's table).

    A 404 is PERMANENT (a suspected bad token) on :data:`TOKEN_METHODS` or when the method is
    not known, and the request's own error (CHAT) on any other method.
    """
    if error_code == 429:
        return ErrorCategory.RATE_LIMIT
    if error_code == 401:
        return ErrorCategory.PERMANENT
    if error_code == 404:
        if method is None or method in TOKEN_METHODS:
            return ErrorCategory.PERMANENT
        return ErrorCategory.CHAT
    if error_code in (400, 403):
        return ErrorCategory.CHAT
    if error_code == 409 or 500 <= error_code <= 599:
        return ErrorCategory.TRANSIENT_NETWORK
    return ErrorCategory.UNKNOWN


class BotApiError(Exception):
    """A Bot API call failed. ``str(error)`` never contains a token."""

    category: ErrorCategory = ErrorCategory.UNKNOWN

    def __init__(self, message: str, *, method: str, category: ErrorCategory) -> None:
        super().__init__(redact(message))
        self.method = method
        self.category = category

    @property
    def message(self) -> str:
        return str(self.args[0])


class TelegramError(BotApiError):
    """The Bot API answered ``ok: false``."""

    def __init__(
        self,
        *,
        method: str,
        error_code: int,
        description: str,
        retry_after: float | None = None,
        migrate_to_chat_id: int | None = None,
        category: ErrorCategory | None = None,
    ) -> None:
        super().__init__(
            f"{method} failed: {error_code} {description}",
            method=method,
            category=categorize(error_code, method) if category is None else category,
        )
        self.error_code = error_code
        self.description = redact(description)
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    @classmethod
    def from_response(cls, method: str, body: dict[str, Any]) -> TelegramError:
        parameters = body.get("parameters") or {}
        retry_after = parameters.get("retry_after")
        migrate = parameters.get("migrate_to_chat_id")
        return cls(
            method=method,
            error_code=int(body.get("error_code") or 0),
            description=str(body.get("description") or "no description"),
            retry_after=float(retry_after) if retry_after is not None else None,
            migrate_to_chat_id=int(migrate) if migrate is not None else None,
        )

    def recategorized(self, category: ErrorCategory) -> TelegramError:
        """The same answer under another category (a suspected bad token that getMe
        cleared is not PERMANENT)."""
        return TelegramError(
            method=self.method,
            error_code=self.error_code,
            description=self.description,
            retry_after=self.retry_after,
            migrate_to_chat_id=self.migrate_to_chat_id,
            category=category,
        )


class TransportError(BotApiError):
    """No usable answer from the server.

    ``request_sent`` is False when the request surely never reached the server (a connect
    error): such a call is always safe to retry. When it is True, a non-idempotent call
    (sendMessage) may have taken effect, and retrying it could send a message twice.
    """

    def __init__(self, message: str, *, method: str, request_sent: bool) -> None:
        super().__init__(message, method=method, category=ErrorCategory.TRANSIENT_NETWORK)
        self.request_sent = request_sent


class MalformedResponseError(BotApiError):
    """The server answered, but not in the Bot API's shape: the call's effect is unknown."""

    def __init__(self, message: str, *, method: str, status_code: int) -> None:
        super().__init__(message, method=method, category=ErrorCategory.UNKNOWN)
        self.status_code = status_code


class CircuitOpenError(BotApiError):
    """The bot's circuit breaker is OPEN: the call was refused without being made."""

    def __init__(self, *, method: str, retry_at: float | None) -> None:
        super().__init__(
            f"{method} not attempted: the bot's circuit breaker is open",
            method=method,
            category=ErrorCategory.TRANSIENT_NETWORK,
        )
        self.retry_at = retry_at
