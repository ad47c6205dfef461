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


def test_a_writer_waits_for_the_write_lock_and_gets_it_once_it_is_free(tmp_path):
    import sqlite3
    import threading

    path = tmp_path / "w.sqlite"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=10_000)
    with write_transaction(engine) as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    done = threading.Event()

    def writer() -> None:
        with write_transaction(engine) as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert not done.wait(0.3)  # queued behind the holder, not failed and not through
    holder.execute("COMMIT")
    t.join(10)
    assert done.is_set()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM t ORDER BY x")).scalars().all() == [1, 2]
        # the short-step wait leaves the connection's own busy_timeout as configured
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
    holder.close()
    engine.dispose()


def test_a_writer_gives_up_at_the_busy_timeout_and_writes_nothing(tmp_path):
    import sqlite3

    path = tmp_path / "g.sqlite"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=200)
    with write_transaction(engine) as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"), write_transaction(engine) as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    holder.execute("ROLLBACK")
    holder.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM t")).scalar() == 0
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 200
    engine.dispose()
