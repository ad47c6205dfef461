"""`jukics report ...`: reports for the section head and the auditors (no resident data).

  report access-review [--json] [--idle-days N]   accounts by department, roles, last use, expiry, flags
  report activity [--since D] [--until D] [--json]  per-user operations by type (section head)
  report sample N [--since D] [--until D] [--seed S] [--json]
                                                  a random sample of access-log entries (unannounced audit);
                                                  the seed is printed, --seed redraws the same entries
  report self-inspection [--json]                 the annual 自己点検 checklist from the live system

Periods are Japanese calendar days, --since inclusive, --until exclusive (default: the last 30 days).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from jukics.config import Config

FIREWALL_TOOL = "/usr/local/sbin/jukics-firewall"
FIREWALL_BOOT_FILE = Path("/etc/nftables.d/jukics.nft")
MAC = re.compile(r"\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b", re.IGNORECASE)


def _service(config: Config) -> Any:
    from jukics.service import Service

    svc = Service(config)
    svc.keystore.data_key()
    return svc


def _print(report: dict[str, Any], text: str, as_json: bool) -> int:
    print(json.dumps(report, ensure_ascii=False, indent=2, default=str) if as_json else text, end="" if not as_json
          else "\n")
    return 0


def cmd_access_review(config: Config, args: argparse.Namespace) -> int:
    from jukics.auth.rbac import load_duties
    from jukics.auth.reports import access_review, render_text

    svc = _service(config)
    report = access_review(svc.operators.list(), config.duties or load_duties(None), now=svc.clock(),
                           idle_days=args.idle_days)
    return _print(report, render_text(report), args.json)


def _period(svc: Any, args: argparse.Namespace) -> tuple[dt.datetime, dt.datetime]:
    from jukics.store.clock import JST

    today = svc.clock().astimezone(JST).date()
    since = dt.date.fromisoformat(args.since) if args.since else today - dt.timedelta(days=30)
    until = dt.date.fromisoformat(args.until) if args.until else today + dt.timedelta(days=1)
    return (dt.datetime.combine(since, dt.time(), JST).astimezone(dt.UTC),
            dt.datetime.combine(until, dt.time(), JST).astimezone(dt.UTC))


def audit_rows(svc: Any, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from jukics.store.clock import iso_utc
    from jukics.store.schema import audit_log

    cols = [audit_log.c[n] for n in ("seq", "ts", "actor", "terminal", "action", "purpose", "outcome", "code",
                                     "result_count")]
    with svc.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(*cols).where(
            audit_log.c.ts >= iso_utc(start), audit_log.c.ts < iso_utc(end)).order_by(audit_log.c.seq))]


def cmd_activity(config: Config, args: argparse.Namespace) -> int:
    from jukics.auth.reports import activity, render_activity

    svc = _service(config)
    start, end = _period(svc, args)
    report = activity(audit_rows(svc, start, end), svc.operators.list(), start=start, end=end, now=svc.clock())
    return _print(report, render_activity(report), args.json)


def cmd_sample(config: Config, args: argparse.Namespace) -> int:
    from jukics.auth.reports import new_seed, render_sample, sample

    svc = _service(config)
    start, end = _period(svc, args)
    seed = args.seed if args.seed is not None else new_seed()
    report = sample(audit_rows(svc, start, end), args.n, seed=seed, start=start, end=end, now=svc.clock())
    return _print(report, render_sample(report), args.json)


def _run(argv: list[str]) -> tuple[int, str] | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode, done.stdout + done.stderr


def firewall_check(tool: str = FIREWALL_TOOL, boot_file: Path = FIREWALL_BOOT_FILE) -> dict[str, Any]:
    item = "firewall and MAC allowlist (nftables, jukics-firewall)"
    detail: list[str] = []
    if boot_file.is_file():
        try:
            macs = sorted(set(m.lower() for m in MAC.findall(boot_file.read_text(encoding="utf-8"))))
            detail.append(f"{boot_file}: {len(macs)} allowlisted MACs: {', '.join(macs) or '(none)'}")
        except OSError as exc:
            detail.append(f"{boot_file}: not readable ({exc.strerror})")
    else:
        detail.append(f"{boot_file}: not present")
    if not Path(tool).is_file():
        return {"item": item, "status": "not_available", "detail": [*detail, f"{tool} not installed"]}
    ran = _run([tool, "status", str(boot_file)])
    if ran is None:
        return {"item": item, "status": "not_available", "detail": [*detail, f"{tool} could not run"]}
    rc, out = ran
    state = {0: "running tables are the confirmed ones", 3: "running tables DRIFTED from the confirmed ones"}
    detail.append(state.get(rc, f"status exit {rc}: {out.strip()[:200]}"))
    return {"item": item, "status": "ok" if rc == 0 else ("problem" if rc == 3 else "not_available"),
            "detail": detail}


def patch_check() -> dict[str, Any]:
    item = "patch level (Debian packages)"
    detail = []
    version = Path("/etc/debian_version")
    if version.is_file():
        detail.append(f"Debian {version.read_text().strip()}")
    apt = shutil.which("apt-get")
    if apt is None:
        return {"item": item, "status": "not_available", "detail": [*detail, "apt-get not found"]}
    ran = _run([apt, "-s", "-o", "Debug::NoLocking=1", "upgrade"])
    if ran is None or ran[0] != 0:
        return {"item": item, "status": "not_available", "detail": [*detail, "apt-get -s upgrade failed"]}
    pending = [line.split()[1] for line in ran[1].splitlines() if line.startswith("Inst ")]
    security = [line.split()[1] for line in ran[1].splitlines() if line.startswith("Inst ") and "security" in line]
    detail.append(f"{len(pending)} pending updates ({len(security)} security) as of the last apt update"
                  + (f": {', '.join(pending[:20])}" if pending else ""))
    return {"item": item, "status": "problem" if security else "ok", "detail": detail}


def certificate_check(config: Config, now: dt.datetime, warn_days: int = 30) -> dict[str, Any]:
    from cryptography import x509

    files = {"intake": config.intake.cert_file}
    if config.peer_listener is not None:
        files["peer_listener"] = config.peer_listener.cert_file
    for link, peer in config.links.peers.items():
        files[f"link {link}"] = peer.cert_file
    detail, bad = [], False
    for name, path in files.items():
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            detail.append(f"{name}: {path} not readable as a certificate ({type(exc).__name__})")
            bad = True
            continue
        left = (cert.not_valid_after_utc - now).days
        bad |= left < warn_days
        detail.append(f"{name}: {cert.subject.rfc4514_string()} valid until {cert.not_valid_after_utc:%Y-%m-%d} "
                      f"({left} days)" + (" ** renew" if left < warn_days else ""))
    return {"item": "certificates (jukics cert status)", "status": "problem" if bad else "ok", "detail": detail}


def inspection_checks(config: Config, svc: Any) -> list[dict[str, Any]]:
    from jukics.auth.rbac import load_duties
    from jukics.service import verify_audit
    from jukics.store.retention import RETENTION_YEARS

    now = svc.clock()
    duties = config.duties or load_duties(None)
    accounts = svc.operators.list()
    unknown = sorted({a["user_id"] for a in accounts if duties.unknown(a["roles"])})
    checks = [{"item": "roles and duties table (対応表)", "status": "problem" if unknown else "ok",
               "detail": [f"{r.name}: {', '.join(sorted(r.permissions)) or '(nothing)'}"
                          + (" [vendor]" if r.vendor else "") + (" [management]" if r.management else "")
                          for r in duties.roles.values()]
               + [f"{len(accounts)} operator accounts, {sum(1 for a in accounts if not a['disabled'])} active"]
               + ([f"accounts with unknown roles: {', '.join(unknown)}"] if unknown else [])}]
    checks.append({"item": "retention settings", "status": "ok",
                   "detail": [f"history and 消除者 kept {RETENTION_YEARS} years (purge timer)",
                              f"unclaimed 転出証明書情報 kept {config.tokurei_unclaimed_days} days"]})
    checks.append({"item": "peer links", "status": "ok" if config.links.peers else "not_available",
                   "detail": [f"{k}: {p.url} (pinned {', '.join(p.peer_names)})" for k, p in config.links.peers.items()]
                   or ["no peer links configured"]})
    checks.append({"item": "export recipients ([exports] recipients)", "status": "ok",
                   "detail": [f"{k}: {len(v)} key(s)" for k, v in config.export_recipients.items()]
                   or ["none: exports are impossible"]})
    checks.append(certificate_check(config, now))
    try:
        ok, out = verify_audit(config)
        checks.append({"item": "audit chain health (jukics audit verify)", "status": "ok" if ok else "problem",
                       "detail": out["summary"]})
    except Exception as exc:  # a report degrades, it never crashes on one check
        checks.append({"item": "audit chain health (jukics audit verify)", "status": "not_available",
                       "detail": f"could not verify ({type(exc).__name__})"})
    checks.append(firewall_check())
    checks.append(patch_check())
    return checks


def cmd_self_inspection(config: Config, args: argparse.Namespace) -> int:
    from jukics.auth.reports import render_self_inspection, self_inspection

    svc = _service(config)
    report = self_inspection(inspection_checks(config, svc), now=svc.clock())
    return _print(report, render_self_inspection(report), args.json)


def register(sub: Any) -> None:
    what = "reports for the section head and the auditors (no resident data)"
    rep = sub.add_parser("report", help=what, description=what)
    rep_sub = rep.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = rep_sub.add_parser("access-review", help="accounts by department: roles, last use, expiry, what to decide")
    p.set_defaults(func=cmd_access_review)
    p.add_argument("--json", action="store_true")
    p.add_argument("--idle-days", type=int, default=90)

    def period(q: argparse.ArgumentParser) -> None:
        q.add_argument("--since", help="first day (YYYY-MM-DD, JST; default 30 days ago)")
        q.add_argument("--until", help="the day after the last (YYYY-MM-DD, JST; default tomorrow)")
        q.add_argument("--json", action="store_true")

    p = rep_sub.add_parser("activity", help="per-user operations by type in a period (for the section head)")
    p.set_defaults(func=cmd_activity)
    period(p)
    p = rep_sub.add_parser("sample", help="a random sample of N access-log entries (unannounced audit)")
    p.set_defaults(func=cmd_sample)
    p.add_argument("n", type=int)
    p.add_argument("--seed", type=int, help="redraw the sample of an earlier run (its printed seed)")
    period(p)
    p = rep_sub.add_parser("self-inspection", help="the annual 自己点検 checklist from the live configuration")
    p.set_defaults(func=cmd_self_inspection)
    p.add_argument("--json", action="store_true")
