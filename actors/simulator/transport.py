"""An httpx transport that answers from a :class:`SimulatedBotApi` in process, on Trio time.

No sockets and no ASGI: the request's path and parameters go straight to ``api.handle``.
Faults become what httpx raises against a real server, so the client's error mapping is the
one it uses in production:

=================  ==============================================================
fault              the client sees
=================  ==============================================================
connect error      ``httpx.ConnectError`` at once (nothing was sent)
gateway page       HTTP 502 with an HTML body
timeout            ``httpx.ReadTimeout`` exactly when the request's read timeout ends
drop               ``httpx.RemoteProtocolError`` (server disconnected, no response)
=================  ==============================================================

The read timeout (``request.extensions["timeout"]["read"]``) also bounds a slow answer or a
long poll longer than it, as a socket's would.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

import httpx
import trio

from actors.simulator.api import SimulatedBotApi
from actors.simulator.faults import FaultKind, SimulatedFault
from actors.simulator.protocol import InputFile

__all__ = ["BAD_GATEWAY_PAGE", "SimulatedTransport", "parse_params"]

_PATH = re.compile(r"/bot([^/]+)/([^/]+)/?$")
BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_JSON = {"content-type": "application/json"}
_NOT_FOUND = json.dumps({"ok": False, "error_code": 404, "description": "Not Found"}).encode()


def parse_params(query: list[tuple[str, str]], content_type: str, body: bytes) -> dict[str, Any]:
    """A Bot API call's parameters from its query string and a JSON, form or
    multipart/form-data body (an uploaded file's part becomes an :class:`InputFile`).

    Raises ValueError when the body cannot be parsed.
    """
    params: dict[str, Any] = dict(query)
    if body:
        if content_type.startswith("application/json"):
            decoded = json.loads(body)
            if not isinstance(decoded, dict):
                raise ValueError("a JSON body must be an object")
            params.update(decoded)
        elif content_type.startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        elif content_type.startswith("multipart/form-data"):
            params.update(_multipart(content_type, body))
    return params


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """The fields of a multipart/form-data body: text, or an InputFile for a file's part."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not parsed.is_multipart():
        raise ValueError("a multipart/form-data body without its boundary")
    fields: dict[str, Any] = {}
    for part in parsed.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("a multipart part without a name")
        content = part.get_payload(decode=True)
        content = content if isinstance(content, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            fields[name] = InputFile(filename, part.get_content_type(), content)
        else:
            fields[name] = content.decode("utf-8")
    return fields


class SimulatedTransport(httpx.AsyncBaseTransport):
    """Route httpx requests to ``api.handle``; hand one to ``make_http_client(transport=...)``."""

    def __init__(self, api: SimulatedBotApi) -> None:
        self._api = api

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        read_timeout = timeouts.get("read")
        deadline = trio.current_time() + read_timeout if read_timeout is not None else None
        match = _PATH.search(request.url.path)
        if match is None:
            return httpx.Response(404, headers=_JSON, content=_NOT_FOUND, request=request)
        token, method = match.groups()
        body = await request.aread()
        try:
            query = request.url.params.multi_items() if request.url.query else []
            params = parse_params(query, request.headers.get("content-type", ""), body)
        except ValueError:
            return _json(request, 400, "Bad Request: can't parse request body")
        with trio.move_on_at(deadline if deadline is not None else float("inf")):
            try:
                status, answer = await self._api.handle(token, method, params)
            except SimulatedFault as fault:
                if fault.kind is FaultKind.CONNECT_ERROR:
                    raise httpx.ConnectError(
                        "[Errno 111] Connection refused", request=request
                    ) from None
                if fault.kind is FaultKind.BAD_GATEWAY:
                    return httpx.Response(
                        502,
                        headers={"content-type": "text/html"},
                        content=BAD_GATEWAY_PAGE,
                        request=request,
                    )
                if fault.kind is FaultKind.DROP:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    ) from None
                await trio.sleep_forever()  # TIMEOUT: the server holds the request
            return httpx.Response(
                status, headers=_JSON, content=json.dumps(answer).encode(), request=request
            )
        raise httpx.ReadTimeout("The read operation timed out", request=request)


def _json(request: httpx.Request, status: int, description: str) -> httpx.Response:
    content = json.dumps({"ok": False, "error_code": status, "description": description})
    return httpx.Response(status, headers=_JSON, content=content.encode(), request=request)
