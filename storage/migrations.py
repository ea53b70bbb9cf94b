"""The schema, as numbered migrations recorded in SQLite's ``PRAGMA user_version``.

Version N means migrations 1..N have been applied. Each migration runs in its own
``BEGIN IMMEDIATE`` transaction together with the version bump, so a crash (or a failing
migration) leaves the file at the previous version, and two processes cannot both apply one.
A migration is never edited once released: a change of schema is a new migration at the end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlite_utils

from storage.errors import NotADatabaseError, SchemaTooNewError
from storage.rows import COUNTER_COLUMNS, HEALTH_COLUMNS
from storage.usage import EXACT_MEMBERS, new_sketch, pack_members, sketch_bytes

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "migrate",
    "read_schema_version",
    "refuse_foreign",
]


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``apply`` runs inside the transaction that records it."""

    version: int
    name: str
    apply: Callable[[sqlite_utils.Database], None]


def _v1_initial(db: sqlite_utils.Database) -> None:
    db.table("bots").create(
        {
            "user_id": int,
            # The secret itself: this is why the file is mode 0600.
            "token": str,
            "handler": str,
            "settings": str,  # JSON object
            "source": str,  # 'config' or 'api'
            "suspended_reason": str,
            "created_at": float,
            "updated_at": float,
        },
        pk="user_id",
        not_null={"token", "handler", "settings", "source", "created_at", "updated_at"},
    )

    health_types: dict[str, type] = {
        "user_id": int,
        "recorded_at": float,
        "status": str,
        "total_requests": int,
        "successful_requests": int,
        "failed_requests": int,
        "error_rate": float,
        "avg_response_time_ms": float,
        "consecutive_failures": int,
        "circuit_state": str,
        "circuit_failure_count": int,
        "retry_attempts": int,
        "rate_limited_count": int,
        "last_success_at": float,
        "last_failure_at": float,
        "last_error": str,
    }
    assert tuple(health_types) == HEALTH_COLUMNS, "bot_health_metrics must match HealthRow"
    health = db.table("bot_health_metrics")
    health.create(
        {"id": int, **health_types},
        pk="id",
        not_null=set(HEALTH_COLUMNS) - {"last_success_at", "last_failure_at", "last_error"},
    )
    health.create_index(["user_id", "recorded_at"], "idx_health_user_recorded")
    health.create_index(["status", "recorded_at"], "idx_health_status_recorded")
    health.create_index(["recorded_at"], "idx_health_recorded")

    inbox = db.table("inbox")
    inbox.create(
        {
            "user_id": int,
            "update_id": int,
            "chat_id": int,
            "payload": str,  # the update's JSON, as Telegram sent it
            "received_at": float,
            "done_at": float,
        },
        pk=("user_id", "update_id"),
        not_null={"user_id", "update_id", "payload", "received_at"},
    )
    # Start-up and restarts ask "what is still undone for this bot"; done rows are the bulk.
    db.execute("CREATE INDEX idx_inbox_undone ON inbox (user_id, update_id) WHERE done_at IS NULL")

    db.table("offsets").create(
        {"user_id": int, "next_offset": int, "updated_at": float},
        pk="user_id",
        not_null={"next_offset", "updated_at"},
    )

    dead = db.table("dead_letters")
    dead.create(
        {
            "id": int,
            "user_id": int,
            "update_id": int,
            "chat_id": int,
            "reason": str,
            "recorded_at": float,
        },
        pk="id",
        not_null={"user_id", "update_id", "reason", "recorded_at"},
    )
    dead.create_index(["user_id", "recorded_at"], "idx_dead_user_recorded")
    dead.create_index(["recorded_at"], "idx_dead_recorded")


def _v2_bot_counters(db: sqlite_utils.Database) -> None:
    # The counters the summary shows besides the health columns (handled updates, replies...):
    # the latest value per bot is all a restart needs, so one row per bot, replaced in place.
    types: dict[str, type] = {
        "user_id": int,
        "recorded_at": float,
        "handled_updates": int,
        "replies_sent": int,
        "dead_letters": int,
        "ambiguous_sends": int,
        "handler_errors": int,
    }
    assert tuple(types) == COUNTER_COLUMNS, "bot_counters must match BotCounters"
    db.table("bot_counters").create(types, pk="user_id", not_null=set(COUNTER_COLUMNS))


def _v3_chat_migrations(db: sqlite_utils.Database) -> None:
    # A basic group upgraded to a supergroup has a new id for good: a bot's later replies to
    # the old id go to the new one (read at start, like offsets).
    db.table("chat_migrations").create(
        {"user_id": int, "old_chat_id": int, "new_chat_id": int, "migrated_at": float},
        pk=("user_id", "old_chat_id"),
        not_null={"user_id", "old_chat_id", "new_chat_id", "migrated_at"},
    )


def _v4_inbox_lanes(db: sqlite_utils.Database) -> None:
    # The chat lane an update goes to (the actors' chat_key, as text): a lane that fell behind
    # re-reads its own undone updates by it, in update_id order, instead of holding them all
    # in memory. Rows stored before keep NULL (the reader checks those by the rule).
    db.table("inbox").add_column("lane", str)
    db.execute(
        "CREATE INDEX idx_inbox_lane_undone ON inbox (user_id, lane, update_id) "
        "WHERE done_at IS NULL"
    )


def _v5_webhook_registrations(db: sqlite_utils.Database) -> None:
    # What setWebhook was last told for each webhook bot, so a start with unchanged settings
    # makes no Bot API call. The secret itself is never stored: only its fingerprint.
    db.table("webhook_registrations").create(
        {
            "user_id": int,
            "url": str,
            "secret_fingerprint": str,
            "allowed_updates": str,  # a JSON list
            "max_connections": int,
            "registered_at": float,
        },
        pk="user_id",
        not_null={
            "user_id",
            "url",
            "secret_fingerprint",
            "allowed_updates",
            "max_connections",
            "registered_at",
        },
    )


def _v6_usage(db: sqlite_utils.Database) -> None:
    # Usage analytics (storage/usage.py): one integer per (grain, bot, period start, metric),
    # added to in place, and the distinct chats and users of each (grain, bot, period).
    # WITHOUT ROWID: the key is the row (half the bytes of a rowid table plus its key index).
    db.execute(
        "CREATE TABLE usage_counts (grain TEXT NOT NULL, user_id INTEGER NOT NULL, "
        "period INTEGER NOT NULL, metric TEXT NOT NULL, value INTEGER NOT NULL, "
        "PRIMARY KEY (grain, user_id, period, metric)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE usage_members (grain TEXT NOT NULL, user_id INTEGER NOT NULL, "
        "period INTEGER NOT NULL, kind TEXT NOT NULL, member INTEGER NOT NULL, "
        "PRIMARY KEY (grain, user_id, period, kind, member)) WITHOUT ROWID"
    )
    # The fleet's series, the top tenants and retention read by grain and period across bots.
    db.execute("CREATE INDEX idx_usage_counts_period ON usage_counts (grain, period)")
    db.execute("CREATE INDEX idx_usage_members_period ON usage_members (grain, period)")


def _v7_usage_sketches(db: sqlite_utils.Database) -> None:
    # Distinct chats and users beyond storage.usage.EXACT_MEMBERS a bucket: one serialized
    # HLL sketch per (grain, bot, period, kind) instead of a row per member. Buckets already
    # above the threshold are converted here, in the migration's transaction.
    db.execute(
        "CREATE TABLE usage_sketches (grain TEXT NOT NULL, user_id INTEGER NOT NULL, "
        "period INTEGER NOT NULL, kind TEXT NOT NULL, sketch BLOB NOT NULL, "
        "PRIMARY KEY (grain, user_id, period, kind)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX idx_usage_sketches_period ON usage_sketches (grain, period)")
    conn = db.conn
    for key in conn.execute(
        "SELECT grain, user_id, period, kind FROM usage_members "
        "GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > ?",
        (EXACT_MEMBERS,),
    ).fetchall():
        where = "grain = ? AND user_id = ? AND period = ? AND kind = ?"
        members = conn.execute(f"SELECT member FROM usage_members WHERE {where}", key)
        sketch = sketch_bytes(new_sketch(member for (member,) in members.fetchall()))
        conn.execute("INSERT INTO usage_sketches VALUES (?, ?, ?, ?, ?)", (*key, sketch))
        conn.execute(f"DELETE FROM usage_members WHERE {where}", key)


def _v8_dead_letter_actions(db: sqlite_utils.Database) -> None:
    # Dead letters an operator can act on: the update itself (the inbox row may be pruned
    # once done, so the dead letter carries its own copy), the lane it goes back to, and when
    # it was last redriven. Rows stored before keep NULL payload: listed, never redriven.
    dead = db.table("dead_letters")
    dead.add_column("payload", str)  # the update's JSON, as received
    dead.add_column("lane", str)  # the actors' lane name, as the inbox stores it
    dead.add_column("redriven_at", float)
    # A bot's pages of dead letters, newest (highest id) first: (user_id, id) is in id order
    # within a bot, which (user_id, recorded_at) is not quite. And "the dead letters of this
    # update", which a redrive's refusals look up.
    db.execute("CREATE INDEX idx_dead_user_id ON dead_letters (user_id, id)")
    db.execute("CREATE INDEX idx_dead_user_update ON dead_letters (user_id, update_id)")


def _v9_webhook_certificates(db: sqlite_utils.Database) -> None:
    # The SHA-256 of the certificate uploaded with setWebhook (direct TLS), so a renewed
    # certificate registers the bot again; NULL for a registration without one (every row
    # stored before, which is what they were).
    db.table("webhook_registrations").add_column("certificate_fingerprint", str)


def _v10_usage_buckets(db: sqlite_utils.Database) -> None:
    # One row per (grain, bot, period) instead of one per metric and one per member (see
    # storage/usage.py): the counts a JSON object keyed by metric id, the distinct chats and
    # users packed (exact) or a sketch. The old tables are converted and dropped; the view
    # usage_counts shows the counts as the old table had them.
    db.execute("CREATE TABLE usage_metrics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    db.execute(
        "CREATE TABLE usage_buckets (grain TEXT NOT NULL, user_id INTEGER NOT NULL, "
        "period INTEGER NOT NULL, counts TEXT NOT NULL DEFAULT '{}', "
        "chats BLOB, chats_hll BLOB, users BLOB, users_hll BLOB, "
        "PRIMARY KEY (grain, user_id, period)) WITHOUT ROWID"
    )
    # The fleet's series, the top tenants and retention read by grain and period across bots.
    db.execute("CREATE INDEX idx_usage_buckets_period ON usage_buckets (grain, period)")
    conn = db.conn
    conn.execute(
        "INSERT INTO usage_metrics (name) SELECT DISTINCT metric FROM usage_counts ORDER BY 1"
    )
    conn.execute(
        "INSERT INTO usage_buckets (grain, user_id, period, counts) "
        "SELECT c.grain, c.user_id, c.period, json_group_object(CAST(m.id AS TEXT), c.value) "
        "FROM usage_counts c JOIN usage_metrics m ON m.name = c.metric GROUP BY 1, 2, 3"
    )
    column = {"chat": "chats", "user": "users"}
    sets: dict[tuple[str, int, int, str], list[int]] = {}
    for grain, user_id, period, kind, member in conn.execute(
        "SELECT grain, user_id, period, kind, member FROM usage_members"
    ).fetchall():
        sets.setdefault((grain, user_id, period, kind), []).append(member)
    blobs = [((*key[:3], column[key[3]]), pack_members(members)) for key, members in sets.items()]
    blobs += [
        ((grain, user_id, period, column[kind] + "_hll"), bytes(sketch))
        for grain, user_id, period, kind, sketch in conn.execute(
            "SELECT grain, user_id, period, kind, sketch FROM usage_sketches"
        ).fetchall()
    ]
    for (grain, user_id, period, name), blob in blobs:
        conn.execute(
            f"INSERT INTO usage_buckets (grain, user_id, period, {name}) VALUES (?, ?, ?, ?) "
            f"ON CONFLICT (grain, user_id, period) DO UPDATE SET {name} = excluded.{name}",
            (grain, user_id, period, blob),
        )
    for table in ("usage_counts", "usage_members", "usage_sketches"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute(
        "CREATE VIEW usage_counts (grain, user_id, period, metric, value) AS "
        "SELECT b.grain, b.user_id, b.period, m.name, j.value "
        "FROM usage_buckets AS b, json_each(b.counts) AS j "
        "JOIN usage_metrics AS m ON m.id = CAST(j.key AS INTEGER)"
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "bots, bot_health_metrics, inbox, offsets, dead_letters", _v1_initial),
    Migration(2, "bot_counters", _v2_bot_counters),
    Migration(3, "chat_migrations", _v3_chat_migrations),
    Migration(4, "inbox.lane and its undone index", _v4_inbox_lanes),
    Migration(5, "webhook_registrations", _v5_webhook_registrations),
    Migration(6, "usage_counts and usage_members (usage analytics)", _v6_usage),
    Migration(7, "usage_sketches (distinct counts beyond the exact threshold)", _v7_usage_sketches),
    Migration(8, "dead_letters.payload, lane and redriven_at (redrive)", _v8_dead_letter_actions),
    Migration(9, "webhook_registrations.certificate_fingerprint", _v9_webhook_certificates),
    Migration(
        10, "usage_buckets: a row per bucket (usage_counts becomes a view)", _v10_usage_buckets
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def read_schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version (0 for a new file); raises ``sqlite3.DatabaseError`` if the
    file is not SQLite."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(
    db: sqlite_utils.Database, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Apply the pending migrations in order; return ``(version before, version after)``.

    Idempotent: on an up-to-date file it changes nothing and returns ``(n, n)``.
    """
    for index, migration in enumerate(migrations, start=1):
        if migration.version != index:
            raise ValueError(
                f"migration versions must be 1, 2, 3... in order; "
                f"position {index} holds version {migration.version}"
            )
    latest = len(migrations)
    conn = db.conn
    name = _file_name(conn)
    start = read_schema_version(conn)
    if start > latest:
        raise SchemaTooNewError(name, start, latest)
    if start == 0:
        refuse_foreign(conn, name)
    for migration in migrations[start:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated between our read and our lock.
            current = read_schema_version(conn)
            if current >= migration.version:
                conn.execute("COMMIT")
                continue
            migration.apply(db)
            conn.execute(f"PRAGMA user_version = {migration.version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return start, read_schema_version(conn)


def refuse_foreign(conn: sqlite3.Connection, name: str) -> None:
    """A version-0 file with tables belongs to some other program: never add ours to it."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name LIMIT 3"
        )
    ]
    if tables:
        raise NotADatabaseError(
            f"{name} is a SQLite database of another program (it has tables such as "
            f"{', '.join(tables)} but no botvisor schema version); use another storage.path"
        )


def _file_name(conn: sqlite3.Connection) -> str:
    for _seq, schema, file in conn.execute("PRAGMA database_list"):
        if schema == "main":
            return str(file) or ":memory:"
    return ":memory:"
