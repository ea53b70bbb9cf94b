"""The throwaway Postgres of tests/postgres.py: it runs (as the ``postgres`` user when the
tests run as root), and each test gets a database of its own."""

from __future__ import annotations

import psycopg

from tests.postgres import PostgresServer


def test_the_server_answers_on_its_port_and_each_test_has_its_own_database(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("SELECT current_database(), current_setting('port')").fetchone()
    assert row is not None
    assert row[0].startswith("test_")
    assert row[1] == str(postgres_server.port)
    assert postgres_url != postgres_server.url
