"""Helpers of the restart and crash tests: their config file, and reading the database file.

The daemon runs as a real process (``tests.e2e.process.DaemonProcess``); between its runs the
test reads the SQLite file directly, as an operator's tool would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.process import DaemonProcess

ADMIN_TOKEN = "e2e-persistence-admin-token"
ADMIN_ENV = {"BOTVISOR_ADMIN_TOKEN": ADMIN_TOKEN}


def write_durable_config(
    path: Path,
    *,
    api_base: str,
    db_path: Path,
    bots: Mapping[int, str],
    poll_timeout: int,
    handler: str = "echo",
    graceful_timeout: float = 5,
) -> Path:
    """A botvisor.toml for persistence tests: limits high enough that replies never queue
    behind Telegram's per-chat pacing, and a short breaker so a hiccup costs little."""
    lines = [
        "[telegram]",
        f'api_base = "{api_base}"',
        f"poll_timeout = {poll_timeout}",
        "request_timeout = 10",
        "[storage]",
        f'path = "{db_path}"',
        "[admin]",
        'listen = "127.0.0.1:0"',
        "[limits]",
        "global_rps = 5000",
        "global_burst = 500",
        "bot_rps = 5000",
        "bot_burst = 500",
        "private_chat_per_second = 1000",
        "[breaker]",
        "open_seconds = 1",
        "[supervisor]",
        f"graceful_timeout = {graceful_timeout}",
        "report_interval = 1",
    ]
    if ":" in handler:
        lines += ["[handlers]", 'allowed_modules = ["tests"]']
    for user_id, token in bots.items():
        lines += [
            "[[bots]]",
            f"user_id = {user_id}",
            f'token = "{token}"',
            f'handler = "{handler}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def admin_client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    )


def query(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file while no daemon runs (a plain connection: it recovers the WAL of a
    killed process, as the next daemon would)."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def integrity(db_path: Path) -> list[str]:
    return [str(r[0]) for r in query(db_path, "PRAGMA integrity_check")]


def duplicate_snapshots(db_path: Path) -> list[tuple[Any, ...]]:
    """Health rows written twice: the same bot at the same instant."""
    return query(
        db_path,
        "SELECT user_id, recorded_at, COUNT(*) FROM bot_health_metrics "
        "GROUP BY user_id, recorded_at HAVING COUNT(*) > 1",
    )


def kill_if_running(*daemons: DaemonProcess) -> None:
    """After a failed assertion: leave no daemon process behind."""
    for daemon in daemons:
        process = daemon.process
        if process is not None and process.returncode is None:
            daemon.kill()
