"""The metrics listener's scrape cost: the audit chain checked incrementally, the links, the counters.

Builds a fresh SQLite database with N audit records (synthetic events, no personal data), then
times scrapes of the metrics app (jukics.api.metrics_app, in process, no HTTP): the first ones
verify the chain 20,000 records per scrape until caught up, the later ones only what was added.
Prints figures; asserts no timing.

    PYTHONPATH=app .venv/bin/python bench/metrics_scrape.py [--quick] [--records N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from jukics.api.metrics_app import build_metrics_app
from jukics.audit.chain import AuditEvent
from jukics.config import parse_config
from jukics.service import Service
from jukics.store import db


def scrape(app) -> tuple[float, bytes]:
    t = time.perf_counter()
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics"}, lambda s, h: None))
    return time.perf_counter() - t, body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    n = 5_000 if args.quick else args.records
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config({
            "cs": {"municipality_code": "142140", "environment": "development"},
            "database": {"url": f"sqlite:///{tmp}/jukics.db"},
            "keystore": {"backend": "dev", "dev_secret_file": str(Path(tmp) / "secret")},
            "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x", "key_file": "/x", "client_ca_file": "/x",
                       "allowed_clients": ["kizon"]},
        })
        svc = Service(config)
        db.upgrade(svc.engine)
        t = time.perf_counter()
        for start in range(0, n, 5000):
            svc.audit.append_many([AuditEvent(actor="bench", terminal="bench", action="bench.event", purpose="bench",
                                              query={"i": i}) for i in range(start, min(n, start + 5000))])
        load_s = time.perf_counter() - t
        app = build_metrics_app(config, service=svc, root=None)
        catch_up = []
        while True:
            took, body = scrape(app)
            catch_up.append(took)
            if b"jukics_audit_chain_verified_seq %d.0" % n in body:
                break
        steady = [scrape(app)[0] for _ in range(50)]
        svc.audit.append_many([AuditEvent(actor="bench", terminal="bench", action="bench.event", purpose="bench",
                                          query={"i": i}) for i in range(1000)])
        after_1000 = scrape(app)[0]
        out = {
            "audit_records": n, "load_s": round(load_s, 1),
            "catch_up_scrapes": len(catch_up), "catch_up_scrape_ms_max": round(max(catch_up) * 1000, 1),
            "verify_rows_per_s": round(min(n, 20_000) / max(catch_up), 0),
            "steady_scrape_ms_p50": round(statistics.median(steady) * 1000, 2),
            "scrape_ms_after_1000_new_records": round(after_1000 * 1000, 1),
            "scrape_bytes": len(body), "loadavg": os.getloadavg(),
        }
        for k, v in out.items():
            print(f"{k:36} {v}")
        print(json.dumps(out))


if __name__ == "__main__":
    main()
