"""Engines and schema upgrades: SQLite (WAL, the embedded default) or PostgreSQL (psycopg 3).

SQLite settings, per connection:

- ``journal_mode=WAL``: readers never block the writer, and a commit appends to the WAL.
- ``synchronous=FULL`` (default; ``NORMAL`` selectable): in WAL mode NORMAL skips the fsync of the WAL
  at commit, so a power cut can lose the last acknowledged batches: updates 既存住基 was told were
  accepted, and whose F2 messages the prefecture would then never receive. limits-notes §1 measured
  FULL at no measurable cost for 1,000-row batches (one extra fsync, ~0.2 ms, per ~100 ms batch),
  so durability wins.
- ``foreign_keys=ON``, ``busy_timeout`` (writers queue instead of failing), ``temp_store=MEMORY``,
  and a page cache (``cache_mib``) large enough for the hot part of the hash indexes.
- Transactions: the driver's implicit BEGIN is disabled and SQLAlchemy emits its own. Read
  transactions use ``BEGIN`` (deferred, they never take the write lock); :func:`write_transaction`
  uses ``BEGIN IMMEDIATE`` so a writer takes SQLite's single write lock before it reads the state it
  will act on (no lost updates, no SQLITE_BUSY on lock upgrade between two gunicorn workers).

PostgreSQL: writers serialise on the ``audit_head`` row (``SELECT ... FOR UPDATE``, taken first by
every write transaction that appends to the audit chain), which gives the same single-writer order.

Every engine is created with ``hide_parameters=True``: statement parameters (ciphertexts, hashes,
but also anything a bug might pass) never appear in logs or exception messages.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
_WRITE_OPTION: Final = "jukics_write"
_UPGRADE_LOCK_KEY: Final = 0x6A756B69  # "juki": pg_advisory_xact_lock key for schema upgrades


class StoreError(Exception):
    """The store cannot do what was asked. ``code`` is stable; messages never contain personal data."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(
    url: str,
    *,
    synchronous: str = "FULL",
    cache_mib: int = 64,
    busy_timeout_ms: int = 30_000,
    echo: bool = False,
    **kwargs: Any,
) -> Engine:
    """An engine for ``sqlite:///path`` or ``postgresql+psycopg://...`` (``postgresql://`` is mapped to psycopg)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, hide_parameters=True, pool_pre_ping=True, echo=echo, **kwargs)
    if parsed.get_backend_name() != "sqlite":
        raise StoreError("E_DB_URL", "database.url must be sqlite:/// or postgresql+psycopg://")
    if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
        raise StoreError("E_DB_CONFIG", "synchronous must be FULL, NORMAL or EXTRA")
    engine = create_engine(parsed, hide_parameters=True, echo=echo, **kwargs)
    pragmas = (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous.upper()}",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
        "PRAGMA temp_store=MEMORY",
        f"PRAGMA cache_size=-{int(cache_mib) * 1024}",
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        try:
            for pragma in pragmas:
                cur.execute(pragma)
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION, False):
            _begin_immediate(conn.connection.driver_connection, busy_timeout_ms)
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _begin_immediate(raw: Any, busy_timeout_ms: int) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock in steps of at most 2 ms.

    SQLite's own busy handler sleeps 1, 2, 5, ... up to 100 ms between tries, so a writer that queues
    behind another one (intake and the links worker take turns) can wait 100 ms for a lock that was
    free after 1 ms; that was the relay's latency tail. Here the wait is short steps until the same
    deadline; the connection's busy_timeout stays for everything else.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    raw.execute("PRAGMA busy_timeout=0")
    try:
        pause = 0.0002
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.002)
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction: committed on success, rolled back on any exception.

    On SQLite this is ``BEGIN IMMEDIATE`` (the write lock is taken before anything is read).
    """
    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest Alembic revision; a no-op when it is there already.

    Runs in one transaction (SQLite and PostgreSQL both have transactional DDL): a failing
    migration leaves the schema as it was. Concurrent upgrades serialise (write lock / advisory lock).
    Returns the revision the database is at afterwards.
    """
    from alembic import command

    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _UPGRADE_LOCK_KEY})
        command.upgrade(_alembic_config(conn), "head")
        return current_revision(conn) or ""


def current_revision(bind: Engine | Connection) -> str | None:
    """The Alembic revision the database is at (None before the first upgrade)."""
    from alembic.runtime.migration import MigrationContext

    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    return MigrationContext.configure(bind).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    if head is None:
        raise StoreError("E_DB_MIGRATIONS", "no migration found")
    return head


def ensure_sqlite_parent(url: str) -> None:
    """Create the directory of a SQLite database file (mode 0700) when it is missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
