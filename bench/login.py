"""Benchmark: operator login with password + TOTP (``OperatorStore.login``), KDF cost included.

One login is what the terminal API's login costs the service: read the operator row, scrypt-verify
the password, decrypt the TOTP secret (AES-GCM), check the code and its step (replay), move the
step forward in a write transaction, and append the audit record. SQLite file database, one thread.
The clock advances 30 s per login, so every login uses a fresh TOTP step (a reused one is a replay).

Prints the KDF parameters, p50/p90/p99/max in ms over ``--logins`` timed logins (after a warm-up),
the bare scrypt verify time as the baseline measured in the same run and the ratio, the load
average, and a JSON summary. Target (issue 6): p99 < 50 ms.

``--log2-n K`` stores the operator's password hash with scrypt n=2**K (r=8, p=1) instead of the
configured cost, to see what a parameter within current guidance (2**15..2**17) costs a login;
``--sweep`` times the bare scrypt verify at n=2**14..2**17; ``--profile`` prints a cProfile of the
timed logins (where the time goes).

    PYTHONPATH=app .venv/bin/python bench/login.py [--logins 200] [--log2-n 15] [--sweep] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import statistics
import tempfile
import time

import pyotp
from sqlalchemy import create_engine, update

from jukics.audit.chain import AuditLog
from jukics.auth import credentials as cred
from jukics.auth.operators import OperatorStore
from jukics.store import db
from jukics.store.crypto import FieldCipher, SearchHasher
from jukics.store.schema import operators

PASSWORD = "Counter-Staff-2026"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--logins", type=int, default=200)
    ap.add_argument("--log2-n", type=int, default=cred.SCRYPT_LOG2_N, help="scrypt cost of the stored hash")
    ap.add_argument("--sweep", action="store_true", help="also time the bare verify at n=2**14..2**17")
    ap.add_argument("--profile", action="store_true", help="cProfile of the timed logins")
    args = ap.parse_args()
    log2_n = args.log2_n
    profiler = cProfile.Profile() if args.profile else None
    now = [dt.datetime(2026, 12, 1, tzinfo=dt.UTC)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/ops.db")
        db.upgrade(engine)
        store = OperatorStore(engine, FieldCipher(os.urandom(32)), AuditLog(engine, SearchHasher(os.urandom(32)),
                              clock=lambda: now[0]), issuer="bench", clock=lambda: now[0])
        totp = pyotp.TOTP(store.add("op0001", PASSWORD, department="bench", roles=["counter"],
                                    account_expires_on=dt.date(2027, 3, 31), actor="bench").totp_secret)
        if log2_n != cred.SCRYPT_LOG2_N:  # the same password under another cost (the hash names its cost)
            with engine.begin() as conn:
                conn.execute(update(operators).where(operators.c.user_id == "op0001")
                             .values(password_hash=cred.hash_password(PASSWORD, log2_n=log2_n)))
        times = []
        cpu = []  # CPU time of this thread per login: what it costs on a free core, whatever the load
        for i in range(args.logins + 10):
            now[0] += dt.timedelta(seconds=30)
            code = totp.at(now[0])
            if profiler is not None and i >= 10:
                profiler.enable()
            t, c = time.perf_counter(), time.thread_time()
            result = store.login("op0001", PASSWORD, code, terminal="bench")
            if i >= 10:
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((time.thread_time() - c) * 1000)
            if profiler is not None:
                profiler.disable()
            if not result.ok:
                raise SystemExit(f"login refused: {result.code}")
        encoded = cred.hash_password(PASSWORD, log2_n=log2_n)
        base = []
        for _ in range(max(20, args.logins // 4)):
            t = time.perf_counter()
            cred.verify_password(PASSWORD, encoded)
            base.append((time.perf_counter() - t) * 1000)
        engine.dispose()
    sweep = {}
    if args.sweep:
        for k in (14, 15, 16, 17):
            encoded_k = cred.hash_password(PASSWORD, log2_n=k)
            ms, cpu_k = [], []
            for _ in range(20 if k < 17 else 10):
                t, c = time.perf_counter(), time.thread_time()
                cred.verify_password(PASSWORD, encoded_k)
                ms.append((time.perf_counter() - t) * 1000)
                cpu_k.append((time.thread_time() - c) * 1000)
            sweep[f"2^{k}"] = {"p50_ms": round(pct(ms, 50), 1), "max_ms": round(max(ms), 1),
                               "cpu_p50_ms": round(pct(cpu_k, 50), 1),
                               "memory_mib": 128 * cred.SCRYPT_R * 2**k // 2**20}
    kdf = {"kdf": "scrypt", "n": 2**log2_n, "r": cred.SCRYPT_R, "p": cred.SCRYPT_P,
           "memory_mib": 128 * cred.SCRYPT_R * 2**log2_n // 2**20, "configured_log2_n": cred.SCRYPT_LOG2_N}
    summary = {"logins": len(times), **kdf, "p50_ms": round(pct(times, 50), 2), "p90_ms": round(pct(times, 90), 2),
               "p99_ms": round(pct(times, 99), 2), "max_ms": round(max(times), 2),
               "cpu_p50_ms": round(pct(cpu, 50), 2), "cpu_p99_ms": round(pct(cpu, 99), 2),
               "scrypt_verify_p50_ms": round(statistics.median(base), 2),
               "ratio_login_to_kdf_p50": round(pct(times, 50) / statistics.median(base), 2),
               "loadavg": os.getloadavg()[0]}
    print(f"KDF scrypt n=2^{log2_n} r={cred.SCRYPT_R} p={cred.SCRYPT_P} ({kdf['memory_mib']} MiB per check; "
          f"configured: 2^{cred.SCRYPT_LOG2_N})")
    print(f"login (password + TOTP, audited) over {len(times)}: p50 {summary['p50_ms']} ms, p90 {summary['p90_ms']}, "
          f"p99 {summary['p99_ms']}, max {summary['max_ms']}  (target p99 < 50 ms); CPU per login p50 "
          f"{summary['cpu_p50_ms']} ms, p99 {summary['cpu_p99_ms']}")
    print(f"baseline, the bare scrypt verify: p50 {summary['scrypt_verify_p50_ms']} ms; "
          f"login / KDF = {summary['ratio_login_to_kdf_p50']}; load average {summary['loadavg']:.2f}")
    for k, v in sweep.items():
        print(f"bare scrypt verify n={k} r=8 p=1 ({v['memory_mib']} MiB): p50 {v['p50_ms']} ms, max {v['max_ms']}; "
              f"CPU p50 {v['cpu_p50_ms']} ms")
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        print(out.getvalue())
    summary["sweep"] = sweep
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
