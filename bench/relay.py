"""Relay benchmark: intake → delivery worker → 都道府県サーバ sim acknowledgement, over mutual TLS.

Real processes on loopback (jukics.sim.local_network): gunicorn intake (2 sync workers), the delivery
worker (`jukics links run`), the prefecture and national sims. Prints:

1. throughput: N updates (default 100,000) posted in batches of ≤ 1,000 while the worker relays;
   updates/s from the first post until the prefecture has acknowledged the last one (both links:
   F2 and 附票, so 2N messages), target ≥ 2,000 updates/s on 2 cores;
   and the relay alone: the same database's outbox of a second batch delivered with intake idle
   (worker stopped while posting, then started), which is the link's own rate;
2. latency: single updates at 100/s, each from the start of its POST until the CS has the
   prefecture's ack for it (the link's acknowledged sequence, read from the database every 1 ms),
   p50/p90/p99/max, target p99 < 50 ms.

`--quick` for a smoke run. Bounded in time; everything in a temporary folder that is removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from jukics.links.worker import wait_for
from jukics.sim.local_network import LocalNetwork, batches_of_whole_residents
from jukics.sim.residents import generate_residents, resident_intake_items

TODAY = dt.date(2026, 11, 1)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def acked(db: Path, link: str = "prefecture") -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT acked_seq FROM outbox_head WHERE link = ?", (link,)).fetchone()[0])


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--updates", type=int, default=None)
    ap.add_argument("--latency-updates", type=int, default=None)
    args = ap.parse_args()
    n = args.updates or (5_000 if args.quick else 100_000)
    n_lat = args.latency_updates or (200 if args.quick else 2_000)
    out: dict[str, object] = {"load_start": load()}
    people = list(generate_residents(int(n / 1.32) + 50 + n_lat, seed=61, municipality_code="142140", today=TODAY))
    per_resident = [resident_intake_items(p) for p in people]
    # throughput set: whole residents up to n items; the rest: single-item residents for latency
    bulk: list[list[dict]] = []
    count = 0
    rest = iter(per_resident)
    for items in rest:
        bulk.append(items)
        count += len(items)
        if count >= n:
            break
    singles = [items for items in rest if len(items) == 1][:n_lat]
    batches = batches_of_whole_residents(bulk)
    relay_only = batches[len(batches) // 2:]
    first = batches[: len(batches) // 2]
    n_first = sum(map(len, first))
    n_relay = sum(map(len, relay_only))

    with tempfile.TemporaryDirectory(prefix="jukics-relay-") as tmp:
        net = LocalNetwork(Path(tmp) / "net")
        db = net.work / "cs" / "jukics.db"
        try:
            net.start()
            # 1a. intake and relay together
            t0 = time.perf_counter()
            for batch in first:
                assert net.post(batch)["status"] == 200
            t_posted = time.perf_counter() - t0
            assert wait_for(lambda: acked(db) >= n_first and acked(db, "fuhyo") >= n_first, 600, 0.01)
            t_all = time.perf_counter() - t0
            out["together"] = {"updates": n_first, "intake_s": round(t_posted, 2), "acked_s": round(t_all, 2),
                               "updates_per_s": round(n_first / t_all), "messages_per_s": round(2 * n_first / t_all)}
            # 1b. the relay alone: queue with the worker stopped, then let it drain
            net.stop("links")
            for batch in relay_only:
                assert net.post(batch)["status"] == 200
            t1 = time.perf_counter()
            net.start_links()
            total = n_first + n_relay
            assert wait_for(lambda: acked(db) >= total and acked(db, "fuhyo") >= total, 600, 0.01)
            t_relay = time.perf_counter() - t1  # includes the worker's start (about 0.5 s)
            out["relay_only"] = {"updates": n_relay, "seconds": round(t_relay, 2),
                                 "updates_per_s": round(n_relay / t_relay),
                                 "messages_per_s": round(2 * n_relay / t_relay)}
            received = len(net.received("prefecture", "prefecture"))
            out["prefecture_received"] = received
            assert received == total, (received, total)

            # 2. latency at 100 updates/s
            base = acked(db)
            lat: list[float] = []
            done = threading.Event()
            sent_at: dict[int, float] = {}

            def watch() -> None:
                next_seq = base + 1
                while not done.is_set() or next_seq <= base + len(singles):
                    a = acked(db)
                    now = time.perf_counter()
                    while next_seq <= a:
                        if next_seq in sent_at:
                            lat.append((now - sent_at[next_seq]) * 1000)
                        next_seq += 1
                    if next_seq > base + len(singles):
                        return
                    time.sleep(0.001)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            interval = 1 / 100
            start = time.perf_counter()
            for i, items in enumerate(singles):
                target = start + i * interval
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent_at[base + i + 1] = time.perf_counter()
                assert net.post(items)["status"] == 200
            done.set()
            watcher.join(60)
            out["latency_ms"] = {"count": len(lat), "rate_per_s": round(len(singles) / (time.perf_counter() - start)),
                                 "p50": round(statistics.median(lat), 1), "p90": round(pct(lat, 90), 1),
                                 "p99": round(pct(lat, 99), 1), "max": round(max(lat), 1)}
        finally:
            net.close()
    out["load_end"] = load()
    t, r, lt = out["together"], out["relay_only"], out["latency_ms"]
    print(f"intake + relay together: {t['updates']} updates acknowledged by the prefecture in {t['acked_s']} s "
          f"= {t['updates_per_s']} updates/s ({t['messages_per_s']} messages/s, F2 + 附票), intake alone took "
          f"{t['intake_s']} s   target >= 2,000 updates/s")
    print(f"relay alone (outbox queued, worker started): {r['updates']} updates in {r['seconds']} s = "
          f"{r['updates_per_s']} updates/s ({r['messages_per_s']} messages/s)")
    print(f"latency intake -> prefecture ack at {lt['rate_per_s']} updates/s: p50 {lt['p50']} ms, p90 {lt['p90']} ms, "
          f"p99 {lt['p99']} ms, max {lt['max']} ms ({lt['count']} updates)   target p99 < 50 ms")
    print(f"load: {out['load_start']} -> {out['load_end']}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
