"""Redaction catches a token in every form it travels in: as is, URL-encoded (once or twice),
JSON-escaped, inside a URL, and the secret part alone."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import quote, quote_plus

from hypothesis import given
from hypothesis import strategies as st

from actors import HealthConfig, HealthTracker, RedactingFilter, redact
from actors.botapi import TelegramError

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

bot_ids = st.integers(min_value=100, max_value=10**12)
# BotFather's shape: "AA" and 33 base64url characters.
secrets = st.text(alphabet=_B64URL, min_size=33, max_size=33).map(lambda tail: "AA" + tail)
# Text around the token that does not glue itself onto the secret (a letter right after the
# secret would make a longer word, which is no longer a token's shape).
around = st.text(alphabet=" .,;:/?&=()[]{}'\"\n\t<>é€", max_size=12)


def _json_escaped(text: str) -> str:
    # What a JSON encoder that escapes ':' (as some do for HTML safety) writes.
    return json.dumps(text)[1:-1].replace(":", "\\u003a")


VARIANTS: dict[str, Callable[[str, str], str]] = {
    "plain": lambda i, s: f"{i}:{s}",
    "quote": lambda i, s: quote(f"{i}:{s}"),
    "quote_plus": lambda i, s: quote_plus(f"{i}:{s}"),
    "quoted twice": lambda i, s: quote(quote(f"{i}:{s}")),
    "lower-case escape": lambda i, s: f"{i}%3a{s}",
    "secret alone": lambda i, s: s,
    "in a URL": lambda i, s: f"https://api.telegram.org/bot{i}:{s}/getMe?x=1",
    "in an encoded URL": lambda i, s: quote_plus(f"https://api.telegram.org/bot{i}:{s}/getMe"),
    "JSON dumps": lambda i, s: json.dumps({"url": f"bot{i}:{s}"}),
    "JSON escaped colon": lambda i, s: _json_escaped(f"token {i}:{s}"),
    "secret in a query": lambda i, s: f"/setWebhook?secret={s}&x=1",
}


@given(
    bot_id=bot_ids,
    secret=secrets,
    variant=st.sampled_from(sorted(VARIANTS)),
    before=around,
    after=around,
)
def test_no_form_of_a_token_survives_redaction(
    bot_id: int, secret: str, variant: str, before: str, after: str
) -> None:
    text = before + VARIANTS[variant](str(bot_id), secret) + after
    cleaned = redact(text)
    assert secret not in cleaned
    # Whatever the encoding, no 20-character piece of the secret is left either.
    assert not any(secret[i : i + 20] in cleaned for i in range(len(secret) - 19))


@given(bot_id=bot_ids, secret=secrets)
def test_the_public_id_stays_readable(bot_id: int, secret: str) -> None:
    assert redact(f"bot {bot_id}:{secret} failed") == f"bot {bot_id}:… failed"
    assert redact(f"bot {bot_id}%3A{secret} failed") == f"bot {bot_id}:… failed"


def test_ordinary_text_is_left_alone() -> None:
    text = (
        "chat 123456789 said: hello; file_id AgACAgIAAxkBAAIBY2XyZ3-abcdefghijklmnopqrstuvwxyz01"
        " AAAAAAAAAA 2026-12-02T06:54:38Z"
    )
    assert redact(text) == text


SECRET = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw-"
TOKEN = f"110201543:{SECRET}"


def test_a_telegram_error_description_is_redacted_in_every_form() -> None:
    for shown in (quote(TOKEN), SECRET, f"/bot{quote_plus(TOKEN)}/sendMessage"):
        error = TelegramError(method="getMe", error_code=401, description=f"Unauthorized {shown}")
        assert SECRET not in str(error)
        assert SECRET not in error.description


def test_health_keeps_only_redacted_reasons_and_errors() -> None:
    tracker = HealthTracker(HealthConfig(), wall_clock=lambda: 0.0, clock=lambda: 0.0)
    tracker.record_failure(f"Bad Request: token {quote(TOKEN)}", latency=0.1)
    tracker.suspend(f"revoked: the secret {SECRET} was leaked")
    stats = tracker.statistics()
    assert stats.last_error is not None and SECRET not in stats.last_error
    assert stats.suspended_reason is not None and SECRET not in stats.suspended_reason


def test_the_log_filter_redacts_encoded_tokens() -> None:
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "HTTP Request: POST %s", (quote(TOKEN),), None
    )
    assert RedactingFilter().filter(record)
    assert SECRET not in record.getMessage()
