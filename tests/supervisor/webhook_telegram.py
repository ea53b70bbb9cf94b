"""A Telegram that models webhooks for the fleet's tests: what it keeps, what it refuses.

Put between the daemon and the simulated API with ``running_fleet(wrap_transport=...)``.
Per bot (by the token's bot id) it keeps a webhook (``setWebhook``/``deleteWebhook``/
``getWebhookInfo``) and the updates still pending at Telegram: ``getUpdates`` serves those
while no webhook is set and answers 409 while one is, as the Bot API does; ``deleteWebhook``
without ``drop_pending_updates`` keeps them. ``getMe`` goes to the simulator; every call is
recorded; ``sendMessage`` answers a plausible Message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from tests.payloads import DATE

__all__ = ["BotCall", "WebhookTelegram"]

_PATH = re.compile(r"/bot(\d+):[^/]+/(\w+)$")
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)


@dataclass(frozen=True)
class BotCall:
    bot_id: int
    method: str
    params: dict[str, Any]
    at: float


@dataclass
class _Bot:
    webhook: dict[str, Any] | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)
    # What getWebhookInfo reports of the last failed delivery (unix date, message).
    last_error: tuple[int, str] | None = None


class WebhookTelegram(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.calls: list[BotCall] = []
        self.bots: dict[int, _Bot] = {}
        self._inner: httpx.AsyncBaseTransport | None = None
        self._message_id = 1000

    def wrap(self, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        self._inner = inner
        return self

    def bot(self, bot_id: int) -> _Bot:
        return self.bots.setdefault(bot_id, _Bot())

    def keep(self, bot_id: int, *updates: dict[str, Any]) -> None:
        """Updates Telegram holds for the bot (served by getUpdates once no webhook is set)."""
        state = self.bot(bot_id)
        state.pending.extend(updates)
        state.arrived.set()

    def methods(self, bot_id: int | None = None) -> list[str]:
        """The Bot API methods called (of one bot, or of all), getMe left out, in order."""
        return [
            c.method
            for c in self.calls
            if c.method != "getMe" and (bot_id is None or c.bot_id == bot_id)
        ]

    def sent(self) -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.method == "sendMessage"]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        match = _PATH.search(request.url.path)
        assert match is not None, request.url.path
        bot_id, method = int(match.group(1)), match.group(2)
        if method == "getMe":
            assert self._inner is not None, "wrap() the simulated transport first"
            return await self._inner.handle_async_request(request)
        params: dict[str, Any] = json.loads(await request.aread() or b"{}")
        self.calls.append(BotCall(bot_id, method, params, trio.current_time()))
        state = self.bot(bot_id)
        if method == "getUpdates":
            if state.webhook is not None:
                body = {"ok": False, "error_code": 409, "description": WEBHOOK_CONFLICT}
                return httpx.Response(409, json=body, request=request)
            return await self._get_updates(request, state, params)
        result: Any = True
        if method == "setWebhook":
            state.webhook = params
        elif method == "deleteWebhook":
            state.webhook = None
            if params.get("drop_pending_updates"):
                state.pending.clear()
        elif method == "getWebhookInfo":
            result = {
                "url": "" if state.webhook is None else state.webhook["url"],
                "has_custom_certificate": False,
                "pending_update_count": len(state.pending),
            }
            if state.last_error is not None:
                result["last_error_date"], result["last_error_message"] = state.last_error
        elif method == "sendMessage":
            self._message_id += 1
            chat_id = params.get("chat_id")
            result = {
                "message_id": self._message_id,
                "from": {"id": bot_id, "is_bot": True, "first_name": "Bot"},
                "chat": {"id": chat_id, "type": "private"},
                "date": DATE,
                "text": params.get("text"),
            }
        return httpx.Response(200, json={"ok": True, "result": result}, request=request)

    async def _get_updates(
        self, request: httpx.Request, state: _Bot, params: dict[str, Any]
    ) -> httpx.Response:
        offset = params.get("offset")
        if isinstance(offset, int):
            state.pending = [u for u in state.pending if int(u["update_id"]) >= offset]
        if not state.pending:
            state.arrived = trio.Event()
            with trio.move_on_after(float(params.get("timeout") or 0)):
                await state.arrived.wait()
        result = state.pending[: int(params.get("limit") or 100)]
        return httpx.Response(200, json={"ok": True, "result": result}, request=request)
