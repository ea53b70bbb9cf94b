"""Bot tokens as secrets: they never reach logs, errors, reprs, API responses or metrics.

A Telegram bot token looks like ``123456789:AAE...`` (a numeric bot id, a colon, and a
35-character secret). Everything that might print a token goes through :func:`redact`, and the
token itself travels as a :class:`BotToken`, whose ``str`` and ``repr`` show ``123456789:…``.

Redaction matches the token's SHAPE, not a list of the fleet's tokens: it needs no state (the
log filter works before any bot is loaded, and for tokens the fleet never knew, such as one
pasted into a wrong request), and a token never has to be copied into a registry of secrets.
Shapes caught, anywhere in a text:

- ``<id>:<secret>`` with the colon as is, URL-encoded (``%3A``, or ``%253A`` encoded twice) or
  JSON/JavaScript-escaped (``\\u003a``): what ``quote``, ``quote_plus``, ``json.dumps`` and
  URLs in error descriptions make of a token (the secret's alphabet is URL-safe base64, which
  none of them change);
- a webhook ``secret_token`` botvisor derived (``bvw_`` and 43 base64url characters, see
  :mod:`actors.webhook.secret`), replaced by ``bvw_…``;
- the secret alone: BotFather's secrets are ``AA`` and 33 base64url characters, so any such
  run of exactly 35 characters not inside a longer word is replaced by ``…``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from actors.text import valid_text

__all__ = ["SECRET_PATTERN", "TOKEN_PATTERN", "BotToken", "RedactingFilter", "redact"]

# The secret part is at least 20 characters of base64url; real ones are 35. Matching anywhere
# in a string (a URL path, an exception message) is what makes redaction reliable.
TOKEN_PATTERN = re.compile(
    r"(?<![0-9])([0-9]{3,20})(:|%3A|%253A|\\u003A)[A-Za-z0-9_-]{20,}", re.IGNORECASE
)
# A secret without its id: Telegram's are ``AA`` + 33 base64url characters (35 in all).
SECRET_PATTERN = re.compile(r"(?<![A-Za-z0-9_-])AA[A-Za-z0-9_-]{33}(?![A-Za-z0-9_-])")
# A webhook secret_token botvisor derived (actors.webhook.secret): ``bvw_`` and 43 base64url.
WEBHOOK_SECRET_PATTERN = re.compile(r"bvw_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
_FULL_TOKEN = re.compile(r"[0-9]{3,20}:[A-Za-z0-9_-]{20,}")


def redact(text: str) -> str:
    """Replace every bot token in ``text`` by its public id, ``123456:…``, and every bare
    secret by ``…`` (see the module docstring for the shapes).

    Everything that leaves the process passes here, so it also makes the text valid Unicode
    (lone surrogates become U+FFFD, see :mod:`actors.text`)."""
    text = TOKEN_PATTERN.sub(r"\1:…", valid_text(text))
    return WEBHOOK_SECRET_PATTERN.sub("bvw_…", SECRET_PATTERN.sub("…", text))


class BotToken:
    """A bot token that shows only its public bot id when printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not _FULL_TOKEN.fullmatch(value):
            raise ValueError(
                "a bot token must look like '<digits>:<at least 20 letters, digits, - or _>', "
                f"got {_describe(value)}"
            )
        self._value = value

    @property
    def bot_id(self) -> int:
        """The numeric id before the colon: public, the same as getMe's ``id``."""
        return int(self._value.split(":", 1)[0])

    @property
    def redacted(self) -> str:
        return f"{self.bot_id}:…"

    def reveal(self) -> str:
        """The secret itself: only for building a request URL."""
        return self._value

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"BotToken({self.redacted!r})"

    # As a pydantic field type: a BotToken, or the token's text (surrounding white space
    # stripped); it is shown (serialised) only as ``123456:…`` and never echoed in an error.
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._from_field,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda t: t.redacted),
        )

    @classmethod
    def _from_field(cls, value: object) -> BotToken:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "Input should be a valid string")
        return cls(value.strip())

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "writeOnly": True,
            "description": "the bot's token from @BotFather; never shown again",
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BotToken) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a BotToken is not picklable: it would copy the secret")


def _describe(value: str) -> str:
    """Say what is wrong with a bad token without echoing it."""
    if not value:
        return "an empty string"
    if ":" not in value:
        return f"a {len(value)}-character string with no ':'"
    head = value.split(":", 1)[0]
    shown = head if head.isdigit() and len(head) <= 20 else "<not digits>"
    return f"'{shown}:' followed by {len(value) - len(head) - 1} characters"


class RedactingFilter(logging.Filter):
    """A logging filter that redacts tokens from every record (httpx logs request URLs).

    Attach it to handlers, not loggers, so that records from every library pass through it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, redacted, so formatters do not print the raw one.
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True
