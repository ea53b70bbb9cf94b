"""A throwaway Postgres server for tests: Debian's (or any) ``initdb`` and ``pg_ctl`` on a
free 127.0.0.1 port, trust authentication, its data and unix socket in one temporary
directory that is removed afterwards.

Postgres refuses to run as root; the tests (and CI) do run as root, so then every server
command runs as the ``postgres`` OS user (``runuser -u postgres --``), which owns the
directory. Where no Postgres binaries are found, :func:`postgres_missing` says which Debian
package to install, for a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.shards import free_port

PACKAGE = "postgresql"
# A registry key for tests' shards ([cluster] needs one: 32 bytes in base64), and the
# environment a shard process of a test gets with a database URL.
REGISTRY_KEY = "dGVzdHMtcmVnaXN0cnkta2V5LTMyLWJ5dGVzLWxvbmc="


def cluster_environment(url: str) -> dict[str, str]:
    return {"BOTVISOR_DATABASE_URL": url, "BOTVISOR_REGISTRY_KEY": REGISTRY_KEY}


# Debian keeps the server binaries out of PATH, one directory per major version.
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_OS_USER = "postgres"


def postgres_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: PATH first, else Debian's newest."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).parent
    versions = sorted(
        (p for p in _DEBIAN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def postgres_missing() -> str | None:
    """Why this machine cannot run the throwaway server (a skip reason), or None."""
    if postgres_bindir() is None:
        return f"Postgres is not installed (initdb, pg_ctl): apt-get install {PACKAGE}"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root needs runuser (util-linux) to start Postgres as a user"
        try:
            import pwd

            pwd.getpwnam(_OS_USER)
        except KeyError:
            return f"running as root needs the {_OS_USER!r} OS user: apt-get install {PACKAGE}"
    return None


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway server: ``url`` reaches its ``postgres`` database as the
    superuser ``postgres`` (no password: trust)."""

    port: int
    directory: Path

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", _OS_USER, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], *, check: bool = True) -> None:
    subprocess.run(command, check=check, stdin=subprocess.DEVNULL, capture_output=True)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a server (about 2 s), yield it, stop it (``pg_ctl stop -m immediate``) and
    remove its directory."""
    bindir = postgres_bindir()
    assert bindir is not None, postgres_missing()
    # Not under pytest's tmp_path: its parents are private to root, and the server user
    # must reach its directory.
    directory = Path(tempfile.mkdtemp(prefix="botvisor-postgres-"))
    data = directory / "data"
    if os.geteuid() == 0:
        shutil.chown(directory, _OS_USER, _OS_USER)
    started = False
    try:
        _run(
            _as_server_user(
                [
                    str(bindir / "initdb"),
                    "--pgdata",
                    str(data),
                    "--auth",
                    "trust",
                    "--username",
                    "postgres",
                    "--encoding",
                    "UTF8",
                    "--no-sync",
                ]
            )
        )
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        _run(
            _as_server_user(
                [
                    str(bindir / "pg_ctl"),
                    "--pgdata",
                    str(data),
                    "--log",
                    str(directory / "server.log"),
                    "--options",
                    options,
                    "--wait",
                    "--timeout",
                    "60",
                    "start",
                ]
            )
        )
        started = True
        yield PostgresServer(port=port, directory=directory)
    except subprocess.CalledProcessError as exc:
        log = directory / "server.log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise AssertionError(
            f"{exc.cmd[-1]} failed ({exc.returncode}): {exc.stderr!r}\n{detail}"
        ) from exc
    finally:
        if started:
            _run(
                _as_server_user(
                    [str(bindir / "pg_ctl"), "--pgdata", str(data), "stop", "-m", "immediate"]
                ),
                check=False,
            )
        shutil.rmtree(directory, ignore_errors=True)


def terminate_lock_session(url: str, index: int) -> int:
    """``pg_terminate_backend`` of every session holding shard ``index``'s fencing lock in
    the database of ``url``; how many there were."""
    import psycopg

    from supervisor.fencing import FENCE_KEY

    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid = %s::oid AND objid = %s::oid AND objsubid = 2",
            (FENCE_KEY, index),
        ).fetchall()
    return len(rows)
