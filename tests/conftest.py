"""Suite-wide fixtures: every test's logs are checked for leaked bot tokens."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from actors import RedactingFilter
from actors.secrets import SECRET_PATTERN, TOKEN_PATTERN, WEBHOOK_SECRET_PATTERN


class _Capture(logging.Handler):
    """Formats every record as an operator's log would show it (with the redacting filter
    the CLI installs), and separately keeps botvisor's own raw messages."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(RedactingFilter())
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def no_token_in_logs() -> Iterator[None]:
    """Fail the test if any log line (as an operator would see it) contains a bot token, or if
    botvisor's own code put one into a log message at all."""
    capture = _Capture()
    raw: list[str] = []

    class _Raw(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.name.startswith("botvisor"):
                raw.append(record.getMessage())
            return True

    raw_filter = _Raw()
    capture.filters.insert(0, raw_filter)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(min(previous, logging.INFO) if previous else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(capture)
        root.setLevel(previous)
    leaked = [
        line
        for line in capture.lines + raw
        if TOKEN_PATTERN.search(line)
        or SECRET_PATTERN.search(line)
        or WEBHOOK_SECRET_PATTERN.search(line)
    ]
    assert not leaked, f"a bot token reached the logs: {leaked[:3]}"
