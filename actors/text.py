"""Text from outside is valid Unicode before it reaches SQLite, a log or a response.

JSON may spell a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it into a ``str`` that
cannot be encoded as UTF-8, so SQLite, a JSON response or a log file would fail on it later,
far from where it came in. Two policies, one per source:

- requests to the admin API are refused: :func:`surrogate_locations` finds every such string
  (or key) so that the request is a 422 naming the field;
- text from Telegram (update payloads, error descriptions) and exception messages are kept,
  with each lone surrogate replaced by U+FFFD (``"\\ufffd"``, the replacement character):
  :func:`valid_text` and :func:`valid_data`. A surrogate PAIR spelled in JSON is one real
  character and is left as it is.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "LONE_SURROGATE",
    "REPLACEMENT",
    "may_hold_surrogates",
    "surrogate_locations",
    "valid_data",
    "valid_text",
]

LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"
# A JSON escape of a surrogate: only a body containing one can decode into a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (``text`` itself if it has none)."""
    if text.isascii():
        return text
    return LONE_SURROGATE.sub(REPLACEMENT, text)


def valid_data(data: Any) -> Any:
    """Decoded JSON with :func:`valid_text` applied to every string, keys included."""
    if isinstance(data, str):
        return valid_text(data)
    if isinstance(data, dict):
        return {valid_text(k) if isinstance(k, str) else k: valid_data(v) for k, v in data.items()}
    if isinstance(data, list):
        return [valid_data(item) for item in data]
    return data


def may_hold_surrogates(body: bytes) -> bool:
    """Whether JSON ``body`` can decode into a lone surrogate (a fast scan of the raw bytes;
    raw UTF-8 never can, only a ``\\uD8xx``-``\\uDFxx`` escape)."""
    return _SURROGATE_ESCAPE.search(body) is not None


def surrogate_locations(
    data: Any, loc: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], int]]:
    """Where decoded JSON ``data`` holds a lone surrogate: ``(key path, code point)`` each."""
    found: list[tuple[tuple[str | int, ...], int]] = []
    if isinstance(data, str):
        if (match := LONE_SURROGATE.search(data)) is not None:
            found.append((loc, ord(match.group())))
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and (match := LONE_SURROGATE.search(key)) is not None:
                found.append(((*loc, valid_text(key)), ord(match.group())))
                continue
            found += surrogate_locations(value, (*loc, key))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found += surrogate_locations(item, (*loc, index))
    return found
