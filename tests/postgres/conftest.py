"""A throwaway PostgreSQL 15 server for the store tests, on a unix socket only (no TCP).

Session scope: initdb into a fresh temp dir (as the ``postgres`` user when the tests run as root),
start it with ``listen_addresses=''`` and the socket in that dir, and remove everything afterwards.
Each test gets a fresh database. The store and audit tests of tests/unit are re-run here through
``db_url`` (see test_postgres_store.py); the shared fixtures come from tests/unit/store/store_support.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "unit" / "store"))
sys.path.insert(0, str(HERE.parent / "unit" / "audit"))

from store_support import *  # noqa: E402, F403 - shared fixtures (engine, store, keystore, clock, register, audit)

PG_BIN = Path(os.environ.get("JUKICS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PORT = 5432  # only names the socket file inside our own directory; nothing listens on TCP


def _as_server_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; run them as the postgres user then.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict[str, Path]]:
    base = Path(tempfile.mkdtemp(prefix="jukics-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data, log = base / "data", base / "server.log"
    started = False
    try:
        _run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-locale",
              "-E", "UTF8", "--no-sync"])
        options = f"-c listen_addresses='' -c unix_socket_directories='{base}' -c port={PORT} -c fsync=off"
        _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"])
        started = True
        yield {"host": base, "data": data, "log": log}
    finally:
        if started:
            _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def _admin(server: dict[str, Path]) -> psycopg.Connection:
    return psycopg.connect(host=str(server["host"]), port=PORT, user="postgres", dbname="postgres", autocommit=True)


@pytest.fixture
def db_url(postgres_server: dict[str, Path]) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with _admin(postgres_server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@/{name}?host={postgres_server['host']}&port={PORT}"
    with _admin(postgres_server) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def raw_storage_files(postgres_server: dict[str, Path]):
    """The files PostgreSQL keeps this database in (its base/ directory), the WAL and the server log."""
    since = time.time() - 1

    def files(engine, *, checkpoint: bool) -> list[Path]:
        with engine.connect() as conn:
            if checkpoint:
                conn.execute(text("CHECKPOINT"))
            oid = conn.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()")).scalar_one()
        data = postgres_server["data"]
        found = [p for p in (data / "base" / str(oid)).rglob("*") if p.is_file()]
        found += [p for p in (data / "pg_wal").iterdir() if p.is_file() and p.stat().st_mtime >= since]
        found.append(postgres_server["log"])
        return found

    return files
