"""Backup benchmark: create (snapshot + integrity + digests + age to two recipients), then restore with
full verification, on a store of synthetic residents; sizes and the ratio to a plain copy of the DB.

    PYTHONPATH=app .venv/bin/python bench/backup.py --residents 1000000      # the target size
    PYTHONPATH=app .venv/bin/python bench/backup.py --from /tmp/load1m       # a kept initial_load --out

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


if __name__ == "__main__":
    sys.exit(main())
