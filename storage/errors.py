"""The exceptions of the storage package.

::

    StorageError                 anything storage refuses or cannot do
    ├── NotADatabaseError        storage.path is not a botvisor SQLite file, or cannot be opened
    ├── SchemaTooNewError        the file was written by a newer botvisor; left untouched
    ├── DatabaseFailedError      SQLite could not open, migrate, read or close the file
    │                            (corrupt pages, disk full, I/O error); SQLite's message kept
    └── StoreClosedError         a write or read after the store was stopped

A job submitted to the writer that fails re-raises its own exception (``sqlite3.Error``,
``ValueError``...), not one of these.
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "DatabaseFailedError",
    "NotADatabaseError",
    "SchemaTooNewError",
    "StorageError",
    "StoreClosedError",
    "is_database_failure",
]


class StorageError(Exception):
    """Base of every error raised by the storage package itself."""


class NotADatabaseError(StorageError):
    """The path cannot be opened as a SQLite database."""


class SchemaTooNewError(StorageError):
    """The database was written by a newer botvisor; this one refuses to touch it."""

    def __init__(self, path: str, found: int, known: int) -> None:
        self.path = path
        self.found = found
        self.known = known
        super().__init__(
            f"{path} was written by a newer botvisor (schema {found}, this one knows up to "
            f"{known}); upgrade botvisor or use another storage.path"
        )


class DatabaseFailedError(StorageError):
    """SQLite failed on the file itself (``sqlite3.DatabaseError``: corruption, disk full, I/O).

    Its message is one line: the path, what was being done, and SQLite's own words.
    """

    def __init__(self, path: str, doing: str, error: BaseException) -> None:
        self.path = path
        self.doing = doing
        self.sqlite_message = " ".join(str(error).split()) or type(error).__name__
        super().__init__(
            f"{path}: {doing} failed: SQLite says {self.sqlite_message!r}; restore the file "
            "from a backup or point storage.path at a new file"
        )


class StoreClosedError(StorageError):
    """The store (or its writer) was stopped: it accepts no more work."""


def is_database_failure(error: BaseException | None) -> bool:
    """Whether ``error`` is SQLite failing on the file itself (full disk, I/O, corruption), as
    opposed to one job's data or SQL (an IntegrityError, a ProgrammingError)."""
    return (
        isinstance(error, (DatabaseFailedError, sqlite3.OperationalError))
        or type(error) is sqlite3.DatabaseError
    )
