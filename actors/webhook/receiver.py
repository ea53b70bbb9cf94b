"""The webhook receiver: a plain ASGI app that commits each delivery to the inbox before its 200.

``POST {webhook.path}/{user_id}`` with one update as JSON and the bot's secret in
``X-Telegram-Bot-Api-Secret-Token``; run as shard ``i``, ``POST {webhook.path}/s/{i}/{user_id}``
(the URL the shard registers; the unaddressed path still serves the bots it owns). Telegram
sends a chat's next update only after a 2xx, so answering 200 only once the update is
committed is what keeps a chat's order and loses nothing. The answers, and what Telegram
does with them:

=====  ======================================================  ================================
code   when                                                    Telegram
=====  ======================================================  ================================
200    stored (new) or already in the inbox (duplicate)        sends the chat's next update
400    not JSON, not an object, no integer ``update_id``       retries with a doubling delay
401    the secret header is missing or wrong (checked before   retries (someone else's request)
       whether the bot exists: no probing which bots exist)
404    not our path, not a user_id; no such bot (right secret) retries with a doubling delay
405    not POST                                                —
421    shard-addressed to another shard, or a bot another      retries with a doubling delay
       shard owns (nothing stored; checked before the secret:  (until the owner registers its
       who owns a user_id is no secret)                        URL)
413    body above ``webhook.max_body_bytes``                   retries with a doubling delay
429    the store's write queue is full                         retries after ``Retry-After``
503    the store failed or is closing                          retries after ``Retry-After``
=====  ======================================================  ================================

Never 410 (repeated, Telegram deletes the webhook) and never a 5xx without ``Retry-After``.
The 200 has no body: Telegram reads a JSON body of a 2xx as a Bot API call to make.

The hot path is lean on purpose (the issue's ingest target is within 1.5x of a bare ASGI app):
no framework, no pydantic, no per-request log line; every request is counted in
:class:`ReceiverStatistics` instead. Concurrent deliveries share the store writer's group
commit: each submits its one-row job and the writer commits whatever is queued together.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_left
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import trio

from actors.ids import user_id_problem
from actors.lanes import chat_key, key_chat_id, lane_name, usage_kind
from actors.secrets import redact
from actors.shard import Shard
from actors.webhook.ports import WebhookBots
from actors.webhook.secret import secret_matches
from storage import InboxEntry, Store, StoreClosedError, is_database_failure

__all__ = [
    "COMMIT_BUCKETS",
    "REJECTION_REASONS",
    "SECRET_HEADER",
    "ReceiverStatistics",
    "WebhookReceiver",
]

log = logging.getLogger("botvisor.webhook")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SECRET_HEADER = b"x-telegram-bot-api-secret-token"
# Why a delivery was refused, the label of the rejection counter (never a secret in it).
REJECTION_REASONS = (
    "not_found",  # not the webhook path, or not a user_id
    "method",  # not POST
    "unknown_bot",
    "misdirected",  # another shard's path, or a bot another shard owns: 421
    "bad_secret",
    "too_large",
    "bad_json",
    "overloaded",
    "store_failed",
)
# Upper bounds (seconds) of the commit-latency histogram's buckets; +Inf is implied.
COMMIT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_MAX_UPDATE_ID = 2**63 - 1


@dataclass(frozen=True)
class ReceiverStatistics:
    """The receiver's counters since start (for ``/metrics`` and tests)."""

    accepted_new: int  # committed now and handed to the bot
    accepted_duplicate: int  # already in the inbox: 200, nothing handed on
    rejected: dict[str, int]  # by reason, every one of REJECTION_REASONS present
    in_flight: int  # deliveries waiting for their commit now
    commit_buckets: tuple[int, ...]  # cumulative counts per COMMIT_BUCKETS bound, then +Inf
    commit_seconds_sum: float
    commit_count: int


# (status, headers, body); immutable, so the prepared answers below are shared safely.
Answer = tuple[int, tuple[tuple[bytes, bytes], ...], bytes]


def _plain(status: int, reason: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    body = reason + b"\n"
    headers = (
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    )
    return status, headers + extra, body


_OK: Answer = (200, ((b"content-length", b"0"),), b"")
_NOT_FOUND = _plain(404, b"not found")
_UNKNOWN_BOT = _plain(404, b"no bot with this user_id")
_NOT_ALLOWED = _plain(405, b"method not allowed: POST one update", ((b"allow", b"POST"),))
_BAD_SECRET = _plain(401, b"missing or wrong X-Telegram-Bot-Api-Secret-Token")


def _misdirected(shard: Shard, user_id: int) -> Answer:
    return _plain(
        421,
        f"misdirected: bot {user_id} belongs to shard {shard.owner(user_id)}, "
        f"not to this shard ({shard})".encode(),
    )


def _bad_json(reason: str) -> Answer:
    return _plain(400, reason.encode())


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    """The client went away before sending the whole body: nothing to store or answer."""


class WebhookReceiver:
    """The ASGI app of the webhook listener (see the module docstring for the answers).

    ``path`` is ``webhook.path`` (``"/tg"``, or ``""`` to serve ``/{user_id}``). The store is
    used only through ``inbox_add``; the fleet only through ``bots`` (:class:`WebhookBots`).
    """

    def __init__(
        self,
        *,
        bots: WebhookBots,
        store: Store,
        wall_clock: Callable[[], float],
        path: str = "",
        max_body_bytes: int = 1024 * 1024,
        overload_retry_after: int = 1,
        failure_retry_after: int = 10,
        shard: Shard | None = None,
    ) -> None:
        if path and (not path.startswith("/") or path.endswith("/")):
            raise ValueError(f"path must be '' or start with '/' and not end with it, got {path!r}")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
        for name, value in (
            ("overload_retry_after", overload_retry_after),
            ("failure_retry_after", failure_retry_after),
        ):
            if not 1 <= value <= 3600:
                raise ValueError(f"{name} must be from 1 to 3600 seconds, got {value}")
        self._bots = bots
        self._store = store
        self._wall_clock = wall_clock
        self._prefix = path + "/"
        self._shard = shard
        self._max_body = max_body_bytes
        self._overloaded = _plain(
            429,
            b"the store cannot keep up; retry later",
            ((b"retry-after", str(overload_retry_after).encode()),),
        )
        self._failed = _plain(
            503,
            b"the store cannot take updates now; retry later",
            ((b"retry-after", str(failure_retry_after).encode()),),
        )
        self._too_large = _plain(413, f"body above {max_body_bytes} bytes".encode())
        self._new = 0
        self._duplicate = 0
        self._rejected = dict.fromkeys(REJECTION_REASONS, 0)
        self._in_flight = 0
        self._buckets = [0] * (len(COMMIT_BUCKETS) + 1)
        self._commit_sum = 0.0

    def statistics(self) -> ReceiverStatistics:
        cumulative: list[int] = []
        running = 0
        for count in self._buckets:
            running += count
            cumulative.append(running)
        return ReceiverStatistics(
            accepted_new=self._new,
            accepted_duplicate=self._duplicate,
            rejected=dict(self._rejected),
            in_flight=self._in_flight,
            commit_buckets=tuple(cumulative),
            commit_seconds_sum=self._commit_sum,
            commit_count=running,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            status, headers, body = await self._answer(scope, receive)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        # Anything else (a WebSocket) is refused by closing: this listener takes POSTs only.

    def _reject(self, reason: str) -> None:
        self._rejected[reason] += 1

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        path: str = scope["path"]
        if not path.startswith(self._prefix):
            self._reject("not_found")
            return _NOT_FOUND
        raw_id = path[len(self._prefix) :]
        addressed: int | None = None
        if self._shard is not None and raw_id.startswith("s/"):
            index, slash, raw_id = raw_id[2:].partition("/")
            if not slash or not (index.isascii() and index.isdigit()) or len(index) > 6:
                self._reject("not_found")
                return _NOT_FOUND
            addressed = int(index)
        if user_id_problem(raw_id) is not None:
            self._reject("not_found")
            return _NOT_FOUND
        if scope["method"] != "POST":
            self._reject("method")
            return _NOT_ALLOWED
        user_id = int(raw_id)
        shard = self._shard
        if shard is not None and (
            (addressed is not None and addressed != shard.index) or not shard.owns(user_id)
        ):
            # Never 404 or 410 here: the bot exists, on another shard; Telegram retries a
            # 421 and reaches the owner once the owner has registered its URL.
            self._reject("misdirected")
            return _misdirected(shard, user_id)
        expected = self._bots.webhook_secret(user_id)
        if expected is None:
            # The secret is checked first even for no bot (against the one the master secret
            # would give it), so a caller without the secret cannot probe which bots exist.
            presented = dict(scope["headers"]).get(SECRET_HEADER)
            decoy = self._bots.webhook_decoy_secret(user_id)
            if not secret_matches(
                decoy, None if presented is None else presented.decode("latin-1")
            ):
                self._reject("bad_secret")
                return _BAD_SECRET
            self._reject("unknown_bot")
            return _UNKNOWN_BOT
        answer = await self._answer_bot(user_id, expected, scope, receive)
        # The tenant's usage: deliveries to its bot, accepted or not.
        self._bots.webhook_counted(user_id, answer[0] == 200)
        return answer

    async def _answer_bot(
        self, user_id: int, expected: str, scope: Scope, receive: Receive
    ) -> Answer:
        """A delivery to the known bot ``user_id`` whose secret is ``expected``."""
        presented: bytes | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == SECRET_HEADER:
                presented = value
            elif name == b"content-length":
                declared = value
        if not secret_matches(expected, None if presented is None else presented.decode("latin-1")):
            self._reject("bad_secret")
            return _BAD_SECRET
        # Checked on the text first: int() of a 5,000-digit header would raise.
        if declared is not None and (
            not declared.isdigit() or len(declared) > 12 or int(declared) > self._max_body
        ):
            self._reject("too_large")
            return self._too_large
        try:
            body = await self._read_body(receive)
        except _TooLarge:
            self._reject("too_large")
            return self._too_large
        except _Disconnected:
            self._reject("bad_json")
            return _bad_json("the body ended early")
        update, problem = _parse(body)
        if update is None:
            self._reject("bad_json")
            return _bad_json(problem)
        return await self._store_update(user_id, update)

    async def _read_body(self, receive: Receive) -> bytes:
        """The request body, stopping as soon as it exceeds the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _store_update(self, user_id: int, update: dict[str, Any]) -> Answer:
        key = chat_key(update)
        entry = InboxEntry(update, key_chat_id(key), lane_name(key), *usage_kind(update))
        received_at = self._wall_clock()
        started = trio.current_time()
        self._in_flight += 1
        try:
            new = await self._store.inbox_add(
                user_id, [entry], None, received_at, wait_for_room=False
            )
        except trio.WouldBlock:
            self._reject("overloaded")
            return self._overloaded
        except StoreClosedError:
            self._reject("store_failed")
            return self._failed
        except Exception as exc:
            self._reject("store_failed")
            if not is_database_failure(exc):
                # Not the file: a bug, or data SQLite refuses (an id beyond 64 bits). Told
                # once per delivery at WARNING, without the update (it may hold anything).
                log.warning(
                    "webhook delivery for bot %s not stored: %s: %s",
                    user_id,
                    type(exc).__name__,
                    redact(str(exc)),
                )
            return self._failed
        finally:
            self._in_flight -= 1
        elapsed = trio.current_time() - started
        self._buckets[bisect_left(COMMIT_BUCKETS, elapsed)] += 1
        self._commit_sum += elapsed
        if new:
            self._new += 1
            self._bots.webhook_stored(user_id, update, key, received_at, entry.kind)
        else:
            self._duplicate += 1
        return _OK


def _parse(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """The update in ``body``, or None and a short reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "the body is not UTF-8"
    try:
        update = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None, "the body is not JSON"
    if not isinstance(update, dict):
        return None, "the body is not a JSON object (one Update)"
    update_id = update.get("update_id")
    if (
        not isinstance(update_id, int)
        or isinstance(update_id, bool)
        or not 0 <= update_id <= _MAX_UPDATE_ID
    ):
        return None, "the update has no update_id that is a whole number from 0 to 2^63-1"
    return update, ""
