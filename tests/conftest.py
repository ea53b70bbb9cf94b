"""Suite-wide fixtures: every test's logs are checked for leaked bot tokens; a throwaway
Postgres for the tests that need one (skipped, naming the package, where it is absent)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest

from actors import RedactingFilter
from actors.secrets import SECRET_PATTERN, TOKEN_PATTERN, WEBHOOK_SECRET_PATTERN
from tests.postgres import PostgresServer, postgres_missing, running_postgres


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway Postgres per test process (``make test`` runs whole files per worker),
    started on first use: about 2 s."""
    missing = postgres_missing()
    if missing is not None:
        pytest.skip(missing)
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def _database_names() -> Iterator[int]:
    return itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, _database_names: Iterator[int]) -> str:
    """The URL of a fresh, empty database of the throwaway server, one per test (advisory
    locks and sessions of one test do not meet another's)."""
    import psycopg

    name = f"test_{next(_database_names)}"
    with psycopg.connect(postgres_server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_server.database_url(name)
