"""Crash: ``kill -9`` the real daemon at random moments while users write; no update is lost.

Simulated users (the test) send a known stream of messages for the whole test. The daemon
process is started and killed with SIGKILL 20 times, at a random moment each time, then
started once more and left to finish. Then:

- every message the simulator delivered was handled at least once (each has a reply);
- the replies beyond the first (duplicates) after each kill are at most the updates that
  were in flight at that kill: in the inbox, not yet marked done;
- the database passes ``PRAGMA integrity_check`` after every kill and at the end.
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass
from pathlib import Path

import trio

from actors import BotToken
from actors.simulator import SimulatedBotApi, serve_sim
from tests.e2e.durable import (
    ADMIN_ENV,
    integrity,
    kill_if_running,
    query,
    write_durable_config,
)
from tests.e2e.process import DaemonProcess

KILLS = 20
BOTS = 3
CHATS = 4  # private chats per bot
SEND_EVERY = 0.01  # seconds between two user messages (to the next bot and chat in turn)
# When the kill comes. Start-up takes as long as it takes on this machine, so the moments are
# measured from readiness (the admin API listening), not guessed from the spawn: every
# STARTUP_KILL_EVERY-th kill lands in start-up, at a random fraction of the start-up time the
# previous run took; the others AFTER_READY seconds after the daemon was ready.
STARTUP_KILL_EVERY = 4
AFTER_READY = (0.1, 1.0)


@dataclass
class Kill:
    after: float  # seconds after the process was spawned
    in_flight: int  # updates in the inbox and not done when it died
    duplicates: int  # duplicate replies added while the next run was alive


def undone_updates(db: Path) -> int:
    """Updates in the inbox not marked done; 0 if the daemon died before creating it."""
    if not db.exists():
        return 0
    assert integrity(db) == ["ok"]
    if not query(db, "SELECT name FROM sqlite_master WHERE name = 'inbox'"):
        return 0
    count: int = query(db, "SELECT COUNT(*) FROM inbox WHERE done_at IS NULL")[0][0]
    return count


async def users(api: SimulatedBotApi, tokens: list[str], stop: trio.Event) -> None:
    """The known stream: message n goes to bot n % BOTS, chat (n // BOTS) % CHATS."""
    n = 0
    while not stop.is_set():
        chat = 900 + (n // BOTS) % CHATS
        api.send_user_message(tokens[n % BOTS], chat, f"msg {n} to chat {chat}")
        n += 1
        await trio.sleep(SEND_EVERY)


async def test_kill_minus_nine_twenty_times_loses_no_update(tmp_path: Path) -> None:
    rng = random.Random(31)
    api = SimulatedBotApi(rng=random.Random(32))
    tokens = {2001 + i: SimulatedBotApi.make_token(6_400_000_001 + i, rng) for i in range(BOTS)}
    for token in tokens.values():
        api.add_bot(token)
    db = tmp_path / "crash.db"
    config_path = tmp_path / "botvisor.toml"
    kills: list[Kill] = []
    daemons: list[DaemonProcess] = []

    def duplicate_replies() -> int:
        return sum(bot.duplicate_replies for bot in api.report().bots)

    async with trio.open_nursery() as nursery:
        try:
            api_url = await nursery.start(serve_sim, api)
            write_durable_config(
                config_path,
                api_base=api_url,
                db_path=db,
                bots=tokens,
                poll_timeout=1,
                handler="tests.e2e.handlers:echo_after_work",
            )
            stop_users = trio.Event()
            nursery.start_soon(users, api, list(tokens.values()), stop_users)

            startup: float | None = None  # how long the last measured start-up took
            for n in range(KILLS):
                duplicates_before = duplicate_replies()
                daemon = DaemonProcess(config_path, env=ADMIN_ENV)
                daemons.append(daemon)
                spawned = trio.current_time()
                if startup is not None and n % STARTUP_KILL_EVERY == 1:
                    # In start-up (migrating, loading, replaying): before the moment the last
                    # run was ready.
                    kill_at = spawned + rng.uniform(0.1, 0.9) * startup
                    with trio.move_on_at(kill_at):
                        await daemon.start(nursery)
                else:
                    # While updates stream through: counted from readiness, however long
                    # start-up took on this machine.
                    await daemon.start(nursery)
                    startup = trio.current_time() - spawned
                    kill_at = trio.current_time() + rng.uniform(*AFTER_READY)
                after = kill_at - spawned
                await trio.sleep_until(kill_at)
                daemon.kill()
                assert await daemon.wait() == -signal.SIGKILL
                if kills:
                    # This run replayed what the previous kill cut off.
                    kills[-1].duplicates = duplicate_replies() - duplicates_before
                kills.append(Kill(after, undone_updates(db), 0))

            stop_users.set()
            duplicates_before = duplicate_replies()
            final = DaemonProcess(config_path, env=ADMIN_ENV)
            daemons.append(final)
            await final.start(nursery)
            with trio.fail_after(60):
                while api.report().unanswered:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            final.send_signal(signal.SIGTERM)
            assert await final.wait() == 0, final.text
            kills[-1].duplicates = duplicate_replies() - duplicates_before
            nursery.cancel_scope.cancel()
        finally:
            kill_if_running(*daemons)

    report = api.report()
    print(
        f"\n{KILLS} kills; {report.user_messages} messages; in flight at each kill "
        f"{[k.in_flight for k in kills]}; duplicates after each "
        f"{[k.duplicates for k in kills]}; {report.summary()}"
    )
    # None lost: every message the users sent was answered after the final restart.
    assert report.user_messages > KILLS * BOTS
    assert report.unanswered == 0, report.summary()
    assert report.answered == report.user_messages
    # Handled again only what was in flight at a kill.
    for kill in kills:
        assert kill.duplicates <= kill.in_flight, kills
    # The kills did catch updates in flight (else this test would prove nothing).
    assert sum(kill.in_flight > 0 for kill in kills) >= KILLS // 4, kills
    assert integrity(db) == ["ok"]
    assert undone_updates(db) == 0
    for daemon in daemons:
        assert "Traceback" not in daemon.text, daemon.text

    # Usage analytics survived the kills: every update counted exactly once (in the inbox's
    # own transaction), by bot; sends counted with the done marks, so each update's last
    # handling is counted, and a reply is counted at most once however often it was sent.
    counted = dict(
        query(
            db,
            "SELECT user_id, SUM(value) FROM usage_counts WHERE grain = 'month' "
            "AND metric LIKE 'updates.%' GROUP BY user_id",
        )
    )
    assert counted == {
        user_id: report.bot(BotToken(token).bot_id).user_messages
        for user_id, token in tokens.items()
    }
    assert sum(counted.values()) == report.user_messages
    ((sends,),) = query(
        db, "SELECT SUM(value) FROM usage_counts WHERE grain = 'day' AND metric = 'sends'"
    )
    assert report.answered <= sends <= report.replies, (sends, report.summary())
    # The roll-ups agree with the hours they merge.
    for metric in ("sends", "updates.message"):
        totals = {
            grain: query(
                db,
                "SELECT SUM(value) FROM usage_counts WHERE grain = ? AND metric = ?",
                (grain, metric),
            )[0][0]
            for grain in ("hour", "day", "month")
        }
        assert len(set(totals.values())) == 1, (metric, totals)
