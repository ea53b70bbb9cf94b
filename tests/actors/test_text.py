"""Text from Telegram holding lone surrogates is stored and shown with U+FFFD in their place;
a surrogate pair is one real character and stays."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from actors import redact
from actors.botapi import TelegramError
from actors.text import surrogate_locations, valid_data, valid_text
from storage import InboxEntry, Store, run_inline
from tests import payloads
from tests.actors.botapi.test_client import mock_client


def _raw(body: str) -> httpx.Response:
    # A body with JSON escapes written by hand: httpx's json= would refuse the surrogate.
    return httpx.Response(200, content=body.encode(), headers={"content-type": "application/json"})


async def test_an_update_with_a_lone_surrogate_is_stored_with_a_replacement(
    tmp_path: Path,
) -> None:
    update = payloads.message(7, text="PLACEHOLDER")
    body = json.dumps({"ok": True, "result": [update]}).replace(
        "PLACEHOLDER", "bad \\ud800 good \\ud83d\\ude00"
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        return _raw(body)

    async with mock_client(handler) as client:
        updates = await client.get_updates(offset=None, timeout=0)
    text = updates[0]["message"]["text"]
    assert text == "bad \ufffd good \U0001f600"
    text.encode("utf-8")  # valid

    store = Store(tmp_path / "t.db", offload=run_inline)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        new = await store.inbox_add(1, [InboxEntry(update=u, chat_id=111) for u in updates], 8, 0.0)
        assert new == [7]
        pending = await store.inbox_pending(1)
        await store.stop()
    assert pending[0]["update"]["message"]["text"] == "bad \ufffd good \U0001f600"


async def test_an_error_description_with_a_lone_surrogate_is_valid_text() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            content=b'{"ok":false,"error_code":400,"description":"Bad Request: \\udfff here"}',
            headers={"content-type": "application/json"},
        )

    async with mock_client(handler) as client:
        with pytest.raises(TelegramError) as caught:
            await client.call("sendMessage", {"chat_id": 1, "text": "x"})
    assert caught.value.description == "Bad Request: \ufffd here"
    str(caught.value).encode("utf-8")


def test_redact_makes_any_text_valid_for_logs_and_storage() -> None:
    assert redact("handler raised ValueError: \ud800!") == "handler raised ValueError: \ufffd!"


def test_helpers() -> None:
    assert valid_text("plain") == "plain"
    assert valid_data({"a\udc80": ["\ud800", 1, None]}) == {"a\ufffd": ["\ufffd", 1, None]}
    assert surrogate_locations({"x": [{"y": "ok"}, {"y": "\ud800"}]}) == [(("x", 1, "y"), 0xD800)]
