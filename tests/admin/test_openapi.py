"""/openapi.json describes every route, and a bounded schemathesis run against the real
server finds no 5xx and no answer that contradicts the spec."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import schemathesis
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
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
from starlette.routing import Route, WebSocketRoute

from actors.simulator import SimulatedBotApi
from admin import openapi_spec
from tests.admin.helpers import AUTH, admin_fleet, served
from tests.harness import running_fleet

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


def test_the_spec_describes_every_route_and_nothing_else() -> None:
    from admin.app import routes
    from admin.events import EventStreams

    spec = openapi_spec()
    described = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    served_routes = set()
    for route in routes(EventStreams.__new__(EventStreams)):
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
                    "$ref": "#/components/schemas/Error"
                }, (method, path, status)
            if path.startswith("/admin"):
                assert "401" in responses, (method, path)


async def test_the_served_spec_is_the_spec(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1]) as admin:
        response = await admin.http.get("/openapi.json")
        assert response.status_code == 200
        assert response.json() == openapi_spec()


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
    schema = schemathesis.openapi.from_dict(openapi_spec())
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
