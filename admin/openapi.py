"""``GET /openapi.json``: the admin API described by hand, route by route.

Hand-written rather than generated because the routes are plain Starlette functions; a test
checks that every route of the app is described here and the other way round, and a bounded
schemathesis run checks the answers against it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from admin.context import MAX_USER_ID

__all__ = ["openapi_endpoint", "openapi_spec"]

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Schema], *, required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
    }


INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
NULL_NUM: Schema = {"type": "number", "nullable": True}
NULL_STR: Schema = {"type": "string", "nullable": True}
COUNTS: Schema = {"type": "object", "additionalProperties": INT}
STATUS: Schema = {"type": "string", "enum": ["healthy", "degraded", "unhealthy", "suspended"]}
BREAKER: Schema = {
    "type": "string",
    "enum": ["closed", "open", "half_open", "disabled", "forced_open"],
}

BREAKER_FIELDS: dict[str, Schema] = {
    "state": BREAKER,
    "consecutive_failures": INT,
    "failure_count": INT,
    "success_count": INT,
    "rejected_count": INT,
    "opened_at": NULL_NUM,
    "half_open_at": NULL_NUM,
    "transitions": INT,
    "probe_in_flight": BOOL,
    "window_calls": INT,
    "window_failures": INT,
    "generation": INT,
}
RETRY_FIELDS: dict[str, Schema] = {
    "calls": INT,
    "attempts": INT,
    "retries": INT,
    "retries_by_category": COUNTS,
    "recovered": INT,
    "exhausted": INT,
    "uncertain": INT,
    "recovery_rate": NUM,
}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": {**STR, "description": "machine-readable, e.g. not_found"},
                    "message": {**STR, "description": "what went wrong and what to do"},
                }
            )
        }
    ),
    "NewBot": {
        **_obj(
            {
                "user_id": {**INT, "minimum": 1, "maximum": MAX_USER_ID},
                "token": {
                    **STR,
                    "description": "the bot's token from @BotFather; checked with getMe "
                    "before anything is stored, never shown again",
                },
                "handler": {
                    **STR,
                    "default": "echo",
                    "description": "'echo', 'autoreply' or 'package.module:function'",
                },
                "autoreply": {
                    "type": "array",
                    "items": {
                        **_obj(
                            {"contains": {**STR, "minLength": 1}, "reply": {**STR, "minLength": 1}}
                        ),
                        "additionalProperties": False,
                    },
                },
                "autoreply_default": NULL_STR,
                "rps": {
                    **NULL_NUM,
                    "exclusiveMinimum": True,
                    "minimum": 0,
                    "description": "this bot's own requests per second (limits.bot_rps if null)",
                },
            },
            required=["user_id", "token"],
        ),
        "additionalProperties": False,
    },
    "SuspendRequest": {
        **_obj({"reason": {**STR, "minLength": 1, "maxLength": 500}}, required=[]),
        "additionalProperties": False,
    },
    "Bot": _obj(
        {
            "user_id": INT,
            "bot_id": INT,
            "token": {**STR, "description": "redacted: '123456:…'"},
            "handler": STR,
            "rps": NULL_NUM,
            "autoreply_rules": INT,
            "source": {**STR, "enum": ["config", "api", "unknown"]},
            "state": {
                **STR,
                "enum": ["idle", "starting", "running", "stopping", "suspended"],
            },
            "status": STATUS,
            "supervisor_state": NULL_STR,
            "suspended_reason": NULL_STR,
            "circuit_state": BREAKER,
        }
    ),
    "BotList": _obj({"count": INT, "bots": {"type": "array", "items": _ref("Bot")}}),
    "Removed": _obj({"user_id": INT, "removed": BOOL, "history_kept": BOOL}),
    "BotHealth": _obj(
        {
            "user_id": INT,
            "status": STATUS,
            "actor_state": STR,
            "supervisor_state": NULL_STR,
            "suspended_reason": NULL_STR,
            "total_requests": INT,
            "successful_requests": INT,
            "failed_requests": INT,
            "error_rate": NUM,
            "avg_response_time_ms": NULL_NUM,
            "consecutive_failures": INT,
            "rate_limited_count": INT,
            "chat_errors": INT,
            "last_success_at": NULL_NUM,
            "last_failure_at": NULL_NUM,
            "last_error": NULL_STR,
            "circuit_state": BREAKER,
            "handled_updates": INT,
            "replies_sent": INT,
            "dead_letters": INT,
            "ambiguous_sends": INT,
            "handler_errors": INT,
        }
    ),
    "HealthSummary": _obj(
        {
            "generated_at": NUM,
            "total_bots": INT,
            "by_status": COUNTS,
            "total_requests": INT,
            "successful_requests": INT,
            "failed_requests": INT,
            "error_rate": NUM,
            "avg_response_time_ms": NUM,
            "handled_updates": INT,
            "replies_sent": INT,
            "dead_letters": INT,
        }
    ),
    "UnhealthyBots": _obj(
        {"generated_at": NUM, "count": INT, "bots": {"type": "array", "items": _ref("BotHealth")}}
    ),
    "Breaker": _obj({"user_id": INT, **BREAKER_FIELDS}),
    "BreakerSummary": _obj(
        {
            "total": INT,
            "by_state": COUNTS,
            "not_closed": {"type": "array", "items": _ref("Breaker")},
        }
    ),
    "RetryStatistics": _obj(RETRY_FIELDS),
    "RetrySummary": _obj(
        {
            "overall": _ref("RetryStatistics"),
            "bots": {"type": "array", "items": _obj({"user_id": INT, **RETRY_FIELDS})},
        }
    ),
    "RetryReset": _obj({"reset": INT}),
    "HealthRow": _obj(
        {
            "user_id": INT,
            "recorded_at": NUM,
            "status": STATUS,
            "total_requests": INT,
            "successful_requests": INT,
            "failed_requests": INT,
            "error_rate": NUM,
            "avg_response_time_ms": NUM,
            "consecutive_failures": INT,
            "circuit_state": BREAKER,
            "circuit_failure_count": INT,
            "retry_attempts": INT,
            "rate_limited_count": INT,
            "last_success_at": NULL_NUM,
            "last_failure_at": NULL_NUM,
            "last_error": NULL_STR,
        }
    ),
    "History": _obj(
        {
            "user_id": INT,
            "hours": INT,
            "since": NUM,
            "count": INT,
            "truncated": BOOL,
            "rows": {"type": "array", "items": _ref("HealthRow")},
        }
    ),
    "UnhealthyHistory": _obj(
        {
            "hours": INT,
            "since": NUM,
            "count": INT,
            "truncated": BOOL,
            "rows": {"type": "array", "items": _ref("HealthRow")},
        }
    ),
    "PersistNow": _obj({"rows_written": INT}),
    "Alive": _obj({"status": {**STR, "enum": ["alive"]}}),
    "Ready": _obj({"status": {**STR, "enum": ["ready", "not ready"]}, "detail": STR}),
}

_ERRORS = {
    "401": "no or wrong 'Authorization: Bearer <admin token>'",
    "404": "no such bot",
    "405": "the method is not allowed on this path",
    "409": "the request conflicts with the bot's state",
    "413": "the request body is larger than 64 KiB",
    "422": "the request is invalid; the message says what to fix",
    "429": "too many requests from this address; see Retry-After",
    "503": "a dependency (Telegram, the store) cannot answer now",
}
_HEADER_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before the next request",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _error(status: str) -> Schema:
    response: Schema = {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if status == "429":
        response["headers"] = _HEADER_RETRY_AFTER
    return response


def _ok(schema: str, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


USER_ID: Schema = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "description": "the tenant's user id",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID},
}
HOURS: Schema = {
    "name": "hours",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 168, "default": 24},
}


def _op(
    summary: str,
    responses: dict[str, Schema],
    *,
    errors: tuple[str, ...] = (),
    params: tuple[Schema, ...] = (),
    body: str | None = None,
    body_required: bool = True,
    public: bool = False,
    tag: str = "system",
) -> Schema:
    statuses = ("405", "429", *(() if public else ("401",)), *errors)
    if params and "422" not in statuses:
        statuses = (*statuses, "422")
    op: Schema = {
        "summary": summary,
        "tags": [tag],
        "responses": {**responses, **{s: _error(s) for s in sorted(set(statuses))}},
    }
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        op["responses"].setdefault("413", _error("413"))
        op["responses"].setdefault("422", _error("422"))
    if public:
        op["security"] = []
    return op


def _paths() -> dict[str, Schema]:
    system = "/admin/system"
    one = (USER_ID,)
    return {
        "/healthz": {"get": _op("The process is alive", {"200": _ok("Alive")}, public=True)},
        "/readyz": {
            "get": _op(
                "The store is writable and the daemon is not shutting down",
                {"200": _ok("Ready"), "503": _ok("Ready", "not ready; detail says why")},
                public=True,
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {}}}},
                public=True,
                tag="meta",
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus text format (needs the token unless admin.metrics_public = true)",
                {
                    "200": {
                        "description": "the metrics",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
                tag="meta",
            )
        },
        "/admin/events": {
            "get": _op(
                "Live events over a WebSocket (ws://…/admin/events[?user_id=N]): one JSON "
                "object per message, first {'type': 'subscribed'}, then 'status', 'breaker' "
                "and 'lifecycle' transitions. A client that falls behind is closed with 1008; "
                "shutdown closes with 1001. A plain HTTP GET is answered 426.",
                {
                    "101": {"description": "switching to the WebSocket protocol"},
                    "426": {
                        "description": "a plain HTTP request: connect with a WebSocket",
                        "content": {"application/json": {"schema": _ref("Error")}},
                    },
                },
                params=(
                    {
                        "name": "user_id",
                        "in": "query",
                        "required": False,
                        "description": "only this bot's events",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID},
                    },
                ),
                tag="events",
            )
        },
        "/admin/bots": {
            "get": _op("Every bot, tokens redacted", {"200": _ok("BotList")}, tag="bots"),
            "post": _op(
                "Add a bot: its token is checked with getMe before it is stored; it starts at "
                "once and survives restarts",
                {"201": _ok("Bot", "added and started")},
                errors=("409", "422", "503"),
                body="NewBot",
                tag="bots",
            ),
        },
        "/admin/bots/{user_id}": {
            "get": _op("One bot", {"200": _ok("Bot")}, errors=("404",), params=one, tag="bots"),
            "delete": _op(
                "Stop the bot and unregister it; its health history is kept",
                {"200": _ok("Removed")},
                errors=("404",),
                params=one,
                tag="bots",
            ),
        },
        "/admin/bots/{user_id}/suspend": {
            "post": _op(
                "Stop the bot until it is resumed",
                {"200": _ok("Bot")},
                errors=("404", "409"),
                params=one,
                body="SuspendRequest",
                body_required=False,
                tag="bots",
            )
        },
        "/admin/bots/{user_id}/resume": {
            "post": _op(
                "Check the token with getMe again and start the bot",
                {"200": _ok("Bot")},
                errors=("404", "409", "422", "503"),
                params=one,
                tag="bots",
            )
        },
        f"{system}/bot-health/summary": {
            "get": _op("Fleet health totals", {"200": _ok("HealthSummary")})
        },
        f"{system}/bot-health/unhealthy": {
            "get": _op("Bots that are not healthy", {"200": _ok("UnhealthyBots")})
        },
        f"{system}/bot-health/unhealthy-history": {
            "get": _op(
                "Stored snapshots that were not healthy",
                {"200": _ok("UnhealthyHistory")},
                params=(HOURS,),
            )
        },
        f"{system}/bot-health/persist-now": {
            "post": _op("Write a health snapshot of every bot now", {"200": _ok("PersistNow")})
        },
        f"{system}/bot-health/history/{{user_id}}": {
            "get": _op(
                "One bot's stored snapshots",
                {"200": _ok("History")},
                errors=("404",),
                params=(USER_ID, HOURS),
            )
        },
        f"{system}/bot-health/{{user_id}}": {
            "get": _op("One bot's health", {"200": _ok("BotHealth")}, errors=("404",), params=one)
        },
        f"{system}/circuit-breakers/summary": {
            "get": _op("Breakers by state", {"200": _ok("BreakerSummary")})
        },
        f"{system}/circuit-breakers/{{user_id}}": {
            "get": _op("One bot's breaker", {"200": _ok("Breaker")}, errors=("404",), params=one)
        },
        f"{system}/circuit-breakers/{{user_id}}/reset": {
            "post": _op(
                "Close the bot's breaker", {"200": _ok("Breaker")}, errors=("404",), params=one
            )
        },
        f"{system}/retry-statistics": {
            "get": _op("Retry counters, overall and per bot", {"200": _ok("RetrySummary")})
        },
        f"{system}/retry-statistics/reset": {
            "post": _op("Zero every bot's retry counters", {"200": _ok("RetryReset")})
        },
    }


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the admin API."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "botvisor admin API",
            "version": "1",
            "description": "Every /admin route and /metrics need 'Authorization: Bearer "
            "<admin token>' (the token is in the variable named by admin.token_env). Errors "
            "are always {'error': {'code', 'message'}}. Requests are limited per client "
            "address (admin.ip_rate_limit): 429 with Retry-After.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_endpoint(request: Request) -> Response:
    spec: dict[str, Any] = request.app.state.openapi
    return JSONResponse(spec)
