"""A group upgraded to a supergroup keeps its replies: they follow it to the new chat id."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio
import trio.testing

from actors import ChatMigrations, HandlerContext, migration_announced
from tests import payloads
from tests.actors.scripted_telegram import ScriptedTelegram
from tests.actors.test_bot import with_handler
from tests.harness import running_fleet

GROUP = -4001
SUPERGROUP = -1001234567890


def refusing_the_old_group(method: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Telegram after the upgrade: a send to the basic group names the supergroup."""
    if method == "sendMessage" and params.get("chat_id") == GROUP:
        return payloads.migrated(SUPERGROUP)
    return None


def stored_migrations(db: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT user_id, old_chat_id, new_chat_id FROM chat_migrations ORDER BY old_chat_id"
        ).fetchall()
    conn.close()
    return [(int(a), int(b), int(c)) for a, b, c in rows]


def group_text(update_id: int, text: str) -> dict[str, Any]:
    update = payloads.group_message(update_id, chat_id=GROUP)
    update["message"]["text"] = text
    return update


async def test_a_refused_reply_goes_once_to_the_supergroup_and_later_ones_straight_there(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "m.db"
    telegram = ScriptedTelegram(answer=refusing_the_old_group)
    async with running_fleet(db, [1], wrap_transport=telegram.wrap) as fleet:
        telegram.push(group_text(1, "first"))
        await trio.sleep(10)
        telegram.push(group_text(2, "second"))
        await trio.sleep(10)
        letters = await fleet.handle.store.list_dead_letters(1)
        replies = fleet.handle.fleet.get(1).statistics().replies_sent
    assert [(p["chat_id"], p["text"]) for p in telegram.sent()] == [
        (GROUP, "first"),
        (SUPERGROUP, "first"),
        (SUPERGROUP, "second"),
    ]
    assert letters == [] and replies == 2
    assert stored_migrations(db) == [(1, GROUP, SUPERGROUP)]

    # After a restart the stored mapping is read back: not one more send to the old id.
    again = ScriptedTelegram(answer=refusing_the_old_group)
    async with running_fleet(db, [1], wrap_transport=again.wrap):
        again.push(group_text(3, "third"))
        await trio.sleep(10)
    assert [(p["chat_id"], p["text"]) for p in again.sent()] == [(SUPERGROUP, "third")]


async def test_the_upgrade_service_message_records_the_mapping(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    db = tmp_path / "s.db"
    telegram = ScriptedTelegram(answer=refusing_the_old_group)
    async with running_fleet(
        db,
        [1],
        configure=with_handler(f"{__name__}:typing_then_echo"),
        wrap_transport=telegram.wrap,
    ):
        telegram.push(
            payloads.migrate_to_supergroup(1, old_chat_id=GROUP, new_chat_id=SUPERGROUP),
            group_text(2, "after the upgrade"),
        )
        await trio.sleep(10)
    assert [(p["chat_id"], p["text"]) for p in telegram.sent()] == [
        (SUPERGROUP, "after the upgrade")
    ]
    # ctx.call follows it too (the service message itself is already answered there).
    assert [p["chat_id"] for p in telegram.sent("sendChatAction")] == [SUPERGROUP, SUPERGROUP]
    assert stored_migrations(db) == [(1, GROUP, SUPERGROUP)]


async def test_a_reply_follows_a_migration_once_and_drops_a_quote_of_the_old_group(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    def refusing_everywhere(method: str, params: dict[str, Any]) -> dict[str, Any] | None:
        return payloads.migrated(SUPERGROUP) if method == "sendMessage" else None

    telegram = ScriptedTelegram(answer=refusing_everywhere)
    async with running_fleet(
        tmp_path / "q.db",
        [1],
        configure=_quoting,
        wrap_transport=telegram.wrap,
    ):
        telegram.push(group_text(1, "hi"))
        await trio.sleep(10)
    # Once to the old group (quoted), once to the supergroup (unquoted), and no loop.
    assert telegram.sent() == [
        {
            "chat_id": GROUP,
            "text": "quoted",
            "reply_parameters": {"message_id": 10, "allow_sending_without_reply": True},
        },
        {"chat_id": SUPERGROUP, "text": "quoted"},
    ]


_quoting = with_handler("tests.actors.test_chat_migration:quote_once")


async def typing_then_echo(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Handler for the tests: "typing…" in the update's chat, then echo its text."""
    await ctx.call("sendChatAction", chat_id=ctx.chat_id, action="typing")
    text = update["message"].get("text")
    if text:
        await ctx.reply(text)


async def quote_once(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Handler for the tests: one quoted reply."""
    await ctx.reply("quoted", quote=True)


def test_an_upgrade_is_announced_in_the_old_group_and_in_the_new_one() -> None:
    assert migration_announced(payloads.migrate_to_supergroup()) == (GROUP, SUPERGROUP)
    first_in_supergroup = {
        "update_id": 2,
        "message": {
            "message_id": 1,
            "date": payloads.DATE,
            "chat": payloads.supergroup_chat(SUPERGROUP),
            "from": payloads.user(222),
            "migrate_from_chat_id": GROUP,
        },
    }
    assert migration_announced(first_in_supergroup) == (GROUP, SUPERGROUP)
    assert migration_announced(payloads.group_message()) is None
    assert migration_announced(payloads.poll()) is None


def test_migrations_resolve_to_the_current_chat_without_looping() -> None:
    migrations = ChatMigrations()
    assert migrations.record(GROUP, SUPERGROUP)
    assert not migrations.record(GROUP, SUPERGROUP)
    assert migrations.resolve(GROUP) == SUPERGROUP
    assert migrations.resolve(111) == 111 and migrations.resolve("@news") == "@news"
    migrations.restore({-1: -2, -2: -1})  # a loop written into the file by hand
    assert migrations.resolve(-1) in (-1, -2)
    assert migrations.resolve(GROUP) == SUPERGROUP
