"""``botvisor demo`` and ``botvisor sim-server``: the whole system without a Telegram account.

The demo starts the simulated Bot API on 127.0.0.1, a fleet of bots talking to it over real
HTTP, simulated users writing to them, a real SQLite file and the admin server; it prints
progress while it runs and a summary of every bot at the end.

The simulated users speak real Telegram: a third of each bot's chats are groups (every other
bot's a forum, whose messages are in topics), some messages are edits and button presses, and
the last bot has a basic group that is upgraded to a supergroup halfway through the run.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import trio

from actors import (
    BotConfig,
    BotMode,
    BotToken,
    LimitsConfig,
    TelegramConfig,
    WebhookConfig,
    find_exception,
)
from actors.simulator import FaultProfile, OutageMode, SimReport, SimulatedBotApi, serve_sim
from admin import AdminConfig
from storage import StorageConfig
from supervisor.clock import system_wall_clock
from supervisor.config import Config, SupervisorConfig
from supervisor.daemon import Daemon, DaemonHandle, setup_error

__all__ = [
    "SCENARIOS",
    "Scenario",
    "add_demo_arguments",
    "add_sim_server_arguments",
    "bounded",
    "demo_command",
    "run_demo",
    "sim_server_command",
]

log = logging.getLogger("botvisor.demo")

# The demo's database unless --db names one: recreated at each run.
DEMO_DB = "botvisor-demo.db"
FIRST_BOT_ID = 7_000_000_001
# The supergroup the last bot's basic group becomes halfway through the run.
MIGRATED_SUPERGROUP = -1_009_000_000_000
# The mix of what simulated users do (see SimulatedBotApi.add_users).
GROUP_SHARE = 1 / 3
EDIT_SHARE = 0.05
CALLBACK_SHARE = 0.05


@dataclass(frozen=True)
class Scenario:
    """A named fault profile for the simulated Bot API."""

    description: str
    faults: FaultProfile = field(default_factory=FaultProfile)
    # An outage of the whole API: (starts after this share of the run, lasts this many s).
    outage: tuple[float, float] | None = None
    revoke_one: bool = False
    # One tenant's users write this many times faster than the others.
    flood_factor: float = 1.0


SCENARIOS: dict[str, Scenario] = {
    "none": Scenario("no faults"),
    "light": Scenario(
        "2% 5xx, 1% connect errors, 1% responses lost after delivery, 1% 429 (retry_after 1 s)",
        # A lost response (timeout after the request reached Telegram) is an ambiguous send:
        # counted as sent and never retried, so no message goes out twice. Here Telegram did
        # deliver it, as it usually has in practice.
        FaultProfile(
            error_rate_5xx=0.02,
            connect_error_rate=0.01,
            drop_rate=0.01,
            rate_limit_rate=0.01,
            retry_after=1,
            deliver_before_fault_rate=1.0,
        ),
    ),
    "transient-5": Scenario(
        "5% transient faults on every call",
        FaultProfile(error_rate_5xx=0.03, connect_error_rate=0.02),
    ),
    "transient-20": Scenario(
        "20% transient faults on every call",
        FaultProfile(error_rate_5xx=0.12, connect_error_rate=0.08),
    ),
    "transient-50": Scenario(
        "50% transient faults on every call",
        FaultProfile(error_rate_5xx=0.30, connect_error_rate=0.20),
    ),
    "429-storm": Scenario(
        "30% of calls answered 429 with retry_after 2 s",
        FaultProfile(rate_limit_rate=0.30, retry_after=2),
    ),
    "outage": Scenario("the whole API is down for a third of the run", outage=(0.3, 0.0)),
    "outage-10min": Scenario(
        "the whole API is down for 10 minutes (from 20% into the run)", outage=(0.2, 600.0)
    ),
    "revoked": Scenario("one tenant's token is revoked", revoke_one=True),
    "flood": Scenario("one tenant's users write 20 times more than the others", flood_factor=20.0),
}


def bounded(
    convert: Callable[[str], float], low: float, high: float, *, low_open: bool = False
) -> Callable[[str], Any]:
    """An argparse ``type``: a number from ``low`` to ``high`` (above ``low`` if
    ``low_open``); anything else is a usage error that states the range."""
    kind = "a whole number" if convert is int else "a number"
    rule = f"{kind} {'>' if low_open else '>='} {low:g} and <= {high:g}"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if low_open else value >= low)):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = kind  # argparse names the type in its own messages
    return parse


MODES = ("polling", "webhook", "mixed")


def _bot_mode(mode: str, index: int) -> BotMode:
    if mode == "webhook" or (mode == "mixed" and index % 2 == 0):
        return BotMode.WEBHOOK
    return BotMode.POLLING


# Bounds of the demo's and sim-server's options: what a laptop can simulate.
BOTS = bounded(int, 1, 100_000)
CHATS = bounded(int, 1, 10_000)
RATE = bounded(float, 0, 1_000, low_open=True)
SECONDS = bounded(float, 0, 86_400, low_open=True)
PORT = bounded(int, 0, 65_535)
MESSAGES = bounded(int, 1, 1_000_000)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bots", type=BOTS, default=100, help="number of bots (default 100)")
    parser.add_argument(
        "--duration",
        type=SECONDS,
        default=20.0,
        help="seconds the simulated users write (default 20)",
    )
    parser.add_argument("--chats", type=CHATS, default=3, help="chats per bot (default 3)")
    parser.add_argument(
        "--rate", type=RATE, default=0.1, help="messages per second per chat (default 0.1)"
    )
    parser.add_argument(
        "--global-rps",
        type=bounded(float, 1, 100_000),
        default=100.0,
        help=(
            "limits.global_rps of the fleet (default 100; a real deployment's default is "
            f"{LimitsConfig().global_rps:g})"
        ),
    )
    parser.add_argument(
        "--faults",
        default="light",
        choices=sorted(SCENARIOS),
        help="fault scenario (default light)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"SQLite file to keep across runs (default: a fresh ./{DEMO_DB} each run)",
    )
    parser.add_argument(
        "--admin-port",
        type=PORT,
        default=8080,
        help="admin API port on 127.0.0.1 (default 8080; 0 picks a free one)",
    )
    parser.add_argument(
        "--mode",
        default="polling",
        choices=MODES,
        help=(
            "how the bots get their updates: polling (getUpdates), webhook (the simulated "
            "Telegram pushes them to the webhook listener) or mixed (every other bot)"
        ),
    )
    parser.add_argument(
        "--webhook-port",
        type=PORT,
        default=8443,
        help="the webhook listener's port on 127.0.0.1 with --mode webhook or mixed (default 8443)",
    )
    parser.add_argument(
        "--drain",
        type=bounded(float, 0, 86_400),
        default=60.0,
        help="seconds to wait for the last replies after the users stop",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed")


def add_sim_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=PORT, default=8081, help="0 picks a free one")
    parser.add_argument("--bots", type=BOTS, default=3, help="simulated bots to create")
    parser.add_argument("--chats", type=CHATS, default=2, help="simulated chats per bot")
    parser.add_argument("--rate", type=RATE, default=0.5, help="messages per second per chat")
    parser.add_argument(
        "--messages",
        type=MESSAGES,
        default=None,
        help="messages each chat sends, then it is quiet (default: it never stops)",
    )
    parser.add_argument("--faults", default="none", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--seed", type=int, default=1, help="seed: the same seed gives the same tokens"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print a botvisor.toml for these bots, then serve",
    )


@dataclass(frozen=True)
class DemoResult:
    report: SimReport
    bots: list[dict[str, object]]
    db_path: Path
    # The fleet's usage totals as GET /admin/analytics/usage answered (None if it did not).
    usage: dict[str, Any] | None = None

    @property
    def every_message_answered(self) -> bool:
        return self.report.unanswered == 0


def demo_command(args: argparse.Namespace) -> int:
    if args.bots < 1 or args.duration <= 0 or args.chats < 1 or args.rate <= 0:
        print("botvisor demo: --bots, --duration, --chats and --rate must be > 0", file=sys.stderr)
        return 2
    if getattr(args, "mode", "polling") != "polling" and args.webhook_port == 0:
        print(
            "botvisor demo: --webhook-port must name a port with --mode webhook or mixed "
            "(the simulated Telegram is told the URL before the listener starts)",
            file=sys.stderr,
        )
        return 2
    try:
        result = trio.run(run_demo, args)
    except Exception as exc:
        setup = setup_error(exc)
        if setup is None:
            raise
        hint = " (botvisor demo: pick another --admin-port)" if "admin" in str(setup) else ""
        print(f"botvisor demo: {setup}{hint}", file=sys.stderr)
        return 1
    return 0 if result.every_message_answered or SCENARIOS[args.faults].revoke_one else 1


def _tokens(count: int, rng: random.Random) -> list[str]:
    return [SimulatedBotApi.make_token(FIRST_BOT_ID + i, rng) for i in range(count)]


def _apply_scenario(
    api: SimulatedBotApi,
    scenario: Scenario,
    tokens: list[str],
    chats: int,
    rate: float,
    *,
    messages: int | None = None,
) -> tuple[str, int] | None:
    """Set faults and users (each chat sending ``messages``, None: until the end); returns the
    (token, chat id) of the basic group to upgrade."""
    api.set_faults(scenario.faults)
    for i, token in enumerate(tokens):
        factor = scenario.flood_factor if i == 0 else 1.0
        # The flooding tenant writes in private chats only: a group's 20 messages a minute
        # would hold its replies past the drain.
        api.add_users(
            token,
            chats=chats,
            rate=rate * factor,
            group_share=GROUP_SHARE if factor == 1.0 else 0.0,
            forum_share=1.0 if i % 2 == 0 else 0.0,
            edit_share=EDIT_SHARE,
            callback_share=CALLBACK_SHARE,
            count=messages,
        )
    if len(tokens) > 1 or scenario.flood_factor == 1.0:
        (group,) = api.add_users(
            tokens[-1],
            chats=1,
            rate=rate,
            group_share=1.0,
            basic_group_share=1.0,
            count=messages,
        )
        return tokens[-1], group
    return None


def _demo_database(named: Path | None) -> Path:
    """The database the demo uses: the one ``--db`` names, kept as it is (its bots from an
    earlier run with other ``--bots`` are unregistered, each with a warning), or else a fresh
    ``./botvisor-demo.db``: each run starts from nothing, whatever the last one ran."""
    if named is not None:
        return named
    path = Path(DEMO_DB)
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    return path


async def run_demo(args: argparse.Namespace, *, out: TextIO = sys.stdout) -> DemoResult:
    db = _demo_database(args.db)
    rng = random.Random(args.seed)
    scenario = SCENARIOS[args.faults]
    wall_clock = system_wall_clock()
    api = SimulatedBotApi(rng=random.Random(rng.random()), wall_clock=wall_clock)
    tokens = _tokens(args.bots, rng)
    for token in tokens:
        api.add_bot(token)
    migrating = _apply_scenario(api, scenario, tokens, args.chats, args.rate)
    admin_token = secrets.token_urlsafe(24)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    mode = getattr(args, "mode", "polling")
    webhooks = mode != "polling"
    # The simulated Telegram pushes over real HTTP to the daemon's webhook listener.
    async with httpx.AsyncClient(timeout=70.0) as pusher, trio.open_nursery() as outer:
        api_url = await outer.start(serve_sim, api)
        if webhooks:
            await outer.start(api.push_webhooks, pusher)
        webhook_port = getattr(args, "webhook_port", 8443)
        config = Config(
            telegram=TelegramConfig(api_base=api_url, poll_timeout=10, request_timeout=5.0),
            storage=StorageConfig(path=str(db), persist_interval=60),
            limits=LimitsConfig(global_rps=args.global_rps, global_burst=int(args.global_rps)),
            admin=AdminConfig(listen=f"127.0.0.1:{args.admin_port}", token=admin_token),
            supervisor=SupervisorConfig(graceful_timeout=5.0, report_interval=1.0),
            webhook=WebhookConfig(
                listen=f"127.0.0.1:{webhook_port}",
                public_url=f"http://127.0.0.1:{webhook_port}/tg" if webhooks else None,
                secret=secrets.token_urlsafe(32) if webhooks else None,
            ),
            bots=tuple(
                BotConfig(user_id=1001 + i, token=BotToken(token), mode=_bot_mode(mode, i))
                for i, token in enumerate(tokens)
            ),
        )
        daemon = Daemon(config, wall_clock=wall_clock, rng=random.Random(rng.random()))
        async with trio.open_nursery() as inner:
            handle: DaemonHandle = await inner.start(daemon.run)
            say(
                f"botvisor demo: {args.bots} bots ({mode}), {args.chats} chats each at "
                f"{args.rate:g} msg/s, faults: {args.faults} ({scenario.description})"
            )
            if webhooks:
                say(f"  webhook listener {config.webhook.public_url}/<user_id>")
            kept = "" if args.db is not None else " (fresh; --db PATH keeps one across runs)"
            say(f"  simulated Bot API {api_url}; database {db}{kept}")
            say(f"  admin API {handle.admin_url}  (Authorization: Bearer {admin_token})")
            say(f"  dashboard {handle.admin_url}/  (open it in a browser; sign in with the token)")
            say(
                f"  try: curl -H 'Authorization: Bearer {admin_token}' "
                f"{handle.admin_url}/admin/system/bot-health/summary"
            )
            users = trio.CancelScope()
            inner.start_soon(_run_users, api, users)
            await _drive(api, scenario, tokens, args.duration, handle, say, migrating)
            users.cancel()
            say(
                f"users stopped after {args.duration:g} s; waiting up to {args.drain:g} s "
                "for the last replies"
            )
            with trio.move_on_after(args.drain):
                # Polling a report: the simulator has no "all answered" event.
                while api.report().unanswered:  # noqa: ASYNC110
                    await trio.sleep(0.5)
            rows = [_bot_row(handle, api, token) for token in tokens]
            usage = await _read_usage(handle, admin_token)
            say("shutting down the daemon")
            daemon.request_shutdown()
        outer.cancel_scope.cancel()

    report = api.report()
    _print_summary(say, rows, report)
    _print_usage(say, usage, report)
    return DemoResult(report, rows, db, usage)


async def _read_usage(handle: DaemonHandle, admin_token: str) -> dict[str, Any] | None:
    """The fleet's usage this month, read back through the admin API as an operator would."""
    if handle.admin_url is None:
        return None
    await handle.store.flush()  # the last done marks, and the sends they carry
    try:
        async with httpx.AsyncClient(
            base_url=handle.admin_url, headers={"Authorization": f"Bearer {admin_token}"}
        ) as http:
            answer = await http.get("/admin/analytics/usage", params={"bucket": "month"})
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    totals: dict[str, Any] = answer.json()["totals"]
    return totals


def _print_usage(
    say: Callable[[str], None], usage: dict[str, Any] | None, report: SimReport
) -> None:
    if usage is None:
        say("usage: the admin API did not answer /admin/analytics/usage")
        return
    kinds = ", ".join(f"{kind} {n}" for kind, n in usage["updates_by_type"].items())
    p95 = usage["reply_latency_p95_ms"]
    say(
        f"usage (GET /admin/analytics/usage): updates {usage['updates']} ({kinds}); "
        f"sends {usage['sends']}; distinct users {usage['distinct_users']}; p95 reply latency "
        + ("unknown" if p95 is None else f"≤ {p95:g} ms")
    )
    delivered = sum(bot.updates_confirmed for bot in report.bots)
    agree = "agree" if usage["sends"] == report.replies else "differ"
    say(
        f"  the simulator delivered {delivered} updates"
        f" ({'the same' if delivered == usage['updates'] else 'a different number'}) and saw "
        f"{report.replies} replies: they {agree} with the sends counted"
        + (
            ""
            if agree == "agree"
            else " (a send that timed out after reaching Telegram is not a counted send, and "
            "a reply sent again after a lost done mark is counted once)"
        )
    )


async def _run_users(api: SimulatedBotApi, scope: trio.CancelScope) -> None:
    with scope:
        await api.run()


async def _drive(
    api: SimulatedBotApi,
    scenario: Scenario,
    tokens: list[str],
    duration: float,
    handle: DaemonHandle,
    say: Callable[[str], None],
    migrating: tuple[str, int] | None = None,
) -> None:
    start = trio.current_time()
    outage_at = start + scenario.outage[0] * duration if scenario.outage else math.inf
    revoke_at = start + duration * 0.3 if scenario.revoke_one else math.inf
    migrate_at = start + duration * 0.5 if migrating is not None else math.inf
    next_line = start
    while (now := trio.current_time()) < start + duration:
        if now >= migrate_at and migrating is not None:
            token, group = migrating
            bot_id = BotToken(token).bot_id
            # Mid-conversation, but between questions: a reply refused as "upgraded" is the
            # daemon's to resend, which the summary would otherwise blame on the simulator.
            if not any(chat == group for chat, _ in api.report().bot(bot_id).unanswered):
                api.migrate_group(token, group, MIGRATED_SUPERGROUP)
                user_id = 1001 + bot_id - FIRST_BOT_ID
                say(
                    f"  ! bot {user_id}'s group {group} upgraded to a supergroup, "
                    f"{MIGRATED_SUPERGROUP}"
                )
                migrate_at = math.inf
        if now >= outage_at:
            length = (
                scenario.outage[1] if scenario.outage and scenario.outage[1] else (duration / 3)
            )
            api.outage(now + length, mode=OutageMode.MIXED)
            say(f"  ! injecting an API outage of {length:g} s")
            outage_at = math.inf
        if now >= revoke_at:
            api.revoke(tokens[0])
            say("  ! revoking the token of bot 1001")
            revoke_at = math.inf
        if now >= next_line:
            say(_progress(now - start, api, handle))
            next_line += 2.0
        await trio.sleep(0.25)


def _progress(elapsed: float, api: SimulatedBotApi, handle: DaemonHandle) -> str:
    report = api.report()
    summary = handle.metrics.summary()
    states = " ".join(f"{k} {v}" for k, v in summary.by_status.items())
    answered = 100.0 * report.answered / report.user_messages if report.user_messages else 100.0
    return (
        f"  {elapsed:5.1f}s  messages {report.user_messages:6d}  replies {report.replies:6d}"
        f"  answered {answered:5.1f}%  | {states}"
    )


def _bot_row(handle: DaemonHandle, api: SimulatedBotApi, token: str) -> dict[str, object]:
    bot_id = BotToken(token).bot_id
    user_id = 1001 + bot_id - FIRST_BOT_ID
    sim = api.report().bot(bot_id)
    stats = handle.fleet.get(user_id).statistics()
    return {
        "user_id": user_id,
        "status": stats.status.value,
        "breaker": stats.breaker.state.value,
        "messages": sim.user_messages,
        "answered": sim.answered,
        "duplicates": sim.duplicates,
        "handled": stats.handled_updates,
        "failed_calls": stats.health.failed_requests,
        "retries": stats.retry.retries,
        "ambiguous": stats.ambiguous_sends,
        "dead_letters": stats.dead_letters,
    }


def _print_summary(
    say: Callable[[str], None], rows: list[dict[str, object]], report: SimReport
) -> None:
    columns = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    say("")
    say("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        say("  ".join(str(row[c]).rjust(widths[c]) for c in columns))
    say("")
    say(f"summary: {report.summary()}")
    if report.unanswered == 0 and report.user_messages:
        say(f"every message answered: {report.answered} of {report.user_messages}")
    else:
        say(f"NOT every message answered: {report.unanswered} of {report.user_messages} unanswered")
    if report.misplaced:
        say(
            f"  answers outside their message's forum topic or business connection: "
            f"{report.misplaced} (the handler did not reply where the question was asked)"
        )
    if report.callback_queries:
        say(
            f"  button presses answered (answerCallbackQuery): {report.callbacks_answered} "
            f"of {report.callback_queries}"
        )


def sim_server_command(args: argparse.Namespace) -> int:
    try:
        trio.run(_sim_server, args)
    except Exception as exc:
        failed = find_exception(exc, OSError)
        if failed is None:
            raise
        print(
            f"botvisor sim-server: cannot listen on {args.host}:{args.port}: "
            f"{failed.strerror or failed}; pick another --host or --port",
            file=sys.stderr,
        )
        return 1
    return 0


async def _sim_server(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    api = SimulatedBotApi(rng=random.Random(rng.random()), wall_clock=system_wall_clock())
    tokens = _tokens(args.bots, rng)
    for token in tokens:
        api.add_bot(token)
    _apply_scenario(
        api, SCENARIOS[args.faults], tokens, args.chats, args.rate, messages=args.messages
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: serve_sim(
                api, host=args.host, port=args.port, task_status=task_status
            )
        )
        if args.print_config:
            print(f'[telegram]\napi_base = "{url}"\n')
            for i, token in enumerate(tokens):
                print(f'[[bots]]\nuser_id = {1001 + i}\ntoken = "{token}"\n')
            sys.stdout.flush()
        log.info("simulated Bot API on %s with %d bots", url, len(tokens))
        await api.run()
