"""Opening the botvisor SQLite file: private file mode, WAL, and a refusal to touch strangers.

The file holds bot tokens, so it is created with mode 0600 before SQLite ever sees it (SQLite
gives its ``-wal`` and ``-shm`` files the mode of the main file). A file that is not SQLite, or
whose schema is newer than this code knows, is refused before anything is written to it:
switching to WAL rewrites the file header, so the checks come first.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import sqlite_utils

from storage.errors import DatabaseFailedError, NotADatabaseError, SchemaTooNewError
from storage.migrations import SCHEMA_VERSION, migrate, read_schema_version, refuse_foreign

__all__ = ["BUSY_TIMEOUT_MS", "migrate_file", "open_database"]

logger = logging.getLogger("botvisor.storage")

# Long enough to ride out a checkpoint or a second process's migration; WAL readers never wait
# for the writer, so in normal operation nobody waits at all.
BUSY_TIMEOUT_MS = 5_000
PRIVATE_MODE = 0o600
_SIDE_FILES = ("-wal", "-shm", "-journal")


def open_database(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite_utils.Database:
    """Open (creating if needed, mode 0600) the database at ``path``; does not migrate.

    Read-write connections switch the file to WAL with ``synchronous=NORMAL``. A read-only
    connection (``readonly=True``) never creates or modifies the file. Both may be used from any
    thread (``check_same_thread=False``) and run in autocommit mode: transactions are explicit
    (``BEGIN``/``COMMIT``, or sqlite-utils' ``db.atomic()``).

    Raises :class:`NotADatabaseError` if the path is not a SQLite file (or is another
    program's database) and :class:`SchemaTooNewError` if a newer botvisor wrote it; in every
    case the file is left exactly as it was.
    """
    name = os.fspath(path)
    conn = _connect(name, readonly=readonly)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            found = read_schema_version(conn)
        except sqlite3.DatabaseError as exc:
            raise NotADatabaseError(
                f"{name} is not a SQLite database (SQLite says: {exc}); "
                "point storage.path at a botvisor database or at a new file"
            ) from None
        if found > SCHEMA_VERSION:
            raise SchemaTooNewError(name, found, SCHEMA_VERSION)
        if found == 0:
            refuse_foreign(conn, name)
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise NotADatabaseError(
                    f"{name} cannot be switched to WAL mode (SQLite kept {mode!r}); "
                    "storage.path must be on a local file system"
                )
            _make_private(name)
        conn.execute("PRAGMA synchronous = NORMAL")
        return sqlite_utils.Database(conn, execute_plugins=False)
    except BaseException:
        conn.close()
        raise


def _connect(name: str, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            uri = Path(name).resolve().as_uri() + "?mode=ro"
            return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        _create_private(name)
        return sqlite3.connect(name, check_same_thread=False, isolation_level=None)
    except OSError as exc:
        raise NotADatabaseError(f"cannot open {name}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise NotADatabaseError(f"cannot open {name}: SQLite says {exc}") from None


def _create_private(name: str) -> None:
    """Create the file with mode 0600 if absent, so its first byte is never world-readable."""
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
    os.close(fd)


def _make_private(name: str) -> None:
    """Tighten the database and its side files to 0600: they hold bot tokens."""
    for file in (name, *(name + suffix for suffix in _SIDE_FILES)):
        try:
            mode = stat.S_IMODE(os.stat(file).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(file, PRIVATE_MODE)
            logger.warning(
                "%s had mode %04o; tightened to 0600 because it holds bot tokens", file, mode
            )


def migrate_file(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Open ``path`` (creating it), apply pending migrations, close; ``(before, after)``.

    Blocking: for the command line, or ``trio.to_thread.run_sync`` in async code. SQLite
    failing on the file (corrupt, full disk) raises :class:`DatabaseFailedError`.
    """
    try:
        db = open_database(path)
        try:
            return migrate(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseFailedError(os.fspath(path), "migrating the schema", exc) from None
