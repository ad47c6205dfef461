"""Benchmark: search by 氏名 + 生年月日 (F7/F8, local file) at 1,000,000 SYNTHETIC residents.

The search runs through the code the counter terminal uses:

1. ``ResidentStore.find_by_name_and_birth_date`` alone (normalise + 清音化, keyed hash, indexed
   SELECT, AES-GCM decrypt and JSON decode of each hit): the store's share;
2. ``QueryRouter.search`` (search-key rule check, local tier, filtering, projection and the audit
   record of the query, which is one write transaction): what a terminal search costs the service;
   ``AuditLog.append`` of such a record alone is timed as well, to show the write's share;
3. end to end through ``falcon.testing`` on the terminal app of ``build_terminal_app`` (a real
   operator logged in with password + TOTP, a session token, the access-logged acknowledgement and
   a purpose code), ``POST /v1/searches``: the router plus routing, session check and JSON.

The database is loaded once with ``initial_load.py``'s path (``Intake.submit`` ->
``ResidentStore.apply_batch``, two loader processes) and cached under
``/var/cache/jukics/bench/search-n<N>-seed<S>-<schema head>/`` so reruns skip the load. When only a
database of an older schema head is cached for the same N and seed, it is copied and upgraded with
the migrations (that also times the migration at that size). The runs append audit records (and
one operator and its session) to the cached database; that does not change what is measured.

Queries: (かな氏名, 生年月日) of random current residents, read back from the store by 住民票コード,
written the way a clerk types them: half of them in katakana with no space, half in hiragana with a
full-width space (the normalisation must find both).

Prints p50/p95/p99/max ms per stage, hits per query, N, the load average, and a JSON summary.
Target (issue 6): p99 < 20 ms at 1,000,000 residents.

    nice -n 10 env PYTHONPATH=app .venv/bin/python bench/search.py            # N = 1,000,000
    PYTHONPATH=app .venv/bin/python bench/search.py --n 20000 --searches 500  # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))
sys.path.insert(0, str(ROOT / "bench"))

CACHE = Path("/var/cache/jukics/bench")
TERMINAL = "term-01.lab.jukics.example"
PASSWORD = "Counter-Staff-2026"
PURPOSE = "F7-inquiry"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cache_dir(n: int, seed: int, head: str) -> Path:
    return CACHE / f"search-n{n}-seed{seed}-{head}"


def ensure_database(n: int, seed: int, procs: int) -> tuple[Path, dict[str, Any]]:
    """The cached database folder for (n, seed, schema head), loading or upgrading it when missing."""
    import initial_load
    from jukics.config import load_config
    from jukics.service import upgrade_database
    from jukics.store import db

    head = db.head_revision()
    target = cache_dir(n, seed, head)
    info: dict[str, Any] = {"cache": str(target), "head": head}
    if (target / "complete").exists():
        info["prepared"] = "cached"
        return target, info
    CACHE.mkdir(parents=True, exist_ok=True)
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    older = sorted(p for p in CACHE.glob(f"search-n{n}-seed{seed}-*") if (p / "complete").exists())
    if older:
        # Same residents, older schema: copy and run the migrations (cheaper than a reload).
        source = older[-1]
        print(f"search: upgrading a copy of {source.name} to {head} ...", flush=True)
        work.mkdir()
        shutil.copytree(source / "keys", work / "keys")
        for f in source.glob("jukics.db*"):
            shutil.copy2(f, work / f.name)
        work.rename(target)  # the config names its folder: written for the final one
        initial_load.write_config(target)
        t0 = time.perf_counter()
        upgrade_database(load_config(target / "jukics.toml"))
        info.update(prepared=f"upgraded from {source.name}", migrate_s=round(time.perf_counter() - t0, 1))
    else:
        print(f"search: loading {n} residents (initial_load.py path, {procs} processes); load {load()} ...",
              flush=True)
        work.mkdir()
        r = initial_load.run(work, n, seed, 1000, procs, 3600)
        if r["residents"] != n or r["not_applied"]:
            raise SystemExit(f"search: the load was incomplete: {r['residents']} residents, {r['not_applied']}")
        work.rename(target)
        initial_load.write_config(target)
        info.update(prepared="loaded", load_s=round(r["wall_s"], 1), records=r["records"])
        print(f"  loaded in {r['wall_s']:.0f} s; load {load()}", flush=True)
    (target / "complete").write_text(json.dumps(info) + "\n", encoding="utf-8")
    return target, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="residents (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--procs", type=int, default=2, help="loader processes when the database is loaded")
    ap.add_argument("--searches", type=int, default=5000, help="timed searches per stage")
    ap.add_argument("--warmup", type=int, default=1000, help="searches before timing")
    ap.add_argument("--load-only", action="store_true", help="prepare the cached database and stop")
    ap.add_argument("--db", type=Path, help="measure this cached folder as it is (e.g. one of an older schema "
                                           "head, to compare); no load, no upgrade")
    args = ap.parse_args()
    if args.db is not None:
        from jukics.config import load_config
        from jukics.service import Service
        from jukics.store import db

        folder = args.db.resolve()
        info = {"cache": str(folder), "prepared": "given", "head": db.current_revision(
            Service(load_config(folder / "jukics.toml")).engine)}
    else:
        folder, info = ensure_database(args.n, args.seed, args.procs)
    print(f"search: database {folder} ({info['prepared']})", flush=True)
    if args.load_only:
        return 0
    return measure(folder, info, args)


def sample_queries(store: Any, n: int, seed: int, count: int) -> list[dict[str, str]]:
    """(かな氏名, 生年月日) of ``count`` random current residents, typed in two ways."""
    from lookup import sample_codes

    rng = random.Random(seed + 2000)  # benchmark sampling, not a secret
    queries: list[dict[str, str]] = []
    codes = sample_codes(n, seed, count * 2, pick_seed=seed + 1000)
    for code in codes:
        record = store.get_current(code)
        if record is None or record.get("record_status") != "current":
            continue  # 消除者 are not found by a search
        kana = str(record["name_kana"])
        if rng.random() < 0.5:  # katakana, no space: the normalisation must map it to the same key
            kana = "".join(chr(ord(c) + 0x60) if "\u3041" <= c <= "\u3096" else c for c in kana if c != "\u3000")
        queries.append({"name_kana": kana, "birth_date": str(record["birth_date"]),
                        "juminhyo_code": code})
        if len(queries) == count:
            break
    return queries


def timed(label: str, queries: list[dict[str, str]], warmup: int, call: Callable[[dict[str, str]], int],
          ) -> dict[str, Any]:
    for q in queries[:warmup]:
        call(q)
    load_before = load()
    times: list[float] = []
    hits: list[int] = []
    start = time.perf_counter()
    for q in queries[warmup:]:
        t0 = time.perf_counter()
        found = call(q)
        times.append((time.perf_counter() - t0) * 1000)
        hits.append(found)
    wall = time.perf_counter() - start
    r = {"searches": len(times), "p50_ms": round(pct(times, 50), 3), "p95_ms": round(pct(times, 95), 3),
         "p99_ms": round(pct(times, 99), 3), "max_ms": round(max(times), 2),
         "per_s": round(len(times) / wall, 1), "hits_mean": round(sum(hits) / len(hits), 2),
         "hits_max": max(hits), "load_before": load_before, "load_after": load()}
    print(f"  {label}: p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f}, p99 {r['p99_ms']:.2f}, max "
          f"{r['max_ms']:.1f}; {r['per_s']:.0f}/s (one thread); hits per search mean {r['hits_mean']} max "
          f"{r['hits_max']}; load {r['load_before']} -> {r['load_after']}", flush=True)
    return r


def terminal_client(folder: Path, svc: Any) -> tuple[Any, str, Any]:
    """falcon.testing client on build_terminal_app, and a session token of a freshly added operator."""
    import pyotp
    from falcon import testing

    from jukics.api.identity import PeerIdentity
    from jukics.config import load_config
    from jukics.service import build_terminal_app

    toml = folder / "search-bench.toml"
    toml.write_text((folder / "jukics.toml").read_text(encoding="utf-8") + f"""
[terminal_listener]
listen = "127.0.0.1:18445"
cert_file = "{folder}/unused-t.crt"
key_file = "{folder}/unused-t.key"
client_ca_file = "{folder}/unused-tca.crt"
allowed_terminals = ["{TERMINAL}"]
purposes = {{ "{PURPOSE}" = "住民からの照会 (benchmark)" }}
""", encoding="utf-8")
    config = load_config(toml)
    app = build_terminal_app(config, identity=lambda env: PeerIdentity((TERMINAL,), "term-01"), service=svc)
    user = f"bench{int(time.time())}"  # a new operator per run (the cached database keeps the old ones)
    enrollment = svc.operators.add(user, PASSWORD, department="bench", roles=["counter"],
                                   account_expires_on=dt.date.today() + dt.timedelta(days=30), actor="bench")
    client = testing.TestClient(app)
    r = client.simulate_post("/v1/sessions", json={"user_id": user, "password": PASSWORD,
                                                   "totp": pyotp.TOTP(enrollment.totp_secret).now()})
    if r.status_code != 201:
        raise SystemExit(f"search: login refused: {r.status_code} {r.text}")
    return client, r.json["token"], config


def measure(folder: Path, info: dict[str, Any], args: argparse.Namespace) -> int:
    from jukics.config import load_config
    from jukics.links.routing import QueryRefused
    from jukics.service import Service
    from jukics.store import db

    svc = Service(load_config(folder / "jukics.toml"))
    store = svc.store
    stats = store.stats()
    print(f"search: {stats['residents']} current + {stats['deleted']} 消除者 ({stats['versions']} versions), "
          f"schema {db.current_revision(svc.engine)}; {os.cpu_count()} CPUs; load {load()}", flush=True)
    total = args.warmup + args.searches
    queries = sample_queries(store, args.n, args.seed, total)
    print(f"  {len(queries)} queries of random current residents ({args.warmup} warm-up each stage)", flush=True)
    missing: list[str] = []

    def by_store(q: dict[str, str]) -> int:
        rows = store.find_by_name_and_birth_date(q["name_kana"], q["birth_date"])
        if not any(r["juminhyo_code"] == q["juminhyo_code"] for r in rows):
            missing.append(q["juminhyo_code"])
        return len(rows)

    router = svc.query_router

    def by_router(q: dict[str, str]) -> int:
        try:
            answer = router.search({"name_kana": q["name_kana"], "birth_date": q["birth_date"]}, purpose=PURPOSE,
                                   actor="bench", terminal="bench")
        except QueryRefused as exc:
            raise SystemExit(f"search: refused: {exc.code}") from None
        return len(answer.results)

    from jukics.audit.chain import AuditEvent

    def audit_only(q: dict[str, str]) -> int:
        # what the router adds to the store's search: one audit record, one write transaction (fsync)
        svc.audit.append(AuditEvent(actor="bench", terminal="bench", action="query.search", purpose=PURPOSE,
                                    query={"source": "local", "asked": "local"}, targets=[q["juminhyo_code"]],
                                    result_count=1, outcome="ok"))
        return 1

    client, token, _config = terminal_client(folder, svc)
    headers = {"Authorization": f"Bearer {token}"}
    errors: list[int] = []

    def by_http(q: dict[str, str]) -> int:
        r = client.simulate_post("/v1/searches", headers=headers, json={
            "criteria": {"name_kana": q["name_kana"], "birth_date": q["birth_date"]}, "purpose": PURPOSE,
            "access_logged_ack": True})
        if r.status_code != 200:
            errors.append(r.status_code)
            return 0
        return len(r.json.get("results", []))

    results = {"store": timed("store.find_by_name_and_birth_date", queries, args.warmup, by_store),
               "audit_append": timed("AuditLog.append alone (one commit)", queries, args.warmup, audit_only),
               "router": timed("QueryRouter.search (audited)", queries, args.warmup, by_router),
               "http": timed("POST /v1/searches (falcon.testing, session)", queries, args.warmup, by_http)}
    svc.engine.dispose()
    ok = not missing and not errors
    if missing or errors:
        print(f"  NOT FOUND: {len(missing)} searched residents; HTTP errors: {sorted(set(errors))}", flush=True)
    summary = {"bench": "search", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "n": args.n,
               "current": stats["residents"], "deleted": stats["deleted"], "schema": info["head"],
               "prepared": info["prepared"], **{k: v for k, v in info.items() if k.endswith("_s")},
               "target_p99_ms": 20, **results, "missing": len(missing), "http_errors": len(errors)}
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
