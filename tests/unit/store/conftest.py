"""Store tests on SQLite (a temporary file per test). tests/postgres runs the same tests on PostgreSQL."""

from __future__ import annotations

import pytest
from store_support import *  # noqa: F403 - shared fixtures (engine, store, keystore, clock, register, audit)


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'jukics.sqlite'}"


@pytest.fixture
def raw_storage_files(db_url):
    """Every file SQLite keeps this database in (the database, its WAL and shared-memory index)."""
    from pathlib import Path

    from sqlalchemy import text

    def files(engine, *, checkpoint: bool) -> list[Path]:
        if checkpoint:
            with engine.connect() as conn:
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        path = Path(db_url.removeprefix("sqlite:///"))
        return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]

    return files
