"""/openapi.json is valid OpenAPI, describes every route of the app and nothing else, and
every JSON answer matches its declared, closed schema (an undeclared key fails); a bounded
schemathesis run against the real server finds no 5xx and no answer that contradicts it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from actors.simulator import FaultProfile, SimulatedBotApi
from admin import openapi_spec
from tests import payloads
from tests.admin.helpers import AUTH, AdminFleet, admin_fleet, served
from tests.harness import bot_token, running_fleet

# Negative data is still sent (and must get a documented 4xx, never a 5xx); the
# negative_data_rejection check is left out because unknown query parameters are ignored by
# design, as most HTTP APIs do.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]
EXAMPLES_PER_OPERATION = 10


def app_routes() -> list[BaseRoute]:
    from admin.app import routes
    from admin.events import EventStreams

    return routes(EventStreams.__new__(EventStreams))


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = openapi_spec(app_routes())
    validate(spec)
    assert spec["openapi"] == "3.1.0"


def test_the_spec_describes_every_route_and_nothing_else() -> None:
    spec = openapi_spec(app_routes())
    described = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    served_routes = set()
    for route in app_routes():
        if isinstance(route, Route) and route.include_in_schema:
            for method in (route.methods or {"GET"}) - {"HEAD"}:
                served_routes.add((method, route.path))
        elif isinstance(route, WebSocketRoute):
            served_routes.add(("GET", route.path))
    assert described == served_routes
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            # Every operation documents its errors with the one error schema.
            for status in ("405", "429"):
                assert responses[status]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }, (method, path, status)
            if path.startswith("/admin"):
                assert "401" in responses, (method, path)
            if "{user_id}" in path:
                (user_id,) = [p for p in operation["parameters"] if p["in"] == "path"]
                assert user_id["schema"] == {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 2**63 - 1,
                    "x-rule": "be a whole number from 1 to 9223372036854775807",
                }, (method, path)
                assert "422" in responses


async def undeclared(request: Request) -> Response:
    return Response("")


def test_a_route_without_a_declaration_cannot_be_left_out_of_the_document() -> None:
    with pytest.raises(RuntimeError, match=r"/admin/new \(undeclared\) declares no operation"):
        openapi_spec([*app_routes(), Route("/admin/new", undeclared)])
    # A declared endpoint on a path with a parameter its declaration does not cover.
    from admin.app import persist_now

    with pytest.raises(RuntimeError, match=r"path parameters \['user_id'\]"):
        openapi_spec([Route("/admin/x/{user_id}", persist_now, methods=["POST"])])
    with pytest.raises(RuntimeError, match="WebSocket route /ws needs an HTTP GET"):
        openapi_spec([WebSocketRoute("/ws", undeclared)])


def test_every_object_schema_is_closed() -> None:
    schemas = openapi_spec(app_routes())["components"]["schemas"]

    def objects(schema: Any) -> list[dict[str, Any]]:
        if isinstance(schema, dict):
            found = [schema] if "properties" in schema else []
            return found + [o for value in schema.values() for o in objects(value)]
        if isinstance(schema, list):
            return [o for value in schema for o in objects(value)]
        return []

    # Every component is an enum or a record, and every record (nested ones too) is closed.
    assert all("enum" in schema or "properties" in schema for schema in schemas.values())
    assert all(o["additionalProperties"] is False for o in objects(schemas))


def json_schema(spec: dict[str, Any], method: str, template: str, status: int) -> Any:
    """The declared schema of one answer, resolvable against the document's components."""
    operation = spec["paths"][template][method.lower()]
    declared = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    return {**declared, "components": spec["components"]}


def assert_matches(spec: dict[str, Any], method: str, template: str, response: Any) -> None:
    schema = json_schema(spec, method, template, response.status_code)
    body = response.json()
    jsonschema.Draft202012Validator(schema).validate(body)
    # A key the record does not declare contradicts the document.
    with pytest.raises(jsonschema.ValidationError, match="undeclared"):
        jsonschema.Draft202012Validator(schema).validate({**body, "undeclared": 0})


async def troubled(admin: AdminFleet) -> None:
    """Bot 2's calls all fail until its breaker opens; bot 3's token is revoked."""
    api, tokens = admin.api, admin.fleet.tokens
    api.set_faults(FaultProfile(latency=0.05))
    for uid in (1, 2, 3):
        api.send_user_message(tokens[uid], 10 + uid, f"hi {uid}")
    await trio.sleep(5)
    api.revoke(tokens[3])
    api.set_faults(FaultProfile(error_rate_5xx=1.0, latency=0.05), token=tokens[2])
    api.send_user_message(tokens[2], 12, "still there?")
    await trio.sleep(20)


async def test_every_json_answer_matches_its_declared_closed_schema(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    system = "/admin/system"
    token = bot_token(7)
    async with admin_fleet(tmp_path / "a.db", [1, 2, 3]) as admin:
        spec = openapi_spec(admin.app.routes)
        await troubled(admin)
        admin.api.add_bot(token)
        await admin.fleet.handle.store.dead_letter(
            2, 5, 111, "the handler's sendMessage call failed", 1.0, update=payloads.message(5)
        )
        letters = "/admin/bots/{user_id}/dead-letters"
        # (method, documented path, requested path, body, expected status)
        requests: list[tuple[str, str, str, Any, int]] = [
            ("GET", "/healthz", "/healthz", None, 200),
            ("GET", "/readyz", "/readyz", None, 200),
            ("POST", f"{system}/bot-health/persist-now", "", None, 200),
            ("GET", f"{system}/bot-health/summary", "", None, 200),
            ("GET", f"{system}/bot-health/unhealthy", "", None, 200),
            ("GET", f"{system}/bot-health/{{user_id}}", f"{system}/bot-health/2", None, 200),
            ("GET", f"{system}/bot-health/{{user_id}}", f"{system}/bot-health/99", None, 404),
            ("GET", f"{system}/bot-health/{{user_id}}", f"{system}/bot-health/0", None, 422),
            (
                "GET",
                f"{system}/bot-health/history/{{user_id}}",
                f"{system}/bot-health/history/2?hours=1",
                None,
                200,
            ),
            (
                "GET",
                f"{system}/bot-health/unhealthy-history",
                f"{system}/bot-health/unhealthy-history?hours=168",
                None,
                200,
            ),
            ("GET", f"{system}/circuit-breakers/summary", "", None, 200),
            (
                "GET",
                f"{system}/circuit-breakers/{{user_id}}",
                f"{system}/circuit-breakers/2",
                None,
                200,
            ),
            (
                "POST",
                f"{system}/circuit-breakers/{{user_id}}/reset",
                f"{system}/circuit-breakers/2/reset",
                None,
                200,
            ),
            ("GET", f"{system}/retry-statistics", "", None, 200),
            ("POST", f"{system}/retry-statistics/reset", "", None, 200),
            ("GET", "/admin/bots", "", None, 200),
            ("POST", "/admin/bots", "", {"user_id": 7, "token": token, "rps": 2}, 201),
            ("POST", "/admin/bots", "", {"user_id": 7, "token": token}, 409),
            ("POST", "/admin/bots", "", {"user_id": 8, "token": token, "colour": 1}, 422),
            ("GET", "/admin/bots/{user_id}", "/admin/bots/7", None, 200),
            ("POST", "/admin/bots/{user_id}/suspend", "/admin/bots/7/suspend", {}, 200),
            ("POST", "/admin/bots/{user_id}/suspend", "/admin/bots/7/suspend", {}, 409),
            ("POST", "/admin/bots/{user_id}/resume", "/admin/bots/7/resume", None, 200),
            ("POST", "/admin/bots/{user_id}/mode", "/admin/bots/7/mode", {"mode": "polling"}, 200),
            ("POST", "/admin/bots/{user_id}/mode", "/admin/bots/7/mode", {"mode": "fax"}, 422),
            ("POST", "/admin/bots/{user_id}/mode", "/admin/bots/1/mode", {"mode": "polling"}, 409),
            ("POST", "/admin/bots/{user_id}/mode", "/admin/bots/99/mode", {"mode": "polling"}, 404),
            ("DELETE", "/admin/bots/{user_id}", "/admin/bots/7", None, 200),
            ("GET", letters, "/admin/bots/2/dead-letters?limit=1", None, 200),
            ("GET", letters, "/admin/bots/99/dead-letters", None, 404),
            ("GET", letters, "/admin/bots/2/dead-letters?cursor=x", None, 422),
            (
                "POST",
                f"{letters}/redrive",
                "/admin/bots/2/dead-letters/redrive",
                {"all": True},
                200,
            ),
            (
                "POST",
                f"{letters}/redrive",
                "/admin/bots/2/dead-letters/redrive",
                {"ids": [77]},
                200,
            ),
            ("POST", f"{letters}/redrive", "/admin/bots/2/dead-letters/redrive", {}, 422),
            (
                "POST",
                f"{letters}/discard",
                "/admin/bots/2/dead-letters/discard",
                {"all": True},
                200,
            ),
            ("GET", "/admin/events", "/admin/events", None, 426),
            ("GET", "/admin/analytics/usage", "", None, 200),
            ("GET", "/admin/analytics/usage", "/admin/analytics/usage?user_id=1", None, 200),
            ("GET", "/admin/analytics/usage", "/admin/analytics/usage?bucket=week", None, 422),
            (
                "GET",
                "/admin/analytics/usage",
                "/admin/analytics/usage?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
                None,
                422,
            ),
            ("GET", "/admin/analytics/top", "/admin/analytics/top?metric=sends", None, 200),
            ("GET", "/admin/analytics/top", "/admin/analytics/top?hours=0", None, 422),
        ]
        exercised = set()
        for method, template, path, body, status in requests:
            response = await admin.http.request(method, path or template, json=body)
            assert response.status_code == status, (method, path or template, response.text)
            assert_matches(spec, method, template, response)
            exercised.add((method.lower(), template))
        # The arrays held items, so their item schemas were checked too.
        unhealthy = await admin.http.get(f"{system}/bot-health/unhealthy")
        assert unhealthy.json()["count"] == 2
        history = await admin.http.get(f"{system}/bot-health/unhealthy-history")
        assert history.json()["count"] >= 1

    # Every operation that answers a JSON record was exercised here.
    with_records = {
        (method, path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if any(
            status.startswith("2") and "application/json" in reply.get("content", {})
            for status, reply in operation["responses"].items()
        )
        and path != "/openapi.json"
    }
    assert with_records <= exercised, sorted(with_records - exercised)


async def test_the_served_spec_is_the_spec(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        response = await admin.http.get("/openapi.json")
        assert response.status_code == 200
        assert response.json() == openapi_spec(admin.app.routes)


async def test_unknown_routes_and_methods_answer_the_error_shape(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        for method, path, status in [
            ("GET", "/nowhere", 404),
            ("DELETE", "/admin/bots", 405),
            ("GET", "/admin/system/bot-health/persist-now", 405),
            ("GET", "/admin/system/bot-health/history/1?hours=0", 422),
            ("GET", "/admin/system/bot-health/history/1?hours=abc", 422),
            ("GET", "/admin/system/bot-health/99", 404),
        ]:
            response = await admin.http.request(method, path)
            assert response.status_code == status, (method, path)
            body = response.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
            assert "Traceback" not in response.text


def run_schemathesis(base_url: str) -> list[str]:
    """Every operation, positive and negative data; returns the failures found."""
    schema = schemathesis.openapi.from_dict(openapi_spec(app_routes()))
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                response = case.call(base_url=base_url, headers=dict(AUTH), timeout=10)
                case.validate_response(response, checks=CHECKS, headers=dict(AUTH))

            try:
                check()
            except Unsatisfiable:
                pass  # negative data for an operation with no parameters and no body
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
    return failures


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    tmp_path: Path,
) -> None:
    api = SimulatedBotApi(rng=random.Random(1))
    configure = served(admin={"ip_rate_limit": "off"})
    with trio.fail_after(120):
        async with running_fleet(tmp_path / "s.db", [1, 2], api=api, configure=configure) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            failures = await trio.to_thread.run_sync(run_schemathesis, url)
    assert failures == [], "\n\n".join(failures)
