"""SQLite engine settings (this file runs on SQLite only)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from jukics.store.db import StoreError, make_engine, write_transaction


def test_pragmas(engine):
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_normal_synchronous_is_selectable(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'n.sqlite'}", synchronous="NORMAL")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1
    engine.dispose()
    with pytest.raises(StoreError):
        make_engine(f"sqlite:///{tmp_path / 'n.sqlite'}", synchronous="OFF")
    with pytest.raises(StoreError) as info:
        make_engine("mysql://x/y")
    assert info.value.code == "E_DB_URL"


def test_write_transaction_takes_the_write_lock_first(engine, tmp_path):
    # A second writer waits for (and with a short timeout fails on) the lock held by BEGIN IMMEDIATE,
    # before it has read anything: no lost update is possible.
    other = make_engine(str(engine.url), busy_timeout_ms=50)
    try:
        with write_transaction(engine), pytest.raises(Exception, match="locked"), write_transaction(other):
            pass
        # Plain reads never take the lock.
        with engine.connect() as reader, reader.begin(), write_transaction(other) as conn:
            reader.execute(text("SELECT count(*) FROM outbox"))
            conn.execute(text("UPDATE outbox_head SET last_seq = 0"))
    finally:
        other.dispose()


def test_rollback_on_exception(engine):
    with pytest.raises(RuntimeError), write_transaction(engine) as conn:
        conn.execute(text("UPDATE outbox_head SET last_seq = 99"))
        raise RuntimeError("boom")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT max(last_seq) FROM outbox_head")).scalar() == 0
