"""Fixtures for the storage tests: real SQLite files in ``tmp_path``, on Trio's real clock
(the writer and readers work in threads, and a MockClock could jump while one runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from storage import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "botvisor.db"


@pytest.fixture
async def store(db_path: Path, nursery: trio.Nursery) -> AsyncIterator[Store]:
    started: Store = await nursery.start(Store(db_path).run)
    yield started
    await started.stop()
