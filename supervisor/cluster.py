"""``[cluster]``: where a shard's Postgres is, and how its fencing lock is watched.

The database URL is read from the environment variable ``database_env`` names (by the
loader; never from the file) and is never shown with its password: :func:`redact_url`.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from actors import Number, WholeNumber

__all__ = ["ClusterConfig", "database_url_problem", "redact_url"]

_SCHEMES = ("postgresql", "postgres")
# A password in a query string (?password=...), as libpq accepts it.
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


class ClusterConfig(BaseModel):
    """``[cluster]``: this process is one shard of a fleet that shares a Postgres database.

    A shard holds a Postgres advisory lock for its index on a session of its own while it
    runs (supervisor/fencing.py): a second process claiming the same shard refuses to start,
    and a shard whose session dies stops polling and exits. The bots' registry (tokens
    sealed, settings, the topology) lives in the same database (supervisor/registry.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The environment variable holding the database URL (postgresql://user:pw@host:5432/db).
    database_env: Annotated[str, Field(min_length=1, max_length=200)] = "BOTVISOR_DATABASE_URL"
    # The URL, read from ``database_env`` by the loader. Never printed.
    database_url: str | None = Field(default=None, repr=False)
    # Seconds to wait for Postgres to accept a connection.
    connect_timeout: Annotated[WholeNumber, Field(ge=1, le=600)] = 10
    # How often the lock's session is checked (a SELECT 1), and how long one check may
    # take before the session counts as gone.
    lock_check_interval: Annotated[Number, Field(ge=0.1, le=600)] = 5.0
    lock_check_timeout: Annotated[Number, Field(ge=0.1, le=600)] = 5.0
    # The environment variable holding the registry key: 32 random bytes in base64, from
    # which the key that seals the bots' tokens (AES-256-GCM) and the key of their digests
    # (HMAC) are derived (supervisor/sealing.py). Every shard of a fleet has the same one.
    registry_key_env: Annotated[str, Field(min_length=1, max_length=200)] = "BOTVISOR_REGISTRY_KEY"
    # The key, read from ``registry_key_env`` by the loader. Never printed.
    registry_key: str | None = Field(default=None, repr=False)
    # How long one registry read or write may take (connecting included) before it counts
    # as failed: a read falls back to the shard's cached registry, a write answers 503.
    registry_timeout: Annotated[Number, Field(ge=0.1, le=600)] = 5.0
    # After getUpdates answered 409 "terminated by other getUpdates request" (another
    # process polls the bot), how long the owner waits before polling it again, so two
    # stale owners do not take the bot from each other in turn.
    conflict_holdoff: Annotated[Number, Field(ge=0, le=3600)] = 30.0


def redact_url(url: str) -> str:
    """``url`` with its password (in the authority or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a URL that does not parse)"
    text = url
    if password:
        user = parts.username or ""
        text = text.replace(f"{user}:{password}@", f"{user}:***@", 1)
    return _QUERY_PASSWORD.sub(r"\1***", text)


def database_url_problem(url: str) -> str | None:
    """Why ``url`` is no Postgres URL libpq would take (never quoting it), or None. Nothing
    is connected to."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in _SCHEMES:
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        return (
            f"must be a postgresql:// URL (postgresql://user:password@host:5432/database), "
            f"its scheme is {shown}"
        )
    if not parts.hostname and "host=" not in parts.query:
        return "names no host (postgresql://user:password@HOST:5432/database)"
    if port == 0:
        return "has port 0"
    return None
