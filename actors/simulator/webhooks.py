"""Webhooks of the simulated Bot API: setWebhook, deleteWebhook, getWebhookInfo and the pusher.

Modelled on the real server (tdlib/telegram-bot-api, ``WebhookActor``):

- setWebhook validates as Telegram does: an empty ``url`` removes the webhook; a URL must be
  ``https`` on port 80, 88, 443 or 8443 (400 "bad webhook: ..."), except that the simulator
  also accepts ``http`` and any port on a loopback host (127.0.0.1, ::1, localhost), where
  tests and the demo run their receivers. ``secret_token`` is up to 256 characters of
  ``A-Za-z0-9_-`` (empty: none). ``max_connections`` is clamped to 1-100 (default 40), as
  Telegram clamps it. ``certificate`` must be an uploaded file (multipart/form-data, or
  ``attach://<name>`` naming one) holding a PEM certificate, which OpenSSL must load (400
  "bad webhook: ..." otherwise); a certificate given as text is not a file and is ignored, as
  the Bot API reads only uploads. getWebhookInfo then shows ``has_custom_certificate``, and
  with ``push(trust_uploaded_certificates=True)`` deliveries to that webhook go over TLS
  trusting that certificate alone, as Telegram trusts a self-signed one. ``allowed_updates``
  becomes the bot's kept setting, as getUpdates' does. Setting the same webhook again answers
  "Webhook is already set".
- Updates are queued per chat; member and join-request updates of one user share a queue,
  callback and inline queries are queued per user, updates with no such key each get their
  own (:func:`queue_key`). At most ``max_connections`` deliveries of a bot are in flight, and
  a queue's next update is sent only after its previous one was answered 2xx.
- A delivery is one POST of one update as JSON, with ``X-Telegram-Bot-Api-Secret-Token`` when
  a secret is set, through the ``httpx.AsyncClient`` handed to
  :meth:`WebhookHub.push` (in tests an in-process transport, in the demo a real one).
- A failure (a non-2xx answer, a connection error, no answer within
  :data:`DELIVERY_TIMEOUT`) is retried: the first at once, then after 2, 4, 8, ... seconds,
  the doubling capped at a random 60-120 s (:func:`next_retry`); an answer's ``Retry-After``
  (capped at 3600 s) replaces the wait. An update whose next try would fall more than 24 h
  after it was made (a message's date, else when it was queued) is dropped. Connection errors
  are treated as failed deliveries of the update (Telegram throttles new connections instead;
  the schedule is the same for a receiver that stays down).
- The last failure (its date and a message such as "Wrong response from the webhook: 503
  Service Unavailable" or "Connection refused") is kept for getWebhookInfo;
  ``pending_update_count`` counts updates not yet answered 2xx (nor dropped).
- 410 Gone answered again and again for 23 hours (no other answer in between) removes the
  webhook, as Telegram does; its pending updates stay for getUpdates.
- While the simulated Bot API is in an outage (:meth:`SimulatedBotApi.outage`) nothing is
  pushed; the bot's fault profile applies to its own calls (setWebhook, getWebhookInfo...),
  not to deliveries, whose failures come from the receiver's answers.

An update answered 2xx counts as confirmed, exactly like an update a getUpdates offset
confirms, so :meth:`SimulatedBotApi.report` works for webhook bots unchanged.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import json
import math
import random
import re
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from actors.simulator.bots import (
    DEFAULT_ALLOWED_UPDATES,
    UPDATE_TYPES,
    RawUpdate,
    SimBot,
    SimUpdate,
)
from actors.simulator.protocol import (
    BadRequest,
    InputFile,
    Response,
    error,
    int_param,
    render_update,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DELIVERY_TIMEOUT",
    "MAX_RETRY_AFTER",
    "UPDATE_LIFETIME",
    "WEBHOOK_DROP_TIMEOUT",
    "WEBHOOK_MAX_RESEND_TIMEOUT",
    "Webhook",
    "WebhookHub",
    "WebhookStatistics",
    "next_retry",
    "parse_allowed_updates",
    "queue_key",
]

DEFAULT_MAX_CONNECTIONS = 40
MAX_CONNECTIONS = 100
MAX_SECRET = 256
WEBHOOK_MAX_RESEND_TIMEOUT = 60  # the doubling stops at a random 60-120 s
MAX_RETRY_AFTER = 3600
UPDATE_LIFETIME = 86_400  # seconds after its date an update is dropped
WEBHOOK_DROP_TIMEOUT = 23 * 3600  # 410 answered this long removes the webhook
DELIVERY_TIMEOUT = 60.0  # a delivery not answered by then failed
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_SECRET = re.compile(r"[A-Za-z0-9_-]*")
_PORTS = frozenset({80, 88, 443, 8443})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_BAD_WEBHOOK = "Bad Request: bad webhook: "
_TRUE = (True, "true", "True", "1", 1)

QueueKey = tuple[str, int]


def parse_allowed_updates(params: Mapping[str, Any]) -> frozenset[str] | None:
    """The ``allowed_updates`` a call names (None: it names none), as Telegram reads it:
    unknown names are ignored and an empty choice means the default."""
    allowed = params.get("allowed_updates")
    if isinstance(allowed, str):
        if not allowed:
            return None
        try:
            allowed = json.loads(allowed)
        except ValueError:
            raise BadRequest("Bad Request: can't parse allowed_updates JSON array") from None
    if allowed is None:
        return None
    if not isinstance(allowed, list):
        raise BadRequest("Bad Request: allowed_updates must be an Array")
    chosen = frozenset(k for k in allowed if isinstance(k, str)) & set(UPDATE_TYPES)
    return chosen or DEFAULT_ALLOWED_UPDATES


def _user_of(payload: Mapping[str, Any], field: str = "from") -> int | None:
    user = payload.get(field)
    value = user.get("id") if isinstance(user, Mapping) else None
    return value if isinstance(value, int) else None


def _chat_of(payload: Mapping[str, Any]) -> int | None:
    return _user_of(payload, "chat")


# Update type -> (queue family, where its key is), after Telegram's webhook_queue_id.
_KEYED_BY: Mapping[str, tuple[str, Callable[[Mapping[str, Any]], int | None]]] = {
    "message": ("chat", _chat_of),
    "edited_message": ("chat", _chat_of),
    "channel_post": ("chat", _chat_of),
    "edited_channel_post": ("chat", _chat_of),
    "business_message": ("business", _chat_of),
    "edited_business_message": ("business", _chat_of),
    "deleted_business_messages": ("business", _chat_of),
    "business_connection": ("business_connection", lambda p: _user_of(p, "user")),
    "my_chat_member": ("my_member", _chat_of),
    # A member change and a join request of the same user share one queue.
    "chat_member": ("member", lambda p: _user_of(p.get("new_chat_member") or {}, "user")),
    "chat_join_request": ("member", _user_of),
    "callback_query": ("callback", _user_of),
    "inline_query": ("inline", _user_of),
    "chosen_inline_result": ("chosen_inline", _user_of),
    "message_reaction": ("reaction", _chat_of),
    "message_reaction_count": ("reaction_count", _chat_of),
    "chat_boost": ("boost", _chat_of),
    "removed_chat_boost": ("boost", _chat_of),
    "purchased_paid_media": ("paid_media", _user_of),
}


def queue_key(update: SimUpdate | RawUpdate) -> QueueKey:
    """The queue an update waits in: Telegram's rule (per chat for messages, per user for
    member changes, join requests and queries); an update with no key has its own queue."""
    if isinstance(update, SimUpdate):
        return ("chat", update.chat_id)
    rule = _KEYED_BY.get(update.kind)
    if rule is not None:
        family, where = rule
        value = where(update.payload)
        if value is not None:
            return (family, value)
    return ("update", update.update_id)


def next_retry(
    delay: int, fail_count: int, retry_after: int, rng: random.Random
) -> tuple[int, int]:
    """``(next doubling delay, seconds to wait)`` after a failed delivery, as Telegram's.

    ``delay`` starts at 1 and ``fail_count`` at 0: the first failure is retried at once,
    later ones after 2, 4, 8, ... seconds, the doubling capped at a random 60-120 s. A
    ``Retry-After`` (capped at 3600 s) replaces the wait and leaves the doubling as it is.
    """
    retry_after = min(max(retry_after, 0), MAX_RETRY_AFTER)
    if retry_after == 0 and fail_count > 0:
        cap = rng.randint(WEBHOOK_MAX_RESEND_TIMEOUT, 2 * WEBHOOK_MAX_RESEND_TIMEOUT)
        delay = min(cap, delay * 2)
        return delay, delay
    return delay, retry_after


class _Entry:
    """One queued update and its retry state."""

    __slots__ = ("delay", "expires_at", "fail_count", "update")

    def __init__(self, update: SimUpdate | RawUpdate, expires_at: int) -> None:
        self.update = update
        self.expires_at = expires_at  # a wall-clock date
        self.delay = 1
        self.fail_count = 0


class Webhook:
    """A bot's webhook as set: its parameters, its queues and its deliveries in flight."""

    __slots__ = (
        "certificate",
        "first_410",
        "has_custom_certificate",
        "heap",
        "in_flight",
        "ip_address",
        "last_error_date",
        "last_error_message",
        "max_connections",
        "max_in_flight",
        "queues",
        "running",
        "scope",
        "secret",
        "seq",
        "url",
        "wake",
    )

    def __init__(
        self,
        url: str,
        secret: str,
        max_connections: int,
        ip_address: str,
        certificate: bytes | None,
    ) -> None:
        self.url = url
        self.secret = secret
        self.max_connections = max_connections
        self.ip_address = ip_address
        # The uploaded PEM certificate (a self-signed one the deliveries trust), if any.
        self.certificate = certificate
        self.has_custom_certificate = certificate is not None
        self.queues: dict[QueueKey, deque[_Entry]] = {}
        # (Trio time due, tie-break, queue): each queue whose head is not in flight, once.
        self.heap: list[tuple[float, int, QueueKey]] = []
        self.seq = 0
        self.in_flight = 0
        self.max_in_flight = 0  # the most deliveries in flight at once, since it was set
        self.wake = trio.Event()
        self.scope: trio.CancelScope | None = None
        self.running = False  # a pusher task serves it (only while it has updates)
        self.first_410: float | None = None
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None

    def due(self, at: float, key: QueueKey) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, key))
        self.wake.set()

    def same(self, other: Webhook) -> bool:
        return (
            self.url == other.url
            and self.secret == other.secret
            and self.max_connections == other.max_connections
            and self.ip_address == other.ip_address
            and not self.has_custom_certificate
            and not other.has_custom_certificate
        )


@dataclass(frozen=True)
class WebhookStatistics:
    """Counters of webhook pushing since the simulated Bot API was built."""

    webhooks: int  # bots with a webhook set now
    deliveries: int  # updates answered 2xx
    failed_deliveries: int  # tries answered otherwise, or not answered
    expired: int  # updates dropped after 24 h of failures
    webhooks_dropped: int  # webhooks removed after 23 h of 410 answers
    in_flight: int  # deliveries waiting for their answer now


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # set up outside a Trio run
        return 0.0


def _retry_after(response: httpx.Response) -> int:
    value = response.headers.get("retry-after", "").strip()
    return int(value) if value.isdigit() else 0


class WebhookHub:
    """Every bot's webhook: the three methods and the pusher (one per simulated Bot API).

    ``date`` is the simulated world's wall clock (whole seconds); ``acknowledge(bot, update)``
    confirms an update answered 2xx, ``forget(bot, update)`` drops an expired one and
    ``drop_pending(bot)`` drops them all (drop_pending_updates); ``paused_until()`` is the end
    of the Bot API's outage, during which nothing is pushed.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        date: Callable[[], int],
        acknowledge: Callable[[SimBot, SimUpdate | RawUpdate], None],
        forget: Callable[[SimBot, SimUpdate | RawUpdate], None],
        drop_pending: Callable[[SimBot], None],
        paused_until: Callable[[], float],
    ) -> None:
        self._rng = rng
        self._date = date
        self._acknowledge = acknowledge
        self._forget = forget
        self._drop_pending = drop_pending
        self._paused_until = paused_until
        self._bots: dict[int, SimBot] = {}  # bots with a webhook, by id()
        self._start: Callable[[SimBot, Webhook], None] | None = None
        self._counts = dict.fromkeys(
            ("deliveries", "failed_deliveries", "expired", "webhooks_dropped"), 0
        )

    def statistics(self) -> WebhookStatistics:
        return WebhookStatistics(
            webhooks=len(self._bots),
            in_flight=sum(b.webhook.in_flight for b in self._bots.values() if b.webhook),
            **self._counts,
        )

    # -- the methods ----------------------------------------------------------------------

    def set_webhook(self, bot: SimBot, params: Mapping[str, Any]) -> Response:
        url = params.get("url")
        url = "" if url is None else str(url).strip()
        allowed = parse_allowed_updates(params)
        drop = params.get("drop_pending_updates") in _TRUE
        if not url:
            if allowed is not None:
                bot.allowed_updates = allowed
            return self.delete_webhook(bot, params)
        wanted = self._parse(params, url)
        if allowed is not None:
            bot.allowed_updates = allowed
        current = bot.webhook
        if current is not None and current.same(wanted) and not drop:
            return _true("Webhook is already set")
        if drop:
            self._drop_pending(bot)
        self._remove(bot)
        bot.webhook = wanted
        self._bots[id(bot)] = bot
        date = self._date()
        for update in bot.pending:
            born = update.date if isinstance(update, SimUpdate) else date
            self._queue(bot, wanted, update, born)
        return _true("Webhook was set")

    def delete_webhook(self, bot: SimBot, params: Mapping[str, Any]) -> Response:
        if params.get("drop_pending_updates") in _TRUE:
            self._drop_pending(bot)
        if bot.webhook is None:
            return _true("Webhook is already deleted")
        self._remove(bot)
        return _true("Webhook was deleted")

    def info(self, bot: SimBot) -> Response:
        hook = bot.webhook
        info: dict[str, Any] = {
            "url": hook.url if hook is not None else "",
            "has_custom_certificate": hook is not None and hook.has_custom_certificate,
            "pending_update_count": len(bot.pending),
        }
        if hook is not None:
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
            info["max_connections"] = hook.max_connections
            info["ip_address"] = hook.ip_address
        if bot.allowed_updates != DEFAULT_ALLOWED_UPDATES:
            info["allowed_updates"] = [t for t in UPDATE_TYPES if t in bot.allowed_updates]
        return 200, {"ok": True, "result": info}

    def _parse(self, params: Mapping[str, Any], url: str) -> Webhook:
        try:
            parts = urlsplit(url if "://" in url else f"https://{url}")
            port = parts.port
        except ValueError:
            raise BadRequest("Bad Request: invalid webhook URL specified") from None
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise BadRequest("Bad Request: invalid webhook URL specified")
        if host not in _LOOPBACK:
            if parts.scheme != "https":
                raise BadRequest(
                    "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
                )
            if (port or 443) not in _PORTS:
                raise BadRequest(
                    f"{_BAD_WEBHOOK}Webhook can be set up only on ports 80, 88, 443 or 8443"
                )
        secret = params.get("secret_token")
        secret = "" if secret is None else str(secret)
        if len(secret) > MAX_SECRET:
            raise BadRequest("Bad Request: secret token is too long")
        if not _SECRET.fullmatch(secret):
            raise BadRequest("Bad Request: secret token contains unallowed characters")
        wanted = int_param(params, "max_connections")
        max_connections = DEFAULT_MAX_CONNECTIONS if wanted is None else wanted
        max_connections = min(max(max_connections, 1), MAX_CONNECTIONS)
        ip_address = str(params.get("ip_address") or "")
        if ip_address:
            try:
                ipaddress.ip_address(ip_address)
            except ValueError:
                raise BadRequest(f"{_BAD_WEBHOOK}invalid IP address specified") from None
        else:
            try:
                ip_address = str(ipaddress.ip_address(host))
            except ValueError:
                ip_address = "127.0.0.1" if host == "localhost" else "<unknown>"
        return Webhook(
            url if "://" in url else f"https://{url}",
            secret,
            max_connections,
            ip_address,
            _uploaded_certificate(params),
        )

    def _remove(self, bot: SimBot) -> None:
        hook = bot.webhook
        if hook is None:
            return
        bot.webhook = None
        self._bots.pop(id(bot), None)
        if hook.scope is not None:
            hook.scope.cancel()  # deliveries in flight are abandoned: their updates stay

    # -- queues ---------------------------------------------------------------------------

    def queue(self, bot: SimBot, update: SimUpdate | RawUpdate) -> None:
        """A new update of a bot with a webhook (called when it is made)."""
        if bot.webhook is not None:
            self._queue(bot, bot.webhook, update, self._date())

    def _queue(self, bot: SimBot, hook: Webhook, update: SimUpdate | RawUpdate, born: int) -> None:
        key = queue_key(update)
        queue = hook.queues.get(key)
        if queue is None:
            queue = hook.queues[key] = deque()
        queue.append(_Entry(update, born + UPDATE_LIFETIME))
        if len(queue) == 1:
            hook.due(_now(), key)
        if not hook.running and self._start is not None:
            hook.running = True
            self._start(bot, hook)

    def _pop(self, hook: Webhook, key: QueueKey) -> None:
        queue = hook.queues[key]
        queue.popleft()
        if queue:
            hook.due(trio.current_time(), key)
        else:
            del hook.queues[key]

    # -- pushing --------------------------------------------------------------------------

    async def push(
        self,
        client: httpx.AsyncClient,
        *,
        trust_uploaded_certificates: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver every webhook's updates through ``client`` until cancelled.

        With ``trust_uploaded_certificates``, a webhook set with a certificate is delivered
        to through a client of its own that trusts that certificate and nothing else (as
        Telegram does for a self-signed one); ``client`` serves the others."""
        if self._start is not None:
            raise RuntimeError("webhooks are already being pushed; start push() only once")
        async with contextlib.AsyncExitStack() as clients, trio.open_nursery() as nursery:
            trusting: dict[bytes, httpx.AsyncClient] = {}

            def client_for(hook: Webhook) -> httpx.AsyncClient:
                pem = hook.certificate
                if not trust_uploaded_certificates or pem is None:
                    return client
                if pem not in trusting:
                    context = ssl.create_default_context(cadata=pem.decode("ascii"))
                    own = trusting[pem] = httpx.AsyncClient(verify=context, trust_env=False)
                    clients.push_async_callback(own.aclose)
                return trusting[pem]

            def start(bot: SimBot, hook: Webhook) -> None:
                nursery.start_soon(self._push_bot, bot, hook, client_for(hook))

            self._start = start
            try:
                for bot in list(self._bots.values()):
                    hook = bot.webhook
                    if hook is not None and hook.queues and not hook.running:
                        hook.running = True
                        start(bot, hook)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._start = None

    async def _push_bot(self, bot: SimBot, hook: Webhook, client: httpx.AsyncClient) -> None:
        """Push one webhook's updates while it has any: an idle webhook costs no task."""
        with trio.CancelScope() as scope:
            if bot.webhook is not hook:
                hook.running = False
                return  # replaced or removed before it started
            hook.scope = scope
            async with trio.open_nursery() as sends:
                while hook.queues or hook.in_flight:
                    now = trio.current_time()
                    paused = self._paused_until()
                    if now < paused:
                        await trio.sleep_until(paused)
                        continue
                    heap = hook.heap
                    while hook.in_flight < hook.max_connections and heap and heap[0][0] <= now:
                        _, _, key = heapq.heappop(heap)
                        entry = hook.queues[key][0]
                        if self._date() >= entry.expires_at:
                            self._expire(bot, hook, key, entry)
                            continue
                        hook.in_flight += 1
                        hook.max_in_flight = max(hook.max_in_flight, hook.in_flight)
                        sends.start_soon(self._deliver, bot, hook, key, entry, client)
                    due = heap[0][0] if heap and hook.in_flight < hook.max_connections else math.inf
                    hook.wake = trio.Event()
                    with trio.move_on_at(due):
                        await hook.wake.wait()
                # Nothing left: the next update starts a new task (even while this one ends).
                hook.running = False

    def _expire(self, bot: SimBot, hook: Webhook, key: QueueKey, entry: _Entry) -> None:
        self._counts["expired"] += 1
        self._forget(bot, entry.update)
        self._pop(hook, key)

    async def _deliver(
        self,
        bot: SimBot,
        hook: Webhook,
        key: QueueKey,
        entry: _Entry,
        client: httpx.AsyncClient,
    ) -> None:
        headers = {"Content-Type": "application/json"}
        if hook.secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook.secret
        body = json.dumps(render_update(entry.update), separators=(",", ":")).encode()
        status = 0
        retry_after = 0
        problem: str | None = None
        try:
            with trio.move_on_after(DELIVERY_TIMEOUT) as timer:
                response = await client.post(hook.url, content=body, headers=headers)
            if timer.cancelled_caught:
                problem = "Read timeout expired"
            else:
                status = response.status_code
                if not 200 <= status <= 299:
                    reason = response.reason_phrase or _phrase(status)
                    problem = f"Wrong response from the webhook: {status} {reason}".rstrip()
                    retry_after = _retry_after(response)
        except httpx.ConnectError:
            problem = "Connection refused"
        except httpx.TimeoutException:
            problem = "Read timeout expired"
        except (httpx.HTTPError, OSError):
            problem = "Webhook connection closed"
        finally:
            hook.in_flight -= 1
            hook.wake.set()
        if status == 410:
            now = trio.current_time()
            if hook.first_410 is None:
                hook.first_410 = now
            elif now > hook.first_410 + WEBHOOK_DROP_TIMEOUT:
                self._note_error(hook, problem)
                self._counts["webhooks_dropped"] += 1
                self._remove(bot)
                return
        elif status:
            hook.first_410 = None
        if problem is None:
            self._counts["deliveries"] += 1
            self._acknowledge(bot, entry.update)
            self._pop(hook, key)
            return
        self._counts["failed_deliveries"] += 1
        self._note_error(hook, problem)
        entry.delay, wait = next_retry(entry.delay, entry.fail_count, retry_after, self._rng)
        if self._date() + wait > entry.expires_at:
            self._expire(bot, hook, key, entry)
            return
        entry.fail_count += 1
        hook.due(trio.current_time() + wait, key)

    def _note_error(self, hook: Webhook, problem: str | None) -> None:
        hook.last_error_date = self._date()
        hook.last_error_message = problem


def _uploaded_certificate(params: Mapping[str, Any]) -> bytes | None:
    """The PEM certificate uploaded with setWebhook, None when none was (text is no file);
    BadRequest when the file is not a certificate OpenSSL loads."""
    certificate = params.get("certificate")
    if isinstance(certificate, str) and certificate.startswith("attach://"):
        certificate = params.get(certificate.removeprefix("attach://"))
    if not isinstance(certificate, InputFile):
        return None
    try:
        text = certificate.content.decode("ascii")
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError("no PEM certificate")
        ssl.create_default_context(cadata=text)
    except (ValueError, ssl.SSLError):
        raise BadRequest(f"{_BAD_WEBHOOK}the certificate is not a PEM certificate") from None
    return certificate.content


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _true(description: str) -> Response:
    return 200, {"ok": True, "result": True, "description": description}


def conflict() -> Response:
    """getUpdates while a webhook is set."""
    return error(409, CONFLICT_WEBHOOK)
