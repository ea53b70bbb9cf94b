"""What each admin endpoint takes and answers, declared next to the endpoint.

``@operation(...)`` puts an ``Operation`` on the endpoint function; ``admin.openapi`` walks
the app's routing table and describes every route from its endpoint's declaration, and refuses
a route whose endpoint has none, so a route cannot be left out of the document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["Operation", "Reply", "operation", "operation_of"]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

# The attribute of an endpoint function that holds its Operation.
_ATTRIBUTE = "__admin_operation__"


@dataclass(frozen=True)
class Reply:
    """One documented answer: a record (JSON), or another media type, or no body."""

    description: str = "OK"
    record: type[BaseModel] | None = None
    # For a body that is not a record: its media type and schema (None: no body at all).
    media_type: str | None = None
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Operation:
    """One endpoint's contract: what it takes (path, query, body models) and answers.

    Every operation also answers 405 and 429 and, unless ``public``, 401; one with
    parameters or a body answers 422, one with a body 413. ``errors`` adds the others.
    """

    summary: str
    replies: Mapping[int, Reply]
    tag: str = "system"
    path: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()
    public: bool = False


def operation(
    summary: str,
    replies: Mapping[int, Reply | type[BaseModel]],
    **options: Any,
) -> Callable[[Endpoint], Endpoint]:
    """Declare an endpoint's contract; ``replies`` maps a status to a record or a ``Reply``;
    ``options`` are the other fields of ``Operation``."""
    declared = Operation(
        summary,
        {
            status: reply if isinstance(reply, Reply) else Reply(record=reply)
            for status, reply in replies.items()
        },
        **options,
    )

    def declare(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _ATTRIBUTE, declared)
        return endpoint

    return declare


def operation_of(endpoint: object) -> Operation | None:
    """The declaration of ``endpoint``, or None when it has none."""
    declared = getattr(endpoint, _ATTRIBUTE, None)
    return declared if isinstance(declared, Operation) else None
