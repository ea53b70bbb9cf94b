"""Identifiers shared by every layer above storage: a tenant's ``user_id``.

Declared once here; config validation, admin request parsing and the OpenAPI document all
use :data:`UserId`, so the rule (a whole number from 1 to :data:`MAX_USER_ID`) has one home.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["MAX_USER_ID", "USER_ID_RULE", "UserId", "user_id_problem"]

# user_id is stored as SQLite's INTEGER, a signed 64-bit number.
MAX_USER_ID = 2**63 - 1
USER_ID_RULE = f"be a whole number from 1 to {MAX_USER_ID}"

# strict: a bool or a string of digits is not a user_id.
UserId = Annotated[
    int,
    Field(strict=True, ge=1, le=MAX_USER_ID, json_schema_extra={"x-rule": USER_ID_RULE}),
]


def user_id_problem(raw: str) -> str | None:
    """What is wrong with ``raw`` as a user_id given as text (a path or query parameter):
    ``"must be a whole number from 1 to …, got 'x'"``, or None when it is one."""
    # Checked on the text first: int() of a 5,000-digit string would raise, not answer.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 1 <= int(raw) <= MAX_USER_ID:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        return f"must {USER_ID_RULE}, got {shown!r}"
    return None
