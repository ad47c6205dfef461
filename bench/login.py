"""Benchmark: operator login with password + TOTP (``OperatorStore.login``), KDF cost included.

One login is what the terminal API's login costs the service: read the operator row, scrypt-verify
the password, decrypt the TOTP secret (AES-GCM), check the code and its step (replay), move the
step forward in a write transaction, and append the audit record. SQLite file database, one thread.
The clock advances 30 s per login, so every login uses a fresh TOTP step (a reused one is a replay).

Prints the KDF parameters, p50/p90/p99/max in ms over ``--logins`` timed logins (after a warm-up),
the bare scrypt verify time as the baseline measured in the same run and the ratio, the load
average, and a JSON summary. Target (issue 6): p99 < 50 ms.

    PYTHONPATH=app .venv/bin/python bench/login.py [--logins 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time

import pyotp
from sqlalchemy import create_engine

from jukics.audit.chain import AuditLog
from jukics.auth import credentials as cred
from jukics.auth.operators import OperatorStore
from jukics.store import db
from jukics.store.crypto import FieldCipher, SearchHasher

PASSWORD = "Counter-Staff-2026"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--logins", type=int, default=200)
    args = ap.parse_args()
    now = [dt.datetime(2026, 12, 1, tzinfo=dt.UTC)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/ops.db")
        db.upgrade(engine)
        store = OperatorStore(engine, FieldCipher(os.urandom(32)), AuditLog(engine, SearchHasher(os.urandom(32)),
                              clock=lambda: now[0]), issuer="bench", clock=lambda: now[0])
        totp = pyotp.TOTP(store.add("op0001", PASSWORD, department="bench", roles=["counter"],
                                    account_expires_on=dt.date(2027, 3, 31), actor="bench").totp_secret)
        times = []
        for i in range(args.logins + 10):
            now[0] += dt.timedelta(seconds=30)
            code = totp.at(now[0])
            t = time.perf_counter()
            result = store.login("op0001", PASSWORD, code, terminal="bench")
            if i >= 10:
                times.append((time.perf_counter() - t) * 1000)
            if not result.ok:
                raise SystemExit(f"login refused: {result.code}")
        encoded = cred.hash_password(PASSWORD)
        base = []
        for _ in range(max(20, args.logins // 4)):
            t = time.perf_counter()
            cred.verify_password(PASSWORD, encoded)
            base.append((time.perf_counter() - t) * 1000)
        engine.dispose()
    kdf = {"kdf": "scrypt", "n": 2**cred.SCRYPT_LOG2_N, "r": cred.SCRYPT_R, "p": cred.SCRYPT_P,
           "memory_mib": 128 * cred.SCRYPT_R * 2**cred.SCRYPT_LOG2_N // 2**20}
    summary = {"logins": len(times), **kdf, "p50_ms": round(pct(times, 50), 2), "p90_ms": round(pct(times, 90), 2),
               "p99_ms": round(pct(times, 99), 2), "max_ms": round(max(times), 2),
               "scrypt_verify_p50_ms": round(statistics.median(base), 2),
               "ratio_login_to_kdf_p50": round(pct(times, 50) / statistics.median(base), 2),
               "loadavg": os.getloadavg()[0]}
    print(f"KDF scrypt n=2^{cred.SCRYPT_LOG2_N} r={cred.SCRYPT_R} p={cred.SCRYPT_P} "
          f"({kdf['memory_mib']} MiB per check)")
    print(f"login (password + TOTP, audited) over {len(times)}: p50 {summary['p50_ms']} ms, p90 {summary['p90_ms']}, "
          f"p99 {summary['p99_ms']}, max {summary['max_ms']}  (target p99 < 50 ms)")
    print(f"baseline, the bare scrypt verify: p50 {summary['scrypt_verify_p50_ms']} ms; "
          f"login / KDF = {summary['ratio_login_to_kdf_p50']}; load average {summary['loadavg']:.2f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
