"""Benchmark: initial load of 1,000,000 SYNTHETIC residents through the intake batch path.

The path is the one the HTTP API runs without the transport: ``Intake.submit`` (validation, the
idempotency and sequence checks, the 異動事由 logic checks) then ``ResidentStore.apply_batch`` (one
write transaction per batch: versions, current index, applied request ids, F2 and 附票 outbox, one
audit record per item). Each resident arrives as its history (``resident_intake_items``: 出生/転入,
maybe 転居, maybe 消除), whole residents per batch of at most ``--batch`` items.

``--procs`` loader processes (default 2, one per core, like the two gunicorn workers) share the
batches round-robin; SQLite serialises their write transactions. Each process generates the same
deterministic residents and keeps its own batches, so nothing is shipped between processes.

Prints: residents/s and records/s overall, per-batch latency p50/p99 at the start and the end,
peak RSS (VmHWM) of each loader process, the database size, load average, and a JSON summary.
The target (ISSUE): 1,000,000 residents in < 10 min with peak RSS < 500 MB.

    PYTHONPATH=app .venv/bin/python bench/initial_load.py                       # 1,000,000 residents
    PYTHONPATH=app .venv/bin/python bench/initial_load.py --quick               # 20,000 residents
    PYTHONPATH=app .venv/bin/python bench/initial_load.py --out /tmp/db1m       # keep the DB for lookup.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))

MUNICIPALITY = "142140"
TODAY = dt.date(2026, 11, 1)
CLIENT = "kizon.lab.jukics.example"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_config(out: Path) -> Path:
    """A jukics.toml for the database in ``out`` (also what lookup.py opens with --db)."""
    config = out / "jukics.toml"
    config.write_text(
        f"""
[cs]
municipality_code = "{MUNICIPALITY}"
environment = "development"
[database]
url = "sqlite:///{out}/jukics.db"
[keystore]
backend = "dev"
dev_secret_file = "{out}/keys/dev-secret"
[intake]
listen = "127.0.0.1:18443"
cert_file = "{out}/unused.crt"
key_file = "{out}/unused.key"
client_ca_file = "{out}/unused-ca.crt"
allowed_clients = ["{CLIENT}"]
""",
        encoding="utf-8",
    )
    return config


def batches(residents: int, seed: int, batch: int) -> Any:
    """(batch number, items, residents in it): whole residents, at most ``batch`` items each."""
    from jukics.sim.residents import generate_residents, resident_intake_items

    current: list[dict[str, object]] = []
    people = 0
    number = 0
    for person in generate_residents(residents, seed=seed, municipality_code=MUNICIPALITY, today=TODAY):
        items = resident_intake_items(person)
        if len(current) + len(items) > batch:
            yield number, current, people
            number += 1
            current, people = [], 0
        current.extend(items)
        people += 1
    if current:
        yield number, current, people


def loader(config_path: str, k: int, procs: int, residents: int, seed: int, batch: int, deadline: float,
           queue: Any) -> None:
    """One loader process: every ``procs``-th batch from number ``k``; reports to ``queue``."""
    from jukics.config import load_config
    from jukics.service import Service

    svc = Service(load_config(config_path))
    intake = svc.intake
    intake.today = lambda: TODAY  # the synthetic data is dated up to TODAY
    latencies: list[tuple[int, float]] = []
    done = {"applied": 0, "duplicate": 0, "refused": 0, "error": 0, "residents": 0}
    codes: dict[str, int] = {}
    generate = 0.0
    t_gen = time.perf_counter()
    for number, items, people in batches(residents, seed, batch):
        if number % procs != k:
            continue
        generate += time.perf_counter() - t_gen
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        outcome = intake.submit(items, client=CLIENT)
        latencies.append((number, time.perf_counter() - t0))
        for s in ("applied", "duplicate", "refused", "error"):
            done[s] += outcome[s]
        done["residents"] += people
        for r in outcome["results"]:
            if r["status"] != "applied":
                codes[r.get("code", r["status"])] = codes.get(r.get("code", r["status"]), 0) + 1
        t_gen = time.perf_counter()
    svc.engine.dispose()
    queue.put({"k": k, "latencies": latencies, "done": done, "codes": codes, "generate_s": generate,
               "peak_rss_mib": vm_hwm_mib(), "cpu_s": time.process_time()})


def run(out: Path, residents: int, seed: int, batch: int, procs: int, max_seconds: float) -> dict[str, Any]:
    from jukics.config import load_config
    from jukics.service import Service, upgrade_database

    config = write_config(out)
    upgrade_database(load_config(config))
    Service(load_config(config)).keystore.data_key()  # create the dev key once, before the loaders race

    ctx = mp.get_context("spawn")  # fresh interpreters: no state shared with this process
    queue = ctx.Queue()
    deadline = time.monotonic() + max_seconds
    load_before = load()
    start = time.perf_counter()
    workers = [ctx.Process(target=loader, args=(str(config), k, procs, residents, seed, batch, deadline, queue))
               for k in range(procs)]
    for w in workers:
        w.start()
    reports = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    load_after = load()

    lat = sorted(x for r in reports for x in r["latencies"])
    ms = [s * 1000 for _, s in lat]
    first = [s * 1000 for _, s in lat[: max(1, len(lat) // 10)]]
    last = [s * 1000 for _, s in lat[-max(1, len(lat) // 10):]]
    done = {key: sum(r["done"][key] for r in reports) for key in reports[0]["done"]}
    codes: dict[str, int] = {}
    for r in reports:
        for c, n in r["codes"].items():
            codes[c] = codes.get(c, 0) + n
    db_file = out / "jukics.db"
    size = sum(p.stat().st_size for p in out.glob("jukics.db*")) / 2**20
    svc = Service(load_config(config))
    stats = svc.store.stats()
    svc.engine.dispose()
    records = done["applied"] + done["duplicate"]
    return {
        "residents": done["residents"],
        "records": records,
        "wall_s": wall,
        "residents_per_s": done["residents"] / wall,
        "records_per_s": records / wall,
        "batches": len(lat),
        "batch_ms_p50": pct(ms, 50),
        "batch_ms_p99": pct(ms, 99),
        "first_tenth_batch_ms_p50": pct(first, 50),
        "last_tenth_batch_ms_p50": pct(last, 50),
        "peak_rss_mib": [round(r["peak_rss_mib"], 1) for r in sorted(reports, key=lambda r: r["k"])],
        "generate_s": [round(r["generate_s"], 1) for r in reports],
        "cpu_s": [round(r["cpu_s"], 1) for r in reports],
        "not_applied": codes,
        "stats": stats,
        "db_mib": size,
        "db": str(db_file),
        "load_before": load_before,
        "load_after": load_after,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--residents", type=int, help="residents to load (default 1000000, --quick 20000)")
    ap.add_argument("--batch", type=int, default=1000, help="items per batch (max)")
    ap.add_argument("--procs", type=int, default=2, help="loader processes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=1800, help="stop loading after this long")
    ap.add_argument("--out", type=Path, help="keep the database (and its config and key) in this new folder")
    args = ap.parse_args()
    residents = args.residents or (20_000 if args.quick else 1_000_000)

    if args.out:
        args.out.mkdir(parents=True, exist_ok=False)
        out = args.out.resolve()
    else:
        out = Path(tempfile.mkdtemp(prefix="jukics-bench-load-"))
    try:
        print(f"initial_load: {residents} residents, batches of <= {args.batch} items, {args.procs} loader "
              f"processes; {os.cpu_count()} CPUs; load {load()}", flush=True)
        r = run(out, residents, args.seed, args.batch, args.procs, args.max_seconds)
        print(f"  {r['residents']} residents ({r['records']} records) in {r['wall_s']:.1f}s = "
              f"{r['residents_per_s']:.0f} residents/s, {r['records_per_s']:.0f} records/s; batch p50 "
              f"{r['batch_ms_p50']:.0f} ms p99 {r['batch_ms_p99']:.0f} ms (first tenth p50 "
              f"{r['first_tenth_batch_ms_p50']:.0f} ms, last tenth {r['last_tenth_batch_ms_p50']:.0f} ms); "
              f"peak RSS MiB per loader {r['peak_rss_mib']}; DB {r['db_mib']:.0f} MiB; stats {r['stats']}; "
              f"load {r['load_before']} -> {r['load_after']}", flush=True)
        if r["not_applied"]:
            print(f"  not applied: {r['not_applied']}", flush=True)
        complete = r["residents"] == residents and not r["not_applied"]
        print(json.dumps({"bench": "initial_load", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                          "target_residents": residents, "complete": complete, **r}, ensure_ascii=False), flush=True)
        return 0 if complete else 1
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
