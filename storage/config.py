"""``[storage]``: the SQLite file and what is kept in it, declared once as a frozen model."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["StorageConfig"]

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
    # How often old rows are looked for.
    retention_check_interval: Annotated[_Seconds, Field(ge=0.01, le=86_400)] = 3600.0
