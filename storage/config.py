"""``[storage]``: the SQLite file and what is kept in it, declared once as a frozen model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["StorageConfig", "storage_path_problem"]

# A number from the file: an int is accepted, a bool, a string, inf or nan is not.
_Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class StorageConfig(BaseModel):
    """``[storage]``: the SQLite file and what is kept in it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Annotated[str, Field(min_length=1, json_schema_extra={"x-rule": "be a file path"})] = (
        "botvisor.db"
    )
    # One health snapshot of every bot this often.
    persist_interval: Annotated[
        _Seconds, Field(ge=60, le=3600, json_schema_extra={"x-rule": "be from 60 to 3600 seconds"})
    ] = 300.0
    retention_days: Annotated[_Seconds, Field(ge=0.001, le=36_500)] = 30.0
    # Usage analytics: hour rows, and day and month rows (a row goes once its period started
    # longer ago than this).
    usage_hour_retention_days: Annotated[_Seconds, Field(ge=1, le=36_500)] = 35.0
    usage_retention_days: Annotated[_Seconds, Field(ge=1, le=36_500)] = 400.0
    # How often old rows are looked for.
    retention_check_interval: Annotated[_Seconds, Field(ge=0.01, le=86_400)] = 3600.0


def storage_path_problem(path: str) -> str | None:
    """Why the database cannot be opened at ``path`` by this process, or None: its directory
    must exist and be writable (SQLite creates its -wal and -shm files beside it), and the
    file, if there is one, must be a writable regular file. Checked before a daemon starts."""
    file = Path(path)
    directory = file.parent
    if not directory.is_dir():
        return f"the directory {str(directory)!r} does not exist: create it or choose another path"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory {str(directory)!r} is not writable by this user"
    if file.exists():
        if not file.is_file():
            return f"{path!r} exists and is not a file: choose a file path"
        if not os.access(file, os.R_OK | os.W_OK):
            return f"{path!r} is not readable and writable by this user"
    return None
