"""``botvisor migrate --config PATH`` as an operator runs it: exit codes, messages, no damage."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from storage import SCHEMA_VERSION
from tests.e2e.process import BOTVISOR


async def migrate(config: Path) -> tuple[int, str, str]:
    result = await trio.run_process(
        [BOTVISOR, "migrate", "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_migrate_brings_a_new_file_up_to_date_then_finds_it_current(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    config = tmp_path / "botvisor.toml"
    config.write_text(f'[storage]\npath = "{db}"\n')
    code, out, err = await migrate(config)
    assert (code, err) == (0, "")
    assert out == f"{db}: migrated schema 0 -> {SCHEMA_VERSION}\n"
    assert oct(db.stat().st_mode & 0o777) == oct(0o600)
    code, out, _ = await migrate(config)
    assert code == 0
    assert out == f"{db}: schema {SCHEMA_VERSION} is current\n"


async def test_migrate_refuses_a_database_from_a_newer_botvisor(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.execute("CREATE TABLE from_the_future (x)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    config = tmp_path / "botvisor.toml"
    config.write_text(f'[storage]\npath = "{db}"\n')
    code, out, err = await migrate(config)
    assert code == 1
    assert out == ""
    assert str(SCHEMA_VERSION + 7) in err
    assert "newer" in err
    assert "Traceback" not in err
    assert db.read_bytes() == before
