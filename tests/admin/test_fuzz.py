"""A fuzz pass over every route of /openapi.json with the text a hostile client sends: lone
surrogates (as JSON escapes and as invalid UTF-8 in URLs), NUL, 5,000-digit numbers, numbers
beyond a float, bidi controls. No answer is a 5xx; a 5,000-digit user_id is a 422 in a path
and in the live events' WebSocket query.

Schemathesis (tests/admin/test_openapi.py) generates valid-looking data from the schemas; its
strings are always encodable, so these edge cases come from here: hypothesis strategies over
the same OpenAPI document, a bounded number of examples per operation (``EXAMPLES``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionRejected

from actors.simulator import SimulatedBotApi
from admin import openapi_spec
from supervisor.remote import open_event_stream
from tests.admin.helpers import ADMIN_TOKEN, AUTH, served
from tests.admin.test_openapi import app_routes
from tests.harness import bot_token, running_fleet

EXAMPLES = 40
HUGE = "9" * 5000

# Text for a path or query parameter: each is sent percent-encoded, lone surrogates as the
# bytes Python's surrogatepass gives them (invalid UTF-8 on the wire).
EDGE_TEXT = [
    "\ud800",
    "1\udfff",
    "\x00",
    "1\x00",
    HUGE,
    "-" + HUGE,
    "1e309",
    "NaN",
    "-1",
    "0",
    "",
    " ",
    "\u202e1",
    "😀",
    "\uffff",
    "%00",
    "1" * 20,
    "x" * 3000,
]
# JSON literals for a body field, written as text (json.dumps cannot write 5,000 digits).
EDGE_JSON = [
    json.dumps("\ud800"),
    json.dumps("ok \udfff"),
    json.dumps("\x00"),
    json.dumps("nul\x00inside"),
    json.dumps("\u202e"),
    json.dumps("x" * 70_000),
    HUGE,
    "-" + HUGE,
    "1" + "0" * 400 + ".5",
    "1e309",
    "-1e309",
    "1e-400",
    "9223372036854775808",
    "-0.0",
    "true",
    "null",
    "[]",
    "{}",
    '[{"contains": "\\ud800", "reply": "\\u0000"}]',
    '{"\\ud800": 1}',
]

VALID_TEXT = ["1", "2", "3", "4", "5", "24"]
VALID_JSON = ["9", '"echo"', '"autoreply"', '"a reason"', "5"]


def _encode(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    spec = openapi_spec(app_routes())
    found = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            found.append((method.upper(), path, operation))
    # Removing bots last, so that the other operations meet bots that exist.
    return sorted(found, key=lambda op: op[0] == "DELETE")


def _body_fields(operation: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    body = operation.get("requestBody")
    if not body:
        return []
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return sorted(schema.get("properties", {}))


def _send(
    client: httpx.Client,
    method: str,
    path: str,
    params: list[dict[str, Any]],
    values: dict[str, str],
    body: dict[str, str] | None,
) -> tuple[str, bytes | None, httpx.Response]:
    url = path
    query = []
    for p in params:
        encoded = _encode(values[p["name"]])
        if p["in"] == "path":
            url = url.replace("{" + p["name"] + "}", encoded or "1")
        else:
            query.append(f"{p['name']}={encoded}")
    if query:
        url += "?" + "&".join(query)
    content = None
    if body is not None:
        pairs = (f"{json.dumps(k)}: {v}" for k, v in body.items())
        content = ("{" + ", ".join(pairs) + "}").encode("ascii")
    headers = {"content-type": "application/json"}
    try:
        response = client.request(method, url, content=content, headers=headers)
    except httpx.RemoteProtocolError:
        # Hypercorn closes a keep-alive connection after its request limit without saying
        # so in the last response, and a request already sent on it then gets no answer. That
        # is the connection's end, not the route's: send it again on a fresh connection.
        response = client.request(method, url, content=content, headers=headers)
    return url, content, response


def fuzz(base_url: str, token: str) -> list[str]:
    """Every operation, EXAMPLES hostile requests each; the 5xx answers found."""
    spec = openapi_spec(app_routes())
    failures: list[str] = []
    with httpx.Client(base_url=base_url, headers=dict(AUTH), timeout=10) as client:
        for method, path, operation in _operations():
            if path == "/admin/events":
                continue  # a WebSocket: its handshake is tested below
            params = operation.get("parameters", [])
            fields = _body_fields(operation, spec)
            # Valid values too, so that one hostile field meets otherwise valid ones.
            # (one_of: half of the draws valid, half hostile)
            text = st.one_of(st.sampled_from(VALID_TEXT), st.sampled_from(EDGE_TEXT))
            values = st.fixed_dictionaries({p["name"]: text for p in params})
            keys = st.sampled_from(fields) if fields else st.nothing()
            bodies = st.dictionaries(
                # An unknown key (a 422 by itself) in a quarter of the draws.
                st.one_of(keys, keys, keys, st.sampled_from(["\ud800", "extra\x00"])),
                st.one_of(
                    st.sampled_from([*VALID_JSON, json.dumps(token)]), st.sampled_from(EDGE_JSON)
                ),
                max_size=len(fields),
            )
            failures += _fuzz_operation(client, method, path, params, values, bodies, fields)
    return failures


# A valid value for each body field, so that a sweep can make exactly one field hostile.
VALID_FIELDS = {"user_id": "9", "handler": '"echo"', "reason": '"a reason"', "rps": "5"}


def sweep(base_url: str, token: str) -> list[str]:
    """Every operation, every parameter and body field in turn hostile (each edge value),
    the others valid; the 5xx answers found. Deterministic: it always covers each pair."""
    spec = openapi_spec(app_routes())
    failures: list[str] = []
    with httpx.Client(base_url=base_url, headers=dict(AUTH), timeout=10) as client:
        for method, path, operation in _operations():
            if path == "/admin/events":
                continue
            params = operation.get("parameters", [])
            fields = _body_fields(operation, spec)
            valid_values = {p["name"]: "1" if p["in"] == "path" else "24" for p in params}
            valid_body = {f: VALID_FIELDS.get(f, json.dumps(token)) for f in fields}
            cases: list[tuple[dict[str, str], dict[str, str]]] = []
            for p in params:
                cases += [({**valid_values, p["name"]: v}, valid_body) for v in EDGE_TEXT]
            for f in fields:
                cases += [(valid_values, {**valid_body, f: v}) for v in EDGE_JSON]
            for values, body in cases:
                url, content, response = _send(
                    client, method, path, params, values, body if fields else None
                )
                if response.status_code >= 500:
                    failures.append(f"{method} {url[:200]} {content!r:.300} -> {response.text}")
    return failures


def _fuzz_operation(
    client: httpx.Client,
    method: str,
    path: str,
    params: list[dict[str, Any]],
    values: st.SearchStrategy[dict[str, str]],
    bodies: st.SearchStrategy[dict[str, str]],
    fields: list[str],
) -> list[str]:
    failures: list[str] = []

    @given(values=values, body=bodies)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(values: dict[str, str], body: dict[str, str]) -> None:
        url, content, response = _send(
            client, method, path, params, values, body if fields else None
        )
        if response.status_code >= 500:
            failures.append(f"{method} {url[:200]} {content!r:.300} -> {response.text}")

    check()
    return failures


async def test_hostile_text_on_every_route_never_gets_a_server_error(tmp_path: Path) -> None:
    api = SimulatedBotApi(rng=random.Random(1))
    api.add_bot(bot_token(9))
    configure = served(admin={"ip_rate_limit": "off"})
    with trio.fail_after(300):
        async with running_fleet(
            tmp_path / "f.db", [1, 2, 3, 4, 5], api=api, configure=configure
        ) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            failures = await trio.to_thread.run_sync(sweep, url, bot_token(9))
            failures += await trio.to_thread.run_sync(fuzz, url, bot_token(9))
            # The fleet still answers, and its listing is still valid UTF-8 JSON.
            async with httpx.AsyncClient(base_url=url, headers=dict(AUTH)) as client:
                listing = await client.get("/admin/bots")
    assert failures == [], "\n".join(failures[:20])
    assert listing.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        f"/admin/bots/{HUGE}",
        f"/admin/system/bot-health/{HUGE}",
        f"/admin/system/bot-health/history/{HUGE}",
        f"/admin/system/circuit-breakers/{HUGE}",
        f"/admin/system/bot-health/history/1?hours={HUGE}",
    ],
)
async def test_a_5000_digit_number_in_a_path_or_query_is_a_422(tmp_path: Path, path: str) -> None:
    configure = served()
    with trio.fail_after(60):
        async with running_fleet(tmp_path / "h.db", [1], configure=configure) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            async with httpx.AsyncClient(base_url=url, headers=dict(AUTH)) as client:
                response = await client.get(path)
    assert response.status_code == 422, response.text
    assert "must be a whole number" in response.json()["error"]["message"]


async def test_a_5000_digit_user_id_in_the_events_query_is_a_422(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_fleet(tmp_path / "w.db", [1], configure=served()) as fleet:
            url = fleet.handle.admin_url
            assert url is not None
            with pytest.raises(ConnectionRejected) as rejected:
                # The stream's user_id goes into the query as text: a 5,000-digit one.
                async with open_event_stream(url, ADMIN_TOKEN, cast(int, HUGE)):
                    pass
    assert rejected.value.status_code == 422
    assert rejected.value.body is not None
    assert "user_id must be a whole number" in json.loads(rejected.value.body)["error"]["message"]
