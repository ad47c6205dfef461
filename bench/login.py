"""Benchmark: operator login with password + TOTP (``OperatorStore.login``), KDF cost included.

One login is what the terminal API's ``POST /v1/sessions`` costs the service: read the operator row,
verify the password (Argon2id), decrypt the TOTP secret (AES-GCM), check the code and its step
(replay), and in one write transaction move the step forward, append the audit record and insert the
session (``on_success=SessionStore.insert``). SQLite file database, one request at a time.
The clock advances 30 s per login, so every login uses a fresh TOTP step (a reused one is a replay).

Prints the KDF parameters, p50/p90/p99/max in ms over ``--logins`` timed logins (after a warm-up),
the bare KDF verify time as the baseline measured in the same run and the ratio, the load
average, and a JSON summary. Target (issue 6): p99 < 50 ms.

``--memory-kib M --iterations T`` stores the operator's password hash with another Argon2id cost
instead of the configured one; ``--sweep`` times the bare verify at OWASP's five equivalent Argon2id
settings (1 and 2 lanes each) and, for comparison, scrypt n=2**14..2**17 (r=8, p=1; the scheme used before);
``--profile`` prints a cProfile of the timed logins (where the time goes).

    PYTHONPATH=app .venv/bin/python bench/login.py [--logins 200] [--memory-kib 47104 --iterations 1]
        [--sweep] [--profile]
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
from jukics.auth.sessions import SessionStore
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
    ap.add_argument("--memory-kib", type=int, default=cred.ARGON2_MEMORY_KIB, help="Argon2id memory of the hash")
    ap.add_argument("--iterations", type=int, default=cred.ARGON2_ITERATIONS, help="Argon2id passes of the hash")
    ap.add_argument("--lanes", type=int, default=cred.ARGON2_LANES, help="Argon2id lanes (threads) of the hash")
    ap.add_argument("--sweep", action="store_true",
                    help="also time the bare verify at OWASP's Argon2id settings and scrypt n=2**14..2**17")
    ap.add_argument("--profile", action="store_true", help="cProfile of the timed logins")
    args = ap.parse_args()
    cost = {"memory_kib": args.memory_kib, "iterations": args.iterations, "lanes": args.lanes}
    configured = cost == {"memory_kib": cred.ARGON2_MEMORY_KIB, "iterations": cred.ARGON2_ITERATIONS,
                          "lanes": cred.ARGON2_LANES}
    profiler = cProfile.Profile() if args.profile else None
    now = [dt.datetime(2026, 12, 1, tzinfo=dt.UTC)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/ops.db")
        db.upgrade(engine)
        store = OperatorStore(engine, FieldCipher(os.urandom(32)), AuditLog(engine, SearchHasher(os.urandom(32)),
                              clock=lambda: now[0]), issuer="bench", clock=lambda: now[0])
        sessions = SessionStore(engine, idle=dt.timedelta(minutes=15), absolute=dt.timedelta(hours=8),
                                clock=lambda: now[0])
        totp = pyotp.TOTP(store.add("op0001", PASSWORD, department="bench", roles=["counter"],
                                    account_expires_on=dt.date(2027, 3, 31), actor="bench").totp_secret)
        if not configured:  # the same password under another cost (the hash names its cost)
            with engine.begin() as conn:
                conn.execute(update(operators).where(operators.c.user_id == "op0001")
                             .values(password_hash=cred.hash_password(PASSWORD, **cost)))
        times = []
        cpu = []  # CPU time of the process per login (all the KDF's threads): its cost, whatever the load
        for i in range(args.logins + 10):
            now[0] += dt.timedelta(seconds=30)
            code = totp.at(now[0])
            if profiler is not None and i >= 10:
                profiler.enable()
            t, c = time.perf_counter(), time.process_time()
            result = store.login("op0001", PASSWORD, code, terminal="bench",  # as POST /v1/sessions does
                                 on_success=lambda conn, ok: sessions.insert(conn, "op0001", ok.roles,
                                                                             terminal="bench"))
            if i >= 10:
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
            if profiler is not None:
                profiler.disable()
            if not result.ok:
                raise SystemExit(f"login refused: {result.code}")
        encoded = cred.hash_password(PASSWORD, **cost)
        base = []
        for _ in range(max(20, args.logins // 4)):
            t = time.perf_counter()
            cred.verify_password(PASSWORD, encoded)
            base.append((time.perf_counter() - t) * 1000)
        engine.dispose()
    sweep = {}
    if args.sweep:
        # OWASP Password Storage Cheat Sheet: five Argon2id settings of equal strength, then scrypt
        candidates = [(f"argon2id m={m} t={t} p={p}", m // 1024,
                       cred.hash_password(PASSWORD, memory_kib=m, iterations=t, lanes=p))
                      for m, t in ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5)) for p in (1, 2)]
        candidates += [(f"scrypt n=2^{k} r=8 p=1", 128 * 8 * 2**k // 2**20,
                        cred.hash_password_scrypt(PASSWORD, log2_n=k)) for k in (14, 15, 16, 17)]
        for name, mib, encoded_k in candidates:
            ms, cpu_k = [], []
            for _ in range(10 if mib >= 128 else 20):
                t, c = time.perf_counter(), time.process_time()
                assert cred.verify_password(PASSWORD, encoded_k).ok
                ms.append((time.perf_counter() - t) * 1000)
                cpu_k.append((time.process_time() - c) * 1000)
            sweep[name] = {"p50_ms": round(pct(ms, 50), 1), "max_ms": round(max(ms), 1),
                           "cpu_p50_ms": round(pct(cpu_k, 50), 1), "memory_mib": mib}
    kdf = {"kdf": "argon2id", "memory_kib": cost["memory_kib"], "iterations": cost["iterations"],
           "lanes": cost["lanes"], "configured": configured}
    summary = {"logins": len(times), **kdf, "p50_ms": round(pct(times, 50), 2), "p90_ms": round(pct(times, 90), 2),
               "p99_ms": round(pct(times, 99), 2), "max_ms": round(max(times), 2),
               "cpu_p50_ms": round(pct(cpu, 50), 2), "cpu_p99_ms": round(pct(cpu, 99), 2),
               "kdf_verify_p50_ms": round(statistics.median(base), 2),
               "ratio_login_to_kdf_p50": round(pct(times, 50) / statistics.median(base), 2),
               "loadavg": os.getloadavg()[0]}
    print(f"KDF argon2id m={cost['memory_kib']} KiB t={cost['iterations']} p={cost['lanes']} "
          f"({'the configured cost' if configured else 'not the configured cost'})")
    print(f"login (password + TOTP, audited, session opened) over {len(times)}: p50 {summary['p50_ms']} ms, "
          f"p90 {summary['p90_ms']}, "
          f"p99 {summary['p99_ms']}, max {summary['max_ms']}  (target p99 < 50 ms); CPU per login p50 "
          f"{summary['cpu_p50_ms']} ms, p99 {summary['cpu_p99_ms']}")
    print(f"baseline, the bare KDF verify: p50 {summary['kdf_verify_p50_ms']} ms; "
          f"login / KDF = {summary['ratio_login_to_kdf_p50']}; load average {summary['loadavg']:.2f}")
    for k, v in sweep.items():
        print(f"bare verify {k} ({v['memory_mib']} MiB): p50 {v['p50_ms']} ms, max {v['max_ms']}; "
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
