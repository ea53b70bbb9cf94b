"""Errors of the admin API: always ``{"error": {"code": ..., "message": ...}}``, never a
traceback."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope, Send

from actors import NotOwned, redact
from admin.records import ErrorBody, ErrorDetail
from storage import StorageError

__all__ = [
    "ApiError",
    "error_body",
    "error_response",
    "exception_handlers",
    "misdirected",
    "refuse",
]

log = logging.getLogger("botvisor.admin")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    421: "misdirected",
    422: "invalid_request",
    426: "upgrade_required",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by a route to answer with a JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = redact(message)
        self.headers = headers
        # Fields beside "error" in the body (a 421's "owner_shard").
        self.extra = extra


def misdirected(exc: NotOwned) -> ApiError:
    """421 Misdirected Request for a bot of another shard, naming its owner: a client (the
    fleet gateway) sends the request there."""
    # The body is records.MisdirectedBody: the error and the owner.
    return ApiError(421, str(exc), extra={"owner_shard": exc.owner_shard})


def error_body(status: int, message: str, *, code: str | None = None) -> dict[str, object]:
    """The one error shape of the admin API (``records.ErrorBody``), as JSON-ready data."""
    detail = ErrorDetail(code=code or _CODES.get(status, "error"), message=redact(message))
    return ErrorBody(error=detail).model_dump(mode="json")


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> None:
    """Answer an HTTP request or refuse a WebSocket handshake with a JSON error (plain ASGI,
    for middleware that answers before the app runs); ``extra``: fields beside "error"."""
    body = json.dumps({**error_body(status, message, code=code), **(extra or {})}).encode()
    raw_headers = [(b"content-type", b"application/json")] + [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in (headers or {}).items()
    ]
    if scope["type"] == "websocket":
        # The denial-response extension answers the handshake with a real HTTP status; a
        # server without it can only close before accepting.
        if "websocket.http.response" in scope.get("extensions", {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [*raw_headers, (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*raw_headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {**error_body(status, message, code=code), **(extra or {})},
        status_code=status,
        headers=headers,
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status, exc.message, code=exc.code, headers=exc.headers, extra=exc.extra
    )


async def _not_owned(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotOwned)
    return await _api_error(request, misdirected(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: f"no route {request.url.path}; see GET /openapi.json for the routes",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, message, headers=exc.headers)


async def _database_failed(request: Request, exc: Exception) -> Response:
    # The database failing (full disk, corrupt page, I/O) is not a bug of the request: 503
    # with one log line, and the daemon keeps answering what needs no database.
    log.error(
        "admin %s %s: the database failed: %s",
        request.method,
        request.url.path,
        redact(f"{type(exc).__name__}: {exc}"),
    )
    return error_response(
        503,
        f"the database cannot answer now ({type(exc).__name__}: {exc}); GET /readyz says why",
        headers={"Retry-After": "30"},
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error(
        "admin %s %s failed: %s",
        request.method,
        request.url.path,
        redact(f"{type(exc).__name__}: {exc}"),
    )
    return error_response(500, "the server failed to answer; the daemon log has the details")


exception_handlers = {
    ApiError: _api_error,
    NotOwned: _not_owned,
    HTTPException: _http_error,
    # Handled by the exception middleware (only the bare Exception handler goes to Starlette's
    # server-error middleware, which re-raises to the server after answering).
    StorageError: _database_failed,
    sqlite3.DatabaseError: _database_failed,
    Exception: _unexpected,
}
