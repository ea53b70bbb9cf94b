"""SQLite storage: one writer that group-commits, read-only readers, versioned schema.

Other packages import from here only::

    store = await nursery.start(Store(path).run)
    await store.insert_snapshots(rows)
"""

from storage.config import StorageConfig, storage_path_problem
from storage.db import migrate_file, open_database
from storage.dead_letters import (
    DeadLetter,
    DeadLetterPage,
    DeadLetterSelection,
    Redrive,
    Refusal,
)
from storage.errors import (
    DatabaseFailedError,
    NotADatabaseError,
    SchemaTooNewError,
    StorageError,
    StoreClosedError,
    is_database_failure,
)
from storage.migrations import MIGRATIONS, SCHEMA_VERSION, Migration, migrate
from storage.rows import (
    COUNTER_COLUMNS,
    HEALTH_COLUMNS,
    BotCounters,
    HealthRow,
    InboxEntry,
    WebhookRegistration,
)
from storage.store import (
    BOT_SOURCES,
    UNHEALTHY_STATUSES,
    BotRecord,
    Store,
    StoreStatistics,
)
from storage.usage import (
    GRAINS,
    LATENCY_BOUNDS_MS,
    LATENCY_BOUNDS_S,
    LATENCY_METRICS,
    OUTCOMES,
    TOP_METRICS,
    UsageRow,
    grain_seconds,
    iso_utc,
    latency_index,
    latency_metric,
    latency_quantile,
    period_start,
)
from storage.writer import Job, Offload, StoreWriter, WriterState, WriterStatistics, run_inline

__all__ = [
    "BOT_SOURCES",
    "COUNTER_COLUMNS",
    "GRAINS",
    "HEALTH_COLUMNS",
    "LATENCY_BOUNDS_MS",
    "LATENCY_BOUNDS_S",
    "LATENCY_METRICS",
    "MIGRATIONS",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "TOP_METRICS",
    "UNHEALTHY_STATUSES",
    "BotCounters",
    "BotRecord",
    "DatabaseFailedError",
    "DeadLetter",
    "DeadLetterPage",
    "DeadLetterSelection",
    "HealthRow",
    "InboxEntry",
    "Job",
    "Migration",
    "NotADatabaseError",
    "Offload",
    "Redrive",
    "Refusal",
    "SchemaTooNewError",
    "StorageConfig",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreStatistics",
    "StoreWriter",
    "UsageRow",
    "WebhookRegistration",
    "WriterState",
    "WriterStatistics",
    "grain_seconds",
    "is_database_failure",
    "iso_utc",
    "latency_index",
    "latency_metric",
    "latency_quantile",
    "migrate",
    "migrate_file",
    "open_database",
    "period_start",
    "run_inline",
    "storage_path_problem",
]
