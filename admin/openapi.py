"""``GET /openapi.json``: the admin API's OpenAPI 3.1 document, generated.

Paths come from the app's routing table and each endpoint's ``@operation`` declaration;
components are the JSON Schemas of the request and response models (``admin.requests``,
``admin.records``). A route whose endpoint declares nothing, or whose path parameters its
declaration does not cover, makes generation fail, so the app cannot start with a route the
document leaves out. Every object schema is closed (``additionalProperties: false``): an
answer carrying a key its record does not declare contradicts the document.

OpenAPI 3.1 because its schemas are JSON Schema 2020-12, which is what pydantic generates
(``null`` as a type); 3.0 would need every optional field rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from admin.operations import Operation, Reply, operation, operation_of
from admin.records import ErrorBody, MisdirectedBody

__all__ = ["OPENAPI_VERSION", "openapi_endpoint", "openapi_spec"]

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"

Schema = dict[str, Any]

_ERRORS = {
    401: "no or wrong 'Authorization: Bearer <admin token>'",
    404: "no such bot",
    405: "the method is not allowed on this path",
    409: "the request conflicts with the bot's state",
    413: "the request body is larger than 64 KiB",
    421: "the bot belongs to another shard, which the body's owner_shard names (run sharded)",
    422: "the request is invalid; the message says what to fix",
    426: "a plain HTTP request: connect with a WebSocket",
    429: "too many requests from this address; see Retry-After",
    503: "a dependency (Telegram, the store) cannot answer now",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before the next request",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _ref(model: type[BaseModel]) -> Schema:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _declared(route: BaseRoute) -> Iterator[tuple[str, str, Operation]]:
    """(path, method, operation) of each HTTP operation the route serves."""
    if not isinstance(route, Route):
        raise RuntimeError(f"the OpenAPI document cannot describe the route {route!r}")
    declared = operation_of(route.endpoint)
    if declared is None:
        raise RuntimeError(
            f"the route {route.path} ({route.endpoint.__name__}) declares no operation: "
            "decorate its endpoint with @operation"
        )
    params = set(route.param_convertors)
    covered = set(declared.path.model_fields) if declared.path is not None else set()
    if params != covered:
        raise RuntimeError(
            f"the route {route.path} has the path parameters {sorted(params)} but its "
            f"operation declares {sorted(covered)}"
        )
    for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
        yield route.path, method.lower(), declared


def _closed(schema: Any) -> None:
    """Close every object schema that lists its properties (maps keep their value schema)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)


def _components(operations: Iterable[Operation]) -> Schema:
    models: dict[type[BaseModel], JsonSchemaMode] = {
        ErrorBody: "serialization",
        MisdirectedBody: "serialization",
    }
    for declared in operations:
        if declared.body is not None:
            models[declared.body] = "validation"
        for reply in declared.replies.values():
            if reply.record is not None:
                models[reply.record] = "serialization"
    _, schema = models_json_schema(list(models.items()), ref_template=REF_TEMPLATE)
    components: Schema = schema.get("$defs", {})
    _closed(components)
    return dict(sorted(components.items()))


def _parameters(model: type[BaseModel], where: Literal["path", "query"]) -> list[Schema]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = {key: value for key, value in prop.items() if key != "title"}
        description = prop.pop("description", None)
        if name not in required and "anyOf" in prop:
            # An optional parameter is absent, never null: document only its real type.
            kinds = [kind for kind in prop.pop("anyOf") if kind != {"type": "null"}]
            (kind,) = kinds
            prop = {**kind, **{k: v for k, v in prop.items() if k != "default"}}
        parameter: Schema = {"name": name, "in": where, "required": name in required}
        if description is not None:
            parameter["description"] = description
        parameter["schema"] = prop
        parameters.append(parameter)
    return parameters


def _error(status: int) -> Schema:
    response: Schema = {
        "description": _ERRORS[status],
        "content": {
            "application/json": {"schema": _ref(MisdirectedBody if status == 421 else ErrorBody)}
        },
    }
    if status == 429:
        response["headers"] = _RETRY_AFTER
    return response


def _reply(reply: Reply) -> Schema:
    response: Schema = {"description": reply.description}
    if reply.record is not None:
        response["content"] = {"application/json": {"schema": _ref(reply.record)}}
    elif reply.media_type is not None:
        response["content"] = {reply.media_type: {"schema": dict(reply.schema or {})}}
    return response


def _operation(declared: Operation) -> Schema:
    statuses = {405, 429, *declared.errors}
    if not declared.public:
        statuses.add(401)
    if declared.path is not None or declared.query is not None or declared.body is not None:
        statuses.add(422)
    if declared.body is not None:
        statuses.add(413)
    if declared.path is not None and "user_id" in declared.path.model_fields:
        statuses.add(421)  # a sharded daemon answers for its own bots only
    responses = {str(status): _reply(reply) for status, reply in sorted(declared.replies.items())}
    for status in sorted(statuses - set(declared.replies)):
        responses[str(status)] = _error(status)
    op: Schema = {"summary": declared.summary, "tags": [declared.tag], "responses": responses}
    parameters = [
        *(_parameters(declared.path, "path") if declared.path is not None else []),
        *(_parameters(declared.query, "query") if declared.query is not None else []),
    ]
    if parameters:
        op["parameters"] = parameters
    if declared.body is not None:
        op["requestBody"] = {
            "required": declared.body_required,
            "content": {"application/json": {"schema": _ref(declared.body)}},
        }
    if declared.public:
        op["security"] = []
    return op


def openapi_spec(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app serving ``routes`` (raises ``RuntimeError`` for
    a route it cannot describe)."""
    paths: dict[str, dict[str, Schema]] = {}
    operations: list[Operation] = []
    websockets: list[str] = []
    for route in routes:
        if isinstance(route, WebSocketRoute):
            websockets.append(route.path)
            continue
        if isinstance(route, Route) and not route.include_in_schema:
            continue
        for path, method, declared in _declared(route):
            paths.setdefault(path, {})[method] = _operation(declared)
            operations.append(declared)
    for path in websockets:
        # OpenAPI has no WebSocket operations: the handshake is the path's documented GET.
        if "get" not in paths.get(path, {}):
            raise RuntimeError(
                f"the WebSocket route {path} needs an HTTP GET route on the same path "
                "whose operation documents it"
            )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "botvisor admin API",
            "version": "1",
            "description": "Every /admin route and /metrics need 'Authorization: Bearer "
            "<admin token>' (the token is in the variable named by admin.token_env). Errors "
            "are always {'error': {'code', 'message'}}. Requests are limited per client "
            "address (admin.ip_rate_limit): 429 with Retry-After.",
        },
        "paths": paths,
        "components": {
            "schemas": _components(operations),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


@operation(
    "This document",
    {
        200: Reply(
            f"OpenAPI {OPENAPI_VERSION}",
            media_type="application/json",
            schema={"type": "object"},
        )
    },
    public=True,
    tag="meta",
)
async def openapi_endpoint(request: Request) -> Response:
    spec: dict[str, Any] = request.app.state.openapi
    return JSONResponse(spec)
