"""Backup benchmark: create (snapshot + integrity + digests + age to two recipients), then restore with
full verification, on a store of synthetic residents; sizes and the ratio to a plain copy of the DB.

    PYTHONPATH=app .venv/bin/python bench/backup.py --residents 1000000      # the target size
    PYTHONPATH=app .venv/bin/python bench/backup.py --from /tmp/load1m       # a kept initial_load --out
    PYTHONPATH=app .venv/bin/python bench/backup.py --postgres --residents 20000

``--postgres``: the loaded store is copied into a throwaway PostgreSQL server (initdb in a temp dir,
unix socket only, $JUKICS_PG_BIN or /usr/lib/postgresql/15/bin, as the postgres user when run as
root); the baseline is a plain ``pg_dump -Fc -Z0`` of it, then backup, drill (scratch database) and
restore (new database, swapped in by rename) are timed.

Targets: backup of 1,000,000 residents < 60 s; restore + full verification < 120 s. The plain copy
(SQLite backup API into an unencrypted file) is timed in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    import pyrage

    import initial_load
    from jukics.backup import archive as bk
    from jukics.config import load_config
    from jukics.service import Service

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--residents", type=int, default=1_000_000)
    ap.add_argument("--from", dest="source", type=Path, help="an existing initial_load --out folder")
    ap.add_argument("--postgres", action="store_true", help="back up a PostgreSQL copy of the store instead")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="jukics-bench-backup-"))
    try:
        if args.source:
            data = args.source.resolve()
        else:
            data = out / "data"
            data.mkdir()
            t0 = time.perf_counter()
            r = initial_load.run(data, args.residents, 1, 1000, 2, 3600)
            print(f"backup: loaded {r['residents']} residents in {time.perf_counter() - t0:.0f}s", flush=True)
        config = load_config(data / "jukics.toml")
        if args.postgres:
            return _postgres(config, out)
        escrow = pyrage.x25519.Identity.generate()
        (out / "escrow.key").write_text(f"{escrow}\n")
        settings = bk.BackupSettings(out / "backups", 3, str(escrow.to_public()), out / "backups" / "id.sealed", None)
        keystore = Service(config).keystore
        bk.provision_identity(settings.identity_file, keystore)
        db_file = Path(config.database_url.removeprefix("sqlite:///"))

        t0 = time.perf_counter()
        src, dst = sqlite3.connect(db_file), sqlite3.connect(out / "plain.sqlite")
        src.backup(dst)
        src.close()
        dst.close()
        plain_s = time.perf_counter() - t0
        plain = (out / "plain.sqlite").stat().st_size
        (out / "plain.sqlite").unlink()

        t0 = time.perf_counter()
        res = bk.create_backup(config.database_url, config.municipality_code, settings, keystore)
        create_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        bk.drill(res.path, bk.load_identity_file(out / "escrow.key"), config.municipality_code, keystore, out)
        verify_s = time.perf_counter() - t0

        target = out / "restore"
        target.mkdir()
        shutil.copy(data / "jukics.toml", target / "jukics.toml")
        restore_cfg = load_config(data / "jukics.toml")
        from dataclasses import replace

        restore_cfg = replace(restore_cfg, database_url=f"sqlite:///{target}/jukics.db")
        t0 = time.perf_counter()
        bk.restore_backup(res.path, bk.load_identity_file(out / "escrow.key"), restore_cfg, keystore)
        restore_s = time.perf_counter() - t0
        residents = res.manifest["row_counts"].get("residents_current", 0)
        print(f"backup: {residents} residents; plain copy {plain / 2**20:.0f} MiB in {plain_s:.1f}s; "
              f"backup {res.size_bytes / 2**20:.0f} MiB (ratio {res.size_bytes / plain:.3f} of the plain copy) "
              f"in {create_s:.1f}s ({create_s / plain_s:.1f}x the plain copy; target < 60 s at 1M); "
              f"verify (drill) {verify_s:.1f}s; restore + full verification {restore_s:.1f}s (target < 120 s "
              f"at 1M); {os.cpu_count()} CPUs, load {initial_load.load()}", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


def _pg_server(base: Path) -> tuple[Path, Any]:
    """initdb + pg_ctl start in ``base`` (a unix socket there, no TCP); returns (bin dir, stop function)."""
    import pwd
    import subprocess

    pg_bin = Path(os.environ.get("JUKICS_PG_BIN", "/usr/lib/postgresql/15/bin"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data = base / "pgdata"

    def run(cmd: list[str]) -> None:
        subprocess.run(as_user + cmd, check=True, capture_output=True, timeout=300)

    run([str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8",
         "--no-sync"])
    run([str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-o",
         f"-c listen_addresses='' -c unix_socket_directories='{base}' -c port=5432", "start"])
    return pg_bin, lambda: run([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])


def _copy_into_postgres(sqlite_url: str, url: str) -> None:
    """Every row of the SQLite store into the migrated PostgreSQL database (COPY), sequences set after."""
    from jukics.backup.postgres import PgTarget, _ident
    from jukics.store import db

    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()  # no pooled session: the restore swaps databases only when they are idle
    src = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    conn = PgTarget.from_url(url).connect(autocommit=False)
    try:
        tables = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%' AND name <> 'alembic_version'")]
        with conn.cursor() as cur:
            for t in tables:
                cur.execute(f"DELETE FROM {_ident(t)}")
            for t in tables:
                cols = [r[1] for r in src.execute(f'PRAGMA table_info("{t}")')]
                bools = {c for c, in cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                                                 "AND atttypid = 'bool'::regtype", (_ident(t),)).fetchall()}
                with cur.copy(f"COPY {_ident(t)} ({', '.join(_ident(c) for c in cols)}) FROM STDIN") as copy:
                    for row in src.execute(f'SELECT * FROM "{t}"'):
                        copy.write_row([bool(v) if c in bools and v is not None else v
                                        for c, v in zip(cols, row, strict=True)])
                for (seq_col,) in cur.execute(
                        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                        "AND pg_get_serial_sequence(%s, attname) IS NOT NULL", (_ident(t), _ident(t))).fetchall():
                    cur.execute(f"SELECT setval(pg_get_serial_sequence(%s, %s), "
                                f"coalesce(max({_ident(seq_col)}), 0) + 1, false) FROM {_ident(t)}",
                                (_ident(t), seq_col))
        conn.commit()
    finally:
        conn.close()
        src.close()


def _postgres(config: Any, out: Path) -> int:
    import subprocess
    from dataclasses import replace

    import pyrage

    import initial_load
    from jukics.backup import archive as bk
    from jukics.backup.postgres import PgTarget
    from jukics.service import Service

    base = Path(tempfile.mkdtemp(prefix="jukics-bench-pg-"))  # its own top-level dir: the postgres user enters it
    pg_bin, stop = _pg_server(base)
    try:
        import psycopg

        with psycopg.connect(host=str(base), port=5432, user="postgres", dbname="postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE jukics")
        url = f"postgresql+psycopg://postgres@/jukics?host={base}&port=5432"
        t0 = time.perf_counter()
        _copy_into_postgres(config.database_url, url)
        print(f"backup: copied the store into PostgreSQL in {time.perf_counter() - t0:.1f}s", flush=True)
        escrow = pyrage.x25519.Identity.generate()
        (out / "escrow.key").write_text(f"{escrow}\n")
        section = {"dir": str(out / "backups"), "generations": 3, "escrow_recipient": str(escrow.to_public())}
        config = replace(config, database_url=url, raw={**config.raw, "backup": section})
        settings = bk.BackupSettings.from_config(config.raw)
        keystore = Service(config).keystore
        bk.provision_identity(settings.identity_file, keystore)

        t0 = time.perf_counter()
        subprocess.run([str(pg_bin / "pg_dump"), "-Fc", "-Z0", f"--file={out / 'plain.dump'}",
                        f"--dbname={PgTarget.from_url(url).conninfo()}"], check=True)
        plain_s, plain = time.perf_counter() - t0, (out / "plain.dump").stat().st_size
        t0 = time.perf_counter()
        res = bk.create_backup(url, config.municipality_code, settings, keystore)
        create_s = time.perf_counter() - t0
        ids = bk.load_identity_file(out / "escrow.key")
        t0 = time.perf_counter()
        bk.drill(res.path, ids, config.municipality_code, keystore, out, database_url=url)
        verify_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bk.restore_backup(res.path, ids, config, keystore)
        restore_s = time.perf_counter() - t0
        residents = res.manifest["row_counts"].get("residents_current", 0)
        print(f"backup (PostgreSQL): {residents} residents; plain pg_dump -Fc {plain / 2**20:.0f} MiB in "
              f"{plain_s:.1f}s; backup {res.size_bytes / 2**20:.0f} MiB (ratio {res.size_bytes / plain:.3f}) in "
              f"{create_s:.1f}s ({create_s / plain_s:.1f}x the plain dump); verify (drill) {verify_s:.1f}s; "
              f"restore + full verification {restore_s:.1f}s; {os.cpu_count()} CPUs, load {initial_load.load()}",
              flush=True)
    finally:
        stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
