"""Handler modules come from ``[handlers] allowed_modules``, and only after getMe accepted the
token: the admin token alone cannot make the daemon import (run) arbitrary code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import HandlersConfig
from supervisor.daemon import setup_error
from tests.admin.helpers import admin_fleet
from tests.harness import bot_token

SIDE_EFFECT = "tests.handlers_with_side_effect"
ALLOWED = {"handlers": HandlersConfig(allowed_modules=("tests",))}
NONE_ALLOWED = {"handlers": HandlersConfig()}


@pytest.fixture
def not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, SIDE_EFFECT, raising=False)


async def test_a_refused_token_imports_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, not_imported: None
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1], config=ALLOWED) as admin:
        token = bot_token(7)  # never registered with Telegram: getMe answers 401
        refused = await admin.http.post(
            "/admin/bots", json={"user_id": 7, "token": token, "handler": f"{SIDE_EFFECT}:handle"}
        )
        assert refused.status_code == 422, refused.text
        assert "Telegram rejected the token" in refused.json()["error"]["message"]
        assert SIDE_EFFECT not in sys.modules
        assert await admin.fleet.handle.store.get_bot(7) is None

        admin.api.add_bot(token)
        added = await admin.http.post(
            "/admin/bots", json={"user_id": 7, "token": token, "handler": f"{SIDE_EFFECT}:handle"}
        )
        assert added.status_code == 201, added.text
        assert SIDE_EFFECT in sys.modules


async def test_a_module_outside_the_allowlist_is_refused_with_422_naming_the_key(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, not_imported: None
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1], config=NONE_ALLOWED) as admin:
        token = bot_token(7)
        admin.api.add_bot(token)
        calls = admin.api.statistics()
        refused = await admin.http.post(
            "/admin/bots", json={"user_id": 7, "token": token, "handler": f"{SIDE_EFFECT}:handle"}
        )
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]["message"]
        assert "handlers.allowed_modules" in message
        assert repr(SIDE_EFFECT) in message
        assert SIDE_EFFECT not in sys.modules
        # Refused before Telegram was asked, and nothing stored.
        assert admin.api.statistics() == calls
        assert await admin.fleet.handle.store.get_bot(7) is None


@pytest.mark.parametrize(
    ("allowed", "handler", "ok"),
    [
        (("tests",), f"{SIDE_EFFECT}:handle", True),
        (("tests.handlers_with_side_effect",), f"{SIDE_EFFECT}:handle", True),
        # Below an entry means below it in the package tree, not a longer name.
        (("tests.handlers",), f"{SIDE_EFFECT}:handle", False),
        (("other",), f"{SIDE_EFFECT}:handle", False),
        ((), "echo", True),
        ((), "autoreply", True),
    ],
)
async def test_an_allowed_module_equals_an_entry_or_is_below_it(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    allowed: tuple[str, ...],
    handler: str,
    ok: bool,
) -> None:
    config = {"handlers": HandlersConfig(allowed_modules=allowed)}
    async with admin_fleet(tmp_path / "a.db", [1], config=config) as admin:
        token = bot_token(7)
        admin.api.add_bot(token)
        response = await admin.http.post(
            "/admin/bots", json={"user_id": 7, "token": token, "handler": handler}
        )
        assert response.status_code == (201 if ok else 422), response.text


@pytest.mark.parametrize("handler", [".x:y", "..tests.handlers_for_tests:slow_echo", "a b:c", "x:"])
async def test_a_relative_or_malformed_path_is_a_422_naming_the_rule(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, handler: str
) -> None:
    async with admin_fleet(tmp_path / "a.db", [1], config=ALLOWED) as admin:
        token = bot_token(7)
        admin.api.add_bot(token)
        response = await admin.http.post(
            "/admin/bots", json={"user_id": 7, "token": token, "handler": handler}
        )
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        assert "handler must be 'echo', 'autoreply' or an absolute" in message, message


async def test_a_stored_api_bot_whose_module_is_no_longer_allowed_stops_the_start(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "a.db"
    token = bot_token(7)
    async with admin_fleet(db, [1], config=ALLOWED) as admin:
        admin.api.add_bot(token)
        added = await admin.http.post(
            "/admin/bots",
            json={"user_id": 7, "token": token, "handler": "tests.handlers_for_tests:slow_echo"},
        )
        assert added.status_code == 201, added.text
    with pytest.raises(Exception) as raised:
        async with admin_fleet(db, [1], config=NONE_ALLOWED):
            pass
    error = setup_error(raised.value)
    assert error is not None
    assert "user_id 7 (added through the admin API)" in str(error)
    assert "handlers.allowed_modules" in str(error)


async def test_a_stored_api_bot_whose_module_is_gone_stops_the_start_naming_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "tenant_handlers_x.py").write_text("async def handle(update, ctx):\n    pass\n")
    monkeypatch.syspath_prepend(str(modules))
    allowed = {"handlers": HandlersConfig(allowed_modules=("tenant_handlers_x",))}
    db = tmp_path / "a.db"
    async with admin_fleet(db, [1], config=allowed) as admin:
        token = bot_token(7)
        admin.api.add_bot(token)
        added = await admin.http.post(
            "/admin/bots",
            json={"user_id": 7, "token": token, "handler": "tenant_handlers_x:handle"},
        )
        assert added.status_code == 201, added.text
    (modules / "tenant_handlers_x.py").unlink()
    monkeypatch.delitem(sys.modules, "tenant_handlers_x")
    with pytest.raises(Exception) as raised:
        async with admin_fleet(db, [1], config=allowed):
            pass
    error = setup_error(raised.value)
    assert error is not None, raised.value
    assert str(error) == (
        "user_id 7 (added through the admin API): handler 'tenant_handlers_x:handle': "
        "cannot import module 'tenant_handlers_x': No module named 'tenant_handlers_x'"
    )
