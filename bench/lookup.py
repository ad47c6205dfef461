"""Benchmark: lookup of the current record by 住民票コード (``ResidentStore.get_current``) at 1,000,000 records.

Each lookup is what a search by code costs the service: the keyed hash of the code, one indexed
SELECT joining ``residents_current`` to the version it points to, AES-GCM decryption of the record
and JSON decoding. Codes are drawn at random from the residents that were loaded (existing codes,
regenerated from the same seed); a warm-up pass first, so the page cache is warm.

With ``--db DIR`` it reuses a database left by ``initial_load.py --out DIR`` (same seed); without,
it first loads one itself with ``initial_load.py`` (1,000,000 residents, or 20,000 with ``--quick``)
in a temporary folder that is removed at the end.

Prints p50/p90/p99/max in ms and lookups/s over ``--lookups`` timed lookups, the record count, the
load average, and a JSON summary. Target (ISSUE): p99 < 5 ms at 1,000,000 records.

    PYTHONPATH=app .venv/bin/python bench/lookup.py --db /tmp/db1m
    PYTHONPATH=app .venv/bin/python bench/lookup.py --quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))

MUNICIPALITY = "142140"
TODAY = dt.date(2026, 11, 1)  # the same synthetic residents as initial_load.py


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def sample_codes(residents: int, seed: int, n: int, pick_seed: int) -> list[str]:
    """``n`` random 住民票コード among the first ``residents`` generated with ``seed`` (with repeats)."""
    from jukics.sim.residents import generate_residents

    rng = random.Random(pick_seed)  # benchmark sampling, not a secret
    wanted: dict[int, int] = {}
    for _ in range(n):
        i = rng.randrange(residents)
        wanted[i] = wanted.get(i, 0) + 1
    codes: list[str] = []
    for i, person in enumerate(generate_residents(residents, seed=seed, municipality_code=MUNICIPALITY,
                                                  today=TODAY)):
        if i in wanted:
            codes.extend([str(person["juminhyo_code"])] * wanted[i])
    rng.shuffle(codes)
    return codes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--db", type=Path, help="folder left by initial_load.py --out (its jukics.toml is used)")
    ap.add_argument("--residents", type=int, help="residents in the database (default 1000000, --quick 20000)")
    ap.add_argument("--seed", type=int, default=1, help="the seed the database was loaded with")
    ap.add_argument("--lookups", type=int, help="timed lookups (default 20000, --quick 2000)")
    ap.add_argument("--warmup", type=int, help="lookups before timing (default 5000, --quick 500)")
    args = ap.parse_args()
    residents = args.residents or (20_000 if args.quick else 1_000_000)
    lookups = args.lookups or (2_000 if args.quick else 20_000)
    warmup = args.warmup or (500 if args.quick else 5_000)

    tmp: Path | None = None
    try:
        if args.db is None:
            tmp = Path(tempfile.mkdtemp(prefix="jukics-bench-lookup-"))
            db_dir = tmp / "db"
            print(f"lookup: loading {residents} residents first (initial_load.py) ...", flush=True)
            subprocess.run([sys.executable, str(ROOT / "bench/initial_load.py"), "--residents", str(residents),
                            "--seed", str(args.seed), "--out", str(db_dir)], check=True,
                           stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT / "app")))
        else:
            db_dir = args.db
        from jukics.config import load_config
        from jukics.service import Service

        svc = Service(load_config(db_dir / "jukics.toml"))
        store = svc.store
        stats = store.stats()
        codes = sample_codes(residents, args.seed, warmup + lookups, pick_seed=args.seed + 1000)
        print(f"lookup: {stats['residents'] + stats['deleted']} records ({stats['versions']} versions) in "
              f"{db_dir}; {warmup} warm-up + {lookups} timed lookups of random existing codes; load {load()}",
              flush=True)
        for code in codes[:warmup]:
            assert store.get_current(code) is not None, "a loaded code was not found: wrong --seed or --residents?"
        load_before = load()
        times: list[float] = []
        missing = 0
        start = time.perf_counter()
        for code in codes[warmup:]:
            t0 = time.perf_counter()
            record = store.get_current(code)
            times.append(time.perf_counter() - t0)
            if record is None or record["juminhyo_code"] != code:
                missing += 1
        wall = time.perf_counter() - start
        svc.engine.dispose()
        ms = [t * 1000 for t in times]
        result = {
            "records": stats["residents"] + stats["deleted"],
            "lookups": len(times),
            "p50_ms": pct(ms, 50),
            "p90_ms": pct(ms, 90),
            "p99_ms": pct(ms, 99),
            "max_ms": max(ms),
            "lookups_per_s": len(times) / wall,
            "missing": missing,
            "load_before": load_before,
            "load_after": load(),
        }
        print(f"  get_current: p50 {result['p50_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms, p99 "
              f"{result['p99_ms']:.3f} ms, max {result['max_ms']:.1f} ms; {result['lookups_per_s']:.0f} lookups/s "
              f"(one thread); missing {missing}; load {result['load_before']} -> {result['load_after']}", flush=True)
        print(json.dumps({"bench": "lookup", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                          **result}), flush=True)
        return 0 if missing == 0 else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
