"""Test transports that sit between the bots and the simulated Bot API."""

from __future__ import annotations

import json
import re

import httpx
import trio

_METHOD = re.compile(r"/bot[^/]+/(\w+)$")


def method_of(request: httpx.Request) -> str:
    match = _METHOD.search(request.url.path)
    return match.group(1) if match else ""


class ShortPolls(httpx.AsyncBaseTransport):
    """A server that ignores getUpdates' ``timeout``: it holds a poll at most ``hold``
    seconds, then answers (``hold=0``: at once, after ``latency``). Counts the polls."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, *, hold: int = 0, latency: float = 0.0
    ) -> None:
        self.inner = inner
        self.hold = hold
        self.latency = latency
        self.polls: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if method_of(request) != "getUpdates":
            return await self.inner.handle_async_request(request)
        self.polls.append(trio.current_time())
        payload = json.loads(await request.aread() or b"{}")
        payload["timeout"] = min(int(payload.get("timeout", 0)), self.hold)
        await trio.sleep(self.latency)
        rewritten = httpx.Request("POST", request.url, json=payload, extensions=request.extensions)
        return await self.inner.handle_async_request(rewritten)


class FailingMethod(httpx.AsyncBaseTransport):
    """Answers ``status`` (a Bot API error body) to every call of ``methods`` while
    ``active``; the rest pass through."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        methods: set[str],
        *,
        status: int = 500,
        description: str = "Internal Server Error",
    ) -> None:
        self.inner = inner
        self.methods = methods
        self.status = status
        self.description = description
        self.active = True
        self.answered: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        method = method_of(request)
        if self.active and method in self.methods:
            self.answered.append(method)
            body = {"ok": False, "error_code": self.status, "description": self.description}
            return httpx.Response(self.status, content=json.dumps(body).encode(), request=request)
        return await self.inner.handle_async_request(request)
