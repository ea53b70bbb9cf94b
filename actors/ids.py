"""Identifiers shared by every layer above storage: a tenant's ``user_id``.

Declared once here; config validation, admin request parsing and the OpenAPI document all
use :data:`UserId`, so the rule (a whole number from 1 to :data:`MAX_USER_ID`) has one home.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["MAX_USER_ID", "UserId", "user_id_problem"]

# user_id is stored as SQLite's INTEGER, a signed 64-bit number.
MAX_USER_ID = 2**63 - 1

# strict: a bool or a string of digits is not a user_id.
UserId = Annotated[int, Field(strict=True, ge=1, le=MAX_USER_ID)]


def user_id_problem(raw: str) -> str | None:
    """Why ``raw`` (a path or query parameter) is not a user_id, or None when it is one."""
    # Checked on the text first: int() of a 5,000-digit string would raise, not answer.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 1 <= int(raw) <= MAX_USER_ID:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        return f"user_id must be a whole number from 1 to {MAX_USER_ID}, got {shown!r}"
    return None
