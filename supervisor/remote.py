"""``botvisor bots ...`` and ``botvisor watch``: thin clients of a running daemon's admin API.

They find the daemon from ``--url`` (or ``$BOTVISOR_ADMIN_URL``, or ``admin.listen`` of
``--config``) and read the admin token from the variable named by ``--admin-token-env`` (or
``admin.token_env`` of ``--config``). A bot's token is read from a variable or stdin, never from
the command line, where ``ps`` would show it.

Exit codes: 0 done, 1 the API refused the request (its message is printed) or, for a
dead-letter redrive, refused any of the dead letters it named (each refusal is printed),
2 bad usage, 3 the admin API could not be reached.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

__all__ = [
    "AdminClient",
    "RemoteError",
    "add_bots_arguments",
    "add_dead_letters_arguments",
    "add_usage_arguments",
    "add_watch_arguments",
    "bots_command",
    "dead_letters_command",
    "format_event",
    "open_event_stream",
    "usage_command",
    "watch_command",
]

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "BOTVISOR_ADMIN_URL"
TOKEN_ENV = "BOTVISOR_ADMIN_TOKEN"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class RemoteError(Exception):
    """The admin API answered with an error, or could not be reached (``status`` None)."""

    def __init__(self, status: int | None, message: str, code: str = "unreachable") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.status} {self.code}: {self.message}"


@dataclass(frozen=True)
class Target:
    """Where the admin API is and the token to present."""

    url: str
    token: str | None


class AdminClient:
    """The admin API's bot-management routes, synchronously (a CLI makes one call)."""

    def __init__(self, target: Target, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        self._url = target.url
        self._http = httpx.Client(base_url=target.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        text: bool = False,
    ) -> Any:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise RemoteError(None, f"cannot reach the admin API at {self._url}: {exc}") from None
        try:
            data = None if text and response.is_success else response.json()
        except ValueError:
            data = None
        if response.is_success:
            return response.text if text else data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            raise RemoteError(
                response.status_code, str(error.get("message")), str(error.get("code"))
            )
        raise RemoteError(response.status_code, response.text[:200] or response.reason_phrase)

    def list(self) -> list[dict[str, Any]]:
        bots: list[dict[str, Any]] = self._call("GET", "/admin/bots")["bots"]
        return bots

    def get(self, user_id: int) -> dict[str, Any]:
        bot: dict[str, Any] = self._call("GET", f"/admin/bots/{user_id}")
        return bot

    def add(self, bot: Mapping[str, Any]) -> dict[str, Any]:
        added: dict[str, Any] = self._call("POST", "/admin/bots", bot)
        return added

    def remove(self, user_id: int) -> dict[str, Any]:
        removed: dict[str, Any] = self._call("DELETE", f"/admin/bots/{user_id}")
        return removed

    def suspend(self, user_id: int, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason else {}
        bot: dict[str, Any] = self._call("POST", f"/admin/bots/{user_id}/suspend", body)
        return bot

    def set_mode(self, user_id: int, mode: str) -> dict[str, Any]:
        bot: dict[str, Any] = self._call("POST", f"/admin/bots/{user_id}/mode", {"mode": mode})
        return bot

    def resume(self, user_id: int) -> dict[str, Any]:
        bot: dict[str, Any] = self._call("POST", f"/admin/bots/{user_id}/resume")
        return bot

    def dead_letters(self, user_id: int, params: Mapping[str, str]) -> dict[str, Any]:
        page: dict[str, Any] = self._call(
            "GET", f"/admin/bots/{user_id}/dead-letters", params=params
        )
        return page

    def act_on_dead_letters(
        self, user_id: int, action: str, selection: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``action`` is ``redrive`` or ``discard``; ``selection`` its body."""
        result: dict[str, Any] = self._call(
            "POST", f"/admin/bots/{user_id}/dead-letters/{action}", selection
        )
        return result

    def usage(self, params: Mapping[str, str]) -> dict[str, Any]:
        usage: dict[str, Any] = self._call("GET", "/admin/analytics/usage", params=params)
        return usage

    def usage_csv(self, params: Mapping[str, str]) -> str:
        sheet: str = self._call("GET", "/admin/analytics/usage.csv", params=params, text=True)
        return sheet


# --- arguments --------------------------------------------------------------------------


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help=f"the admin API's base URL (default: ${URL_ENV}, admin.listen of --config, "
        f"or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--config", type=Path, help="a botvisor.toml to take admin.listen and admin.token_env from"
    )
    parser.add_argument(
        "--admin-token-env",
        help=f"the variable holding the admin token (default: admin.token_env or {TOKEN_ENV})",
    )


def add_bots_arguments(parser: argparse.ArgumentParser) -> None:
    """``botvisor bots add|list|show|remove|suspend|resume|mode``."""
    _add_target_arguments(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a bot (its token is checked with getMe first)")
    add.add_argument("user_id", type=int)
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--token-env", help="the variable holding the bot's token")
    source.add_argument(
        "--token-stdin", action="store_true", help="read the bot's token from stdin"
    )
    add.add_argument("--handler", default="echo", help="echo, autoreply or module:function")
    add.add_argument("--rps", type=float, help="the bot's own requests per second")
    add.add_argument(
        "--allowed-updates",
        metavar="TYPES",
        help="comma-separated update types getUpdates asks for (default: Telegram's default "
        "set, every type but chat_member, message_reaction and message_reaction_count)",
    )
    listing = actions.add_parser("list", help="list the bots (tokens redacted)")
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    show = actions.add_parser("show", help="one bot")
    show.add_argument("user_id", type=int)
    remove = actions.add_parser("remove", help="stop a bot and unregister it (history is kept)")
    remove.add_argument("user_id", type=int)
    suspend = actions.add_parser("suspend", help="stop a bot until it is resumed")
    suspend.add_argument("user_id", type=int)
    suspend.add_argument("--reason", help="recorded with the suspension")
    resume = actions.add_parser("resume", help="re-check the token and start the bot again")
    resume.add_argument("user_id", type=int)
    mode = actions.add_parser(
        "mode", help="switch a bot between polling and webhooks (no update is lost)"
    )
    mode.add_argument("user_id", type=int)
    mode.add_argument("mode", choices=("polling", "webhook"))


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """``botvisor watch [--user-id N]``."""
    _add_target_arguments(parser)
    parser.add_argument("--user-id", type=int, help="only this bot's events")
    parser.add_argument("--json", action="store_true", help="print each event's JSON")
    parser.add_argument("--count", type=int, help="exit after this many events")


def resolve_target(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    """The URL and token from the arguments, the config file and the environment."""
    listen: str | None = None
    scheme = "http"
    token_env = args.admin_token_env
    if args.config is not None:
        try:
            data = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RemoteError(None, f"{args.config}: cannot be read: {exc}", "usage") from None
        admin = data.get("admin", {}) if isinstance(data.get("admin", {}), dict) else {}
        listen = admin.get("listen", "127.0.0.1:8080")
        scheme = "https" if admin.get("tls_cert") else "http"
        token_env = token_env or admin.get("token_env")
    url = args.url or env.get(URL_ENV)
    if url is None and listen is not None:
        host, _, port = listen.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]", ""):
            host = "127.0.0.1"
        url = f"{scheme}://{host}:{port}"
    token_env = token_env or TOKEN_ENV
    return Target(url=(url or DEFAULT_URL).rstrip("/"), token=env.get(token_env) or None)


# --- bots -------------------------------------------------------------------------------


def _bot_line(bot: Mapping[str, Any]) -> str:
    reason = f" ({bot['suspended_reason']})" if bot.get("suspended_reason") else ""
    return (
        f"{bot['user_id']:>12}  {bot['token']:<16} {bot['status']:<10} {bot['state']:<10} "
        f"breaker={bot['circuit_state']:<9} {bot['handler']:<12} {bot['source']}{reason}"
    )


def _read_token(args: argparse.Namespace, env: Mapping[str, str], stdin: TextIO) -> str:
    if args.token_stdin:
        token = stdin.readline().strip()
        if not token:
            raise RemoteError(None, "no token on stdin", "usage")
        return token
    from_env = env.get(args.token_env)
    if not from_env:
        raise RemoteError(None, f"the variable {args.token_env} is not set", "usage")
    return from_env


def bots_command(
    args: argparse.Namespace,
    *,
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> int:
    env = os.environ if env is None else env
    out = out or sys.stdout
    try:
        target = resolve_target(args, env)
        with AdminClient(target) as client:
            if args.action == "list":
                bots = client.list()
                if args.json:
                    print(json.dumps(bots, indent=2, ensure_ascii=False), file=out)
                else:
                    for bot in bots:
                        print(_bot_line(bot), file=out)
                    print(f"{len(bots)} bot(s)", file=out)
            elif args.action == "show":
                print(json.dumps(client.get(args.user_id), indent=2, ensure_ascii=False), file=out)
            elif args.action == "add":
                body: dict[str, Any] = {
                    "user_id": args.user_id,
                    "token": _read_token(args, env, stdin or sys.stdin),
                    "handler": args.handler,
                }
                if args.rps is not None:
                    body["rps"] = args.rps
                if args.allowed_updates is not None:
                    body["allowed_updates"] = [
                        kind.strip() for kind in args.allowed_updates.split(",") if kind.strip()
                    ]
                bot = client.add(body)
                print(f"added: {_bot_line(bot)}", file=out)
            elif args.action == "remove":
                client.remove(args.user_id)
                print(f"removed bot {args.user_id} (its history is kept)", file=out)
            elif args.action == "suspend":
                print(
                    f"suspended: {_bot_line(client.suspend(args.user_id, args.reason))}", file=out
                )
            elif args.action == "resume":
                print(f"resumed: {_bot_line(client.resume(args.user_id))}", file=out)
            elif args.action == "mode":
                bot = client.set_mode(args.user_id, args.mode)
                print(f"mode {args.mode}: {_bot_line(bot)}", file=out)
    except RemoteError as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        if exc.code == "usage":
            return EXIT_USAGE
        return EXIT_UNREACHABLE if exc.status is None else EXIT_REFUSED
    return EXIT_OK


# --- usage ------------------------------------------------------------------------------


def add_usage_arguments(parser: argparse.ArgumentParser) -> None:
    """``botvisor usage [--user-id N] [--days 7] [--csv]``."""
    _add_target_arguments(parser)
    parser.add_argument("--user-id", type=int, help="one bot (default: the whole fleet)")
    parser.add_argument(
        "--days", type=int, default=7, help="the last N days, one row a day (default 7)"
    )
    parser.add_argument("--csv", action="store_true", help="one CSV row per bot per day")


def _p95(row: Mapping[str, Any]) -> object:
    value = row["reply_latency_p95_ms"]
    return "-" if value is None else f"{value:g}"


_USAGE_COLUMNS: tuple[tuple[str, Callable[[Mapping[str, Any]], object]], ...] = (
    ("day", lambda r: str(r["start"])[:10]),
    ("updates", lambda r: r["updates"]),
    ("sends", lambda r: r["sends"]),
    ("api_calls", lambda r: r["api_calls"]),
    ("dead_letters", lambda r: r["dead_letters"]),
    ("handler_errors", lambda r: r["handler_errors"]),
    ("chats", lambda r: r["distinct_chats"]),
    ("users", lambda r: r["distinct_users"]),
    ("p95_reply_ms", _p95),
)


def usage_command(
    args: argparse.Namespace, *, env: Mapping[str, str] | None = None, out: TextIO | None = None
) -> int:
    """Print the usage of the last ``--days`` days as a table (or CSV)."""
    env = os.environ if env is None else env
    out = out or sys.stdout
    if not 1 <= args.days <= 400:
        print("botvisor: --days must be a whole number from 1 to 400", file=sys.stderr)
        return EXIT_USAGE
    try:
        target = resolve_target(args, env)
        with AdminClient(target) as client:
            params = {"bucket": "day"}
            if args.user_id is not None:
                params["user_id"] = str(args.user_id)
            # The daemon's clock says what "now" is: ask once for its range, then for ours.
            end = dt.datetime.fromisoformat(client.usage(params)["end"])
            start = (end - dt.timedelta(days=args.days)).replace(hour=0, minute=0, second=0)
            params["from"] = start.isoformat()
            if args.csv:
                print(client.usage_csv(params), end="", file=out)
                return EXIT_OK
            usage = client.usage(params)
    except RemoteError as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.status is None else EXIT_REFUSED
    rows = [[str(get(row)) for _, get in _USAGE_COLUMNS] for row in usage["rows"]]
    rows.append([str(get(usage["totals"])) for _, get in _USAGE_COLUMNS])
    rows[-1][0] = "total"
    names = [name for name, _ in _USAGE_COLUMNS]
    widths = [max(len(name), *(len(r[i]) for r in rows)) for i, name in enumerate(names)]
    who = "the fleet" if args.user_id is None else f"bot {args.user_id}"
    print(f"usage of {who}, {args.days} day(s), UTC", file=out)
    print("  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True)), file=out)
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)), file=out)
    return EXIT_OK


# --- dead letters -----------------------------------------------------------------------


def add_dead_letters_arguments(parser: argparse.ArgumentParser) -> None:
    """``botvisor dead-letters list|redrive|discard USER_ID [--ids 1,2] [--reason TEXT]
    [--all] [--json]``."""
    _add_target_arguments(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="a bot's dead letters, newest first")
    redrive = actions.add_parser(
        "redrive", help="put dead letters' updates back into the bot's inbox, to be handled again"
    )
    discard = actions.add_parser("discard", help="delete dead letters")
    for action in (listing, redrive, discard):
        action.add_argument("user_id", type=int)
        action.add_argument("--json", action="store_true", help="print the API's JSON")
    listing.add_argument("--reason", help="only those whose reason contains this (any case)")
    listing.add_argument(
        "--limit", type=int, default=50, help="at most this many, newest first (default 50)"
    )
    for action in (redrive, discard):
        action.add_argument("--ids", help="comma-separated dead letter ids (see list)")
        action.add_argument("--reason", help="those whose reason contains this (any case)")
        action.add_argument(
            "--all", action="store_true", help="every one (a redrive: every one not redriven)"
        )


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    given = [name for name in ("ids", "reason") if getattr(args, name) is not None]
    if args.all:
        given.append("all")
    if len(given) != 1:
        raise RemoteError(None, "give exactly one of --ids, --reason and --all", "usage")
    if args.all:
        return {"all": True}
    if args.reason is not None:
        return {"reason_contains": args.reason}
    try:
        ids = [int(part) for part in args.ids.split(",") if part.strip()]
    except ValueError:
        raise RemoteError(
            None, f"--ids must be comma-separated dead letter ids, got {args.ids!r}", "usage"
        ) from None
    if not ids:
        raise RemoteError(None, "--ids must name at least one dead letter id", "usage")
    return {"ids": ids}


def _dead_letter_line(letter: Mapping[str, Any]) -> str:
    redriven = f"  redriven {letter['redriven_at']}" if letter.get("redriven_at") else ""
    chat = "-" if letter.get("chat_id") is None else str(letter["chat_id"])
    kind = letter.get("update_type") or "(no payload)"
    return (
        f"{letter['id']:>8}  update {letter['update_id']:<10} chat {chat:<15} {kind:<20} "
        f"{letter['recorded_at']}{redriven}  {letter['reason']}"
    )


def _list_dead_letters(
    client: AdminClient, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int]:
    """Up to ``--limit`` dead letters, page by page; and how many match in all."""
    if args.limit < 1:
        raise RemoteError(None, "--limit must be a whole number >= 1", "usage")
    letters: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    if args.reason is not None:
        params["reason"] = args.reason
    while True:
        params["limit"] = str(min(500, args.limit - len(letters)))
        page = client.dead_letters(args.user_id, params)
        letters += page["dead_letters"]
        if page["next_cursor"] is None or len(letters) >= args.limit:
            return letters, int(page["total"])
        params["cursor"] = page["next_cursor"]


def dead_letters_command(
    args: argparse.Namespace, *, env: Mapping[str, str] | None = None, out: TextIO | None = None
) -> int:
    """List, redrive or discard one bot's dead letters."""
    env = os.environ if env is None else env
    out = out or sys.stdout
    try:
        target = resolve_target(args, env)
        selection = _selection(args) if args.action != "list" else {}
        with AdminClient(target) as client:
            if args.action == "list":
                letters, total = _list_dead_letters(client, args)
                if args.json:
                    listing = {"user_id": args.user_id, "dead_letters": letters, "total": total}
                    print(json.dumps(listing, indent=2, ensure_ascii=False), file=out)
                else:
                    for letter in letters:
                        print(_dead_letter_line(letter), file=out)
                    print(
                        f"{len(letters)} of {total} dead letter(s) of bot {args.user_id}", file=out
                    )
                return EXIT_OK
            result = client.act_on_dead_letters(args.user_id, args.action, selection)
    except RemoteError as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        if exc.code == "usage":
            return EXIT_USAGE
        return EXIT_UNREACHABLE if exc.status is None else EXIT_REFUSED
    refused = result.get("refused", [])
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False), file=out)
    elif args.action == "discard":
        print(f"discarded {result['discarded']} dead letter(s) of bot {args.user_id}", file=out)
    else:
        print(
            f"redrove {result['redriven']} dead letter(s) of bot {args.user_id}; "
            f"refused {len(refused)}",
            file=out,
        )
        for refusal in refused:
            print(f"  refused {refusal['id']}: {refusal['reason']}", file=out)
    # A script redriving a set must notice the ones left behind.
    return EXIT_REFUSED if refused else EXIT_OK


# --- watch ------------------------------------------------------------------------------


@asynccontextmanager
async def open_event_stream(
    url: str,
    token: str | None,
    user_id: int | None = None,
    *,
    message_queue_size: int = 64,
    subprotocols: Sequence[str] = (),
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket on ``/admin/events`` of the admin API at ``url`` (http or https).

    ``token`` goes in the ``Authorization`` header; a browser, which cannot send headers,
    offers it among ``subprotocols`` instead (``None`` for the token then).

    Raises ``ConnectionRejected`` (with the API's JSON error as body) if the handshake is
    refused. The TCP stream is always closed on exit.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path.rstrip("/") or "") + "/admin/events"
    if user_id is not None:
        resource += f"?user_id={quote(str(user_id))}"
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(host, port)
    else:
        stream = await trio.open_tcp_stream(host, port)
    try:
        try:
            async with trio.open_nursery() as nursery:
                connection = await wrap_client_stream(
                    nursery,
                    stream,
                    f"{host}:{port}",
                    resource,
                    subprotocols=subprotocols,
                    extra_headers=headers,
                    message_queue_size=message_queue_size,
                )
                try:
                    yield connection
                finally:
                    with trio.move_on_after(2) as scope:
                        scope.shield = True
                        await connection.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader task's ConnectionRejected (or the caller's own error) comes out of
            # the nursery wrapped: hand it over as itself.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        # trio-websocket leaves a client's socket open when the server closed first.
        with trio.CancelScope(shield=True):
            await stream.aclose()


def format_event(event: Mapping[str, Any]) -> str:
    """One event as a terminal line."""
    at = event.get("at")
    when = (
        dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(at, (int, float))
        else "-"
    )
    kind = event.get("type")
    user = event.get("user_id")
    if kind == "status":
        what = f"status {event['previous']} -> {event['status']}"
    elif kind == "breaker":
        what = f"breaker {event['previous']} -> {event['state']}"
    elif kind == "lifecycle":
        what = str(event["event"])
        if event.get("detail"):
            what += f": {event['detail']}"
        return f"{when}  bot {user}  {what}"
    else:
        what = json.dumps(event, ensure_ascii=False)
    reason = event.get("reason")
    return f"{when}  bot {user}  {what}" + (f" ({reason})" if reason else "")


async def watch(
    target: Target,
    user_id: int | None,
    *,
    as_json: bool = False,
    count: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Print events until the daemon closes the stream (or ``count`` were printed)."""
    out = out or sys.stdout
    shown = 0
    try:
        async with open_event_stream(target.url, target.token, user_id) as ws:
            while count is None or shown < count:
                event = json.loads(await ws.get_message())
                if event.get("type") == "subscribed":
                    scope = f"bot {user_id}" if user_id is not None else "every bot"
                    print(f"watching {scope} at {target.url} (Ctrl-C to stop)", file=sys.stderr)
                    continue
                print(json.dumps(event) if as_json else format_event(event), file=out, flush=True)
                shown += 1
    except ConnectionRejected as exc:
        message = exc.body.decode("utf-8", "replace") if exc.body else ""
        with suppress(ValueError, KeyError, TypeError):
            message = json.loads(message)["error"]["message"]
        print(f"botvisor: {exc.status_code}: {message}", file=sys.stderr)
        return EXIT_REFUSED
    except ConnectionClosed as exc:
        reason = exc.reason.reason if exc.reason is not None else None
        code = exc.reason.code if exc.reason is not None else None
        print(f"botvisor: the daemon closed the stream ({code}: {reason})", file=sys.stderr)
        return EXIT_OK if code in (1000, 1001) else EXIT_REFUSED
    except (OSError, HandshakeError) as exc:
        print(f"botvisor: cannot reach the admin API at {target.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK


def watch_command(args: argparse.Namespace, *, env: Mapping[str, str] | None = None) -> int:
    try:
        target = resolve_target(args, os.environ if env is None else env)
    except RemoteError as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trio.run(lambda: watch(target, args.user_id, as_json=args.json, count=args.count))
    except KeyboardInterrupt:
        return EXIT_OK
