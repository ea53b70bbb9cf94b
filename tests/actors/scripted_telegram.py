"""A Telegram that sends the realistic updates of ``tests.payloads`` and records every call.

Put between the daemon and the simulated API with ``running_fleet(wrap_transport=...)``:
``getUpdates`` serves the updates a test pushes (confirmed by offset, long-polled on the
test's clock); ``getMe`` and the webhook methods go to the simulator; every other call is
recorded and answered by ``answer`` (a Telegram error body from ``tests.payloads``) or, by
default, with a plausible success, so rules are checked against Telegram's shapes rather
than against what the simulator happens to know.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from tests.payloads import DATE

__all__ = ["Call", "ScriptedTelegram"]

_SIMULATED = {"getMe", "deleteWebhook", "getWebhookInfo"}

Answer = Callable[[str, dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]


class ScriptedTelegram(httpx.AsyncBaseTransport):
    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer
        self.calls: list[Call] = []
        self._queue: list[dict[str, Any]] = []
        self._arrived = trio.Event()
        self._inner: httpx.AsyncBaseTransport | None = None
        self._message_id = 1000

    def wrap(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        self._inner = inner
        return self

    def push(self, *updates: dict[str, Any]) -> None:
        """Updates for the bot's next getUpdates."""
        self._queue.extend(updates)
        self._arrived.set()

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        """The parameters of every call of ``method``, in order."""
        return [call.params for call in self.calls if call.method == method]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        method = request.url.path.rsplit("/", 1)[-1]
        if method in _SIMULATED:
            assert self._inner is not None, "wrap() the simulated transport first"
            return await self._inner.handle_async_request(request)
        params: dict[str, Any] = json.loads(await request.aread() or b"{}")
        if method == "getUpdates":
            return await self._get_updates(request, params)
        self.calls.append(Call(method, params))
        body = self.answer(method, params) if self.answer is not None else None
        if body is None:
            body = {"ok": True, "result": self._result(method, params)}
        status = 200 if body.get("ok") else int(body.get("error_code") or 500)
        return httpx.Response(status, json=body, request=request)

    async def _get_updates(self, request: httpx.Request, params: dict[str, Any]) -> httpx.Response:
        offset = params.get("offset")
        if isinstance(offset, int):
            self._queue = [u for u in self._queue if int(u["update_id"]) >= offset]
        if not self._queue:
            self._arrived = trio.Event()
            with trio.move_on_after(float(params.get("timeout") or 0)):
                await self._arrived.wait()
        result = self._queue[: int(params.get("limit") or 100)]
        return httpx.Response(200, json={"ok": True, "result": result}, request=request)

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method != "sendMessage":
            return True
        self._message_id += 1
        chat_id = params.get("chat_id")
        return {
            "message_id": self._message_id,
            "from": {"id": 999_000_111, "is_bot": True, "first_name": "Bot"},
            "chat": {"id": chat_id, "type": "private" if int(chat_id or 0) > 0 else "supergroup"},
            "date": DATE,
            "text": params.get("text"),
        }
