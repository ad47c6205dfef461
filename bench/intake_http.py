"""Benchmark: F1 intake through the real HTTP API (gunicorn, mutual TLS) against a raw SQLAlchemy Core insert.

What it does (loopback only; everything in a temporary folder that is removed at the end):

1. A throwaway lab PKI (``scripts/lab-pki.sh``) and N SYNTHETIC residents (``generate_residents``),
   turned into their intake items (``resident_intake_items``: 出生/転入, maybe 転居, maybe 消除), packed
   into batches of at most ``--batch`` items with each resident's items in one batch (so concurrent
   batches never carry a resident's updates out of 更新順番号 order).
2. For each worker class (``sync`` as configured, and ``gthread`` through ``GUNICORN_CMD_ARGS``): a
   fresh database, ``jukics db upgrade``, ``jukics serve`` (2 workers) on a free loopback port, exactly
   as ``tests/integration/conftest.py`` starts it; a separate client process posts every batch to
   ``POST /v1/intake/updates`` over mutual TLS from ``--clients`` threads (sync workers close every
   connection, so each request there is a new TLS handshake; with gthread the client keeps its
   connections alive). Then the server is stopped and the store is checked: every item applied,
   versions = items, the audit chain verifies.
3. Baseline, same run, server stopped: the same records encrypted the same way (AES-256-GCM of the
   record, HMAC search keys of the normalised 住民票コード, 個人番号, かな氏名, 生年月日, 住所) inserted with
   SQLAlchemy Core ``conn.execute(insert(table), rows)`` into a fresh database with the same schema,
   indexes and pragmas: one ``resident_versions`` row per record and the ``residents_current`` row of
   its resident (upserted), one transaction per batch.

Prints, per worker class: records/s (intake items), residents/s, request latency p50/p99, server CPU
ms per batch and per record (workers' utime+stime), peak RSS (VmHWM) of master and workers, load
average; then the baseline records/s and the ratio. The last line is a JSON summary.

    PYTHONPATH=app .venv/bin/python bench/intake_http.py            # full: 100,000 residents
    PYTHONPATH=app .venv/bin/python bench/intake_http.py --quick    # smoke: 3,000 residents
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))

KIZON = "kizon.lab.jukics.example"
MUNICIPALITY = "142140"
TODAY = dt.date(2026, 11, 1)


# --- helpers ------------------------------------------------------------------------------------


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "app"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def proc_children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def vm_hwm_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --- data ---------------------------------------------------------------------------------------


def make_batches(residents: int, batch: int, seed: int) -> tuple[list[bytes], int]:
    """JSON bodies of at most ``batch`` items, each resident's items in one body; and the item count."""
    from jukics.sim.residents import generate_residents, resident_intake_items

    bodies: list[bytes] = []
    current: list[dict[str, object]] = []
    total = 0
    for person in generate_residents(residents, seed=seed, municipality_code=MUNICIPALITY, today=TODAY):
        items = resident_intake_items(person)
        if len(current) + len(items) > batch:
            bodies.append(json.dumps({"items": current}, ensure_ascii=False).encode())
            current = []
        current.extend(items)
        total += len(items)
    if current:
        bodies.append(json.dumps({"items": current}, ensure_ascii=False).encode())
    return bodies, total


# --- the service --------------------------------------------------------------------------------


def write_config(work: Path, pki: Path, port: int, workers: int) -> Path:
    config = work / "jukics.toml"
    config.write_text(
        f"""
[cs]
municipality_code = "{MUNICIPALITY}"
environment = "lab"
[database]
url = "sqlite:///{work}/jukics.db"
[keystore]
backend = "dev"
dev_secret_file = "{work}/keys/dev-secret"
[intake]
listen = "127.0.0.1:{port}"
cert_file = "{pki}/cs.crt"
key_file = "{pki}/cs.key"
client_ca_file = "{pki}/ca.crt"
allowed_clients = ["{KIZON}"]
[server]
workers = {workers}
""",
        encoding="utf-8",
    )
    return config


def jukics(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jukics", "--config", str(config), *args],
                          capture_output=True, text=True, env=env(), timeout=timeout, check=False)


class Server:
    def __init__(self, config: Path, work: Path, worker_class: str, threads: int) -> None:
        self.config = config
        self.work = work
        e = env()
        if worker_class != "sync":
            e["GUNICORN_CMD_ARGS"] = f"--worker-class {worker_class} --threads {threads}"
        self.log = (work / "gunicorn.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "jukics", "--config", str(config), "serve"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=e, cwd=work)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited: " + (work / "gunicorn.log").read_text()[-2000:])
            if jukics(config, "health", timeout=30).returncode == 0 and len(self.workers()) >= 1:
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("service did not become healthy: " + (work / "gunicorn.log").read_text()[-2000:])

    def workers(self) -> list[int]:
        return proc_children(self.proc.pid)

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.workers())

    def hwm(self) -> dict[str, float]:
        return {"master": vm_hwm_mib(self.proc.pid), **{f"worker{i}": vm_hwm_mib(p)
                                                        for i, p in enumerate(self.workers())}}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- the client process -------------------------------------------------------------------------


def client_main(args: argparse.Namespace) -> int:
    """Post every body of ``--bodies`` (one per line) from ``--clients`` threads; print one JSON line."""
    bodies = [line.rstrip(b"\n") for line in Path(args.bodies).read_bytes().splitlines() if line.strip()]
    pki = Path(args.pki)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(certfile=str(pki / "kizon.crt"), keyfile=str(pki / "kizon.key"))
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))
    latencies: list[float] = []
    totals = {"applied": 0, "duplicate": 0, "refused": 0, "error": 0}
    statuses: dict[int, int] = {}
    codes: dict[str, int] = {}
    failures: list[str] = []
    deadline = time.monotonic() + args.max_seconds
    headers = {"Content-Type": "application/json"}

    def worker() -> None:
        conn: http.client.HTTPSConnection | None = None
        while time.monotonic() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection("127.0.0.1", args.port, context=ctx, timeout=300)
                conn.request("POST", "/v1/intake/updates", body=bodies[i], headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                keep = args.keepalive and not resp.will_close
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    failures.append(type(exc).__name__)
                conn = None
                continue
            elapsed = time.perf_counter() - t0
            if not keep:
                conn.close()
                conn = None
            result = json.loads(data or b"{}")
            with lock:
                latencies.append(elapsed)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                for k in totals:
                    totals[k] += int(result.get(k, 0) or 0)
                for r in result.get("results", ()):
                    if r.get("status") != "applied":
                        key = str(r.get("code") or r.get("status"))
                        codes[key] = codes.get(key, 0) + 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "requests": len(latencies), "batches_total": len(bodies),
                      "p50_ms": pct(latencies, 50) * 1000, "p99_ms": pct(latencies, 99) * 1000,
                      "max_ms": max(latencies, default=0) * 1000, "statuses": statuses, "totals": totals,
                      "codes": codes, "failures": failures,
                      "client_cpu_s": time.process_time()}), flush=True)
    return 0


# --- one server run -----------------------------------------------------------------------------


def run_service(tmp: Path, pki: Path, bodies_file: Path, items: int, residents: int, args: argparse.Namespace,
                worker_class: str) -> dict[str, Any]:
    work = tmp / f"svc-{worker_class}"
    work.mkdir()
    port = free_port()
    config = write_config(work, pki, port, args.workers)
    up = jukics(config, "db", "upgrade")
    if up.returncode != 0:
        raise RuntimeError(up.stderr)
    server = Server(config, work, worker_class, args.threads)
    try:
        load_before = load()
        cpu0 = server.cpu()
        cmd = [sys.executable, __file__, "--client", "--port", str(port), "--pki", str(pki),
               "--bodies", str(bodies_file), "--clients", str(args.clients), "--max-seconds", str(args.max_seconds)]
        if worker_class != "sync":
            cmd.append("--keepalive")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=args.max_seconds + 300,
                             check=False)
        if out.returncode != 0:
            raise RuntimeError("client failed: " + out.stderr[-2000:])
        client = json.loads(out.stdout.strip().splitlines()[-1])
        cpu = server.cpu() - cpu0
        hwm = server.hwm()
        load_after = load()
    finally:
        server.stop()
    stats = json.loads(jukics(config, "stats").stdout or "{}")
    audit = jukics(config, "audit", "verify")
    done = client["totals"]["applied"] + client["totals"]["duplicate"]
    wall = client["wall"]
    return {
        "worker_class": worker_class if worker_class == "sync" else f"{worker_class}x{args.threads}",
        "records": done,
        "records_per_s": done / wall,
        "residents_per_s": residents * (done / items) / wall,
        "wall_s": wall,
        "requests": client["requests"],
        "p50_ms": client["p50_ms"],
        "p99_ms": client["p99_ms"],
        "server_cpu_ms_per_batch": cpu * 1000 / max(client["requests"], 1),
        "server_cpu_us_per_record": cpu * 1e6 / max(done, 1),
        "client_cpu_s": client["client_cpu_s"],
        "peak_rss_mib": hwm,
        "statuses": client["statuses"],
        "not_applied": client["codes"],
        "failures": client["failures"],
        "complete": client["requests"] == client["batches_total"] and done == items,
        "stored_versions": stats.get("versions"),
        "audit_ok": audit.returncode == 0,
        "audit": audit.stdout.strip() or audit.stderr.strip()[-300:],
        "load_before": load_before,
        "load_after": load_after,
    }


# --- baseline -----------------------------------------------------------------------------------


def baseline(tmp: Path, bodies: list[bytes]) -> dict[str, Any]:
    """The same records, encrypted and hashed the same way, inserted with SQLAlchemy Core executemany."""
    from sqlalchemy import insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    from jukics.store import db
    from jukics.store.crypto import FieldCipher
    from jukics.store.keyed_hash import PrecomputedSearchHasher
    from jukics.store.normalise import normalise
    from jukics.store.schema import resident_versions, residents_current

    engine = db.make_engine(f"sqlite:///{tmp}/baseline.db")
    db.upgrade(engine)
    cipher = FieldCipher(os.urandom(32))
    hasher = PrecomputedSearchHasher(os.urandom(32))  # the class the store uses

    def h(field: str, value: object) -> bytes | None:
        return None if value in (None, "") else hasher.digest(field, normalise(field, value))

    insert_versions = insert(resident_versions)
    upsert_current = sqlite_insert(residents_current)
    upsert_current = upsert_current.on_conflict_do_update(
        index_elements=[residents_current.c.code_hash],
        set_={c.name: upsert_current.excluded[c.name] for c in residents_current.c if c.name != "code_hash"},
    )
    parsed = [json.loads(b)["items"] for b in bodies]  # parsing is not part of the baseline's timing
    load_before = load()
    next_id = 1
    records = 0
    start = time.perf_counter()
    for items in parsed:
        now = dt.datetime.now(dt.UTC).isoformat()
        versions, current = [], []
        for item in items:
            code_hash = hasher.digest("juminhyo_code", normalise("juminhyo_code", item["juminhyo_code"]))
            seq = item["update_seq"]
            ct = cipher.encrypt(code_hash.hex(), "record",
                                json.dumps(item, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
                                version=seq)
            versions.append({"id": next_id, "code_hash": code_hash, "version": seq, "prev_id": None,
                             "kind": "create", "status": "current", "update_seq": seq,
                             "change_reason": item["change_reason"], "changed_on": item["changed_on"],
                             "recorded_at": now, "record_ct": ct})
            current.append({"code_hash": code_hash, "version_id": next_id, "version": seq, "update_seq": seq,
                            "status": "current", "my_number_hash": h("my_number", item.get("my_number")),
                            "name_seion_hash": h("name_kana_seion", item.get("name_kana")),
                            "birth_date_hash": h("birth_date", item.get("birth_date")),
                            "address_hash": h("address", item.get("address")),
                            "updated_at": now, "deleted_at": None})
            next_id += 1
        with db.write_transaction(engine) as conn:
            conn.execute(insert_versions, versions)
            conn.execute(upsert_current, current)
        records += len(items)
    wall = time.perf_counter() - start
    engine.dispose()
    return {"records": records, "records_per_s": records / wall, "wall_s": wall,
            "load_before": load_before, "load_after": load()}


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--residents", type=int, help="residents to load (default 100000, --quick 3000)")
    ap.add_argument("--batch", type=int, default=1000, help="items per request (max)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    ap.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    ap.add_argument("--clients", type=int, default=3, help="concurrent client connections")
    ap.add_argument("--worker-classes", default="sync,gthread", help="comma-separated: sync, gthread")
    ap.add_argument("--max-seconds", type=float, default=900, help="stop posting after this long (per run)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    # internal: the client process
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pki", help=argparse.SUPPRESS)
    ap.add_argument("--bodies", help=argparse.SUPPRESS)
    ap.add_argument("--keepalive", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        return client_main(args)
    residents = args.residents or (3000 if args.quick else 100_000)

    tmp = Path(tempfile.mkdtemp(prefix="jukics-bench-http-"))
    try:
        pki = tmp / "pki"
        subprocess.run(["bash", str(ROOT / "scripts/lab-pki.sh"), str(pki)], check=True, capture_output=True)
        t0 = time.perf_counter()
        bodies, items = make_batches(residents, args.batch, args.seed)
        bodies_file = tmp / "bodies.jsonl"
        bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        print(f"intake_http: {residents} residents -> {items} items in {len(bodies)} batches "
              f"({sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB each), prepared in "
              f"{time.perf_counter() - t0:.1f}s; {os.cpu_count()} CPUs; load {load()}", flush=True)
        runs = []
        for wc in [w.strip() for w in args.worker_classes.split(",") if w.strip()]:
            r = run_service(tmp, pki, bodies_file, items, residents, args, wc)
            runs.append(r)
            print(f"  service {r['worker_class']:>10}: {r['records_per_s']:7.0f} records/s "
                  f"({r['residents_per_s']:.0f} residents/s), {r['records']} records in {r['wall_s']:.1f}s, "
                  f"{r['requests']} requests p50 {r['p50_ms']:.0f} ms p99 {r['p99_ms']:.0f} ms; "
                  f"server CPU {r['server_cpu_ms_per_batch']:.0f} ms/batch = "
                  f"{r['server_cpu_us_per_record']:.0f} us/record; peak RSS MiB "
                  + ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mib"].items())
                  + f"; complete={r['complete']} audit_ok={r['audit_ok']}; load {r['load_before']} -> "
                  f"{r['load_after']}", flush=True)
            if r["not_applied"] or r["failures"]:
                print(f"    not applied: {r['not_applied']} failures: {r['failures'][:5]}", flush=True)
        base = baseline(tmp, bodies)
        print(f"  baseline (SQLAlchemy Core executemany, AES-GCM + HMAC, same schema): "
              f"{base['records_per_s']:7.0f} records/s ({base['records']} records in {base['wall_s']:.1f}s); "
              f"load {base['load_before']} -> {base['load_after']}", flush=True)
        for r in runs:
            r["ratio_to_baseline"] = r["records_per_s"] / base["records_per_s"]
            print(f"  ratio {r['worker_class']:>10} / baseline: {r['ratio_to_baseline']:.2f}", flush=True)
        print(json.dumps({"bench": "intake_http", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                          "residents": residents, "items": items, "batches": len(bodies), "runs": runs,
                          "baseline": base}, ensure_ascii=False), flush=True)
        ok = all(r["complete"] and r["audit_ok"] for r in runs)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
