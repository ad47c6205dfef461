"""Reports on the operator accounts for the section head and the auditors (no resident data).

``access_review``: every account with its roles, last use and expiry, grouped by department, with
what needs a decision flagged: never used, unused for ``idle_days``, expiring within
``expiring_days``, locked, disabled, and roles the duties table does not know. Rendered as JSON
(machine use) and as a readable text document (the review's paper trail).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from jukics.auth.rbac import Duties
from jukics.store.clock import JST, parse_iso_utc


def access_review(accounts: Sequence[Mapping[str, Any]], duties: Duties, *, now: dt.datetime,
                  idle_days: int = 90, expiring_days: int = 30) -> dict[str, Any]:
    today = now.astimezone(JST).date()
    departments: dict[str, list[dict[str, Any]]] = {}
    for a in accounts:
        flags = []
        last = a.get("last_login_at")
        if a.get("disabled"):
            flags.append("disabled")
        if last is None:
            flags.append("never_used")
        elif now - parse_iso_utc(last) > dt.timedelta(days=idle_days):
            flags.append("idle")
        expires = dt.date.fromisoformat(a["account_expires_on"])
        if expires < today:
            flags.append("expired")
        elif (expires - today).days <= expiring_days:
            flags.append("expiring")
        if a.get("locked_until") and parse_iso_utc(a["locked_until"]) > now:
            flags.append("locked")
        unknown = duties.unknown(a["roles"])
        if unknown:
            flags.append("unknown_roles")
        if not a["roles"]:
            flags.append("no_role")
        departments.setdefault(a["department"], []).append({
            "user_id": a["user_id"], "roles": list(a["roles"]),
            "permissions": sorted(duties.permissions_of(a["roles"])), "last_login_at": last,
            "account_expires_on": a["account_expires_on"], "flags": flags})
    total = sum(len(v) for v in departments.values())
    flagged = sum(1 for v in departments.values() for e in v if e["flags"])
    return {"report": "access-review", "generated_at": now.isoformat(), "accounts": total, "flagged": flagged,
            "idle_days": idle_days, "expiring_days": expiring_days,
            "departments": {k: sorted(v, key=lambda e: e["user_id"]) for k, v in sorted(departments.items())}}


def render_text(report: Mapping[str, Any]) -> str:
    lines = [f"アクセス権限の見直し (access review) — {report['generated_at']}",
             f"{report['accounts']} accounts, {report['flagged']} need a decision "
             f"(idle > {report['idle_days']} days, expiring within {report['expiring_days']} days)", ""]
    for dept, entries in report["departments"].items():
        lines.append(f"[{dept}]")
        for e in entries:
            flags = f"  ** {', '.join(e['flags'])}" if e["flags"] else ""
            lines.append(f"  {e['user_id']:<16} roles {','.join(e['roles']) or '-':<24} "
                         f"last use {e['last_login_at'] or 'never':<28} expires {e['account_expires_on']}{flags}")
        lines.append("")
    lines.append("Reviewed by: ____________________  Date: __________")
    return "\n".join(lines) + "\n"


# ---- activity, sample, self-inspection (issue 6 §7) ----------------------------------------------

def activity(rows: Sequence[Mapping[str, Any]], accounts: Sequence[Mapping[str, Any]], *, start: dt.datetime,
             end: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """Per user: operations by action and outcome within [start, end) (audit rows: actor, action, outcome)."""
    dept = {a["user_id"]: a["department"] for a in accounts}
    users: dict[str, dict[str, Any]] = {}
    for r in rows:
        u = users.setdefault(r["actor"], {"user_id": r["actor"], "department": dept.get(r["actor"], "(no operator)"),
                                          "total": 0, "refused": 0, "actions": {}})
        u["total"] += 1
        u["refused"] += r["outcome"] != "ok"
        u["actions"][r["action"]] = u["actions"].get(r["action"], 0) + 1
    by_dept: dict[str, list[dict[str, Any]]] = {}
    for u in sorted(users.values(), key=lambda e: e["user_id"]):
        u["actions"] = dict(sorted(u["actions"].items()))
        by_dept.setdefault(u["department"], []).append(u)
    return {"report": "activity", "generated_at": now.isoformat(), "period": [start.isoformat(), end.isoformat()],
            "operations": len(rows), "departments": dict(sorted(by_dept.items()))}


def render_activity(report: Mapping[str, Any]) -> str:
    lines = [f"操作状況 (activity by operator) — {report['generated_at']}",
             f"period {report['period'][0]} .. {report['period'][1]}: {report['operations']} operations", ""]
    for dept, users in report["departments"].items():
        lines.append(f"[{dept}]")
        for u in users:
            acts = ", ".join(f"{k} {v}" for k, v in u["actions"].items())
            lines.append(f"  {u['user_id']:<16} {u['total']:>6} ops, {u['refused']} refused: {acts}")
        lines.append("")
    lines.append("Reviewed by (section head): ____________________  Date: __________")
    return "\n".join(lines) + "\n"


def sample(rows: Sequence[Mapping[str, Any]], n: int, *, seed: int, start: dt.datetime, end: dt.datetime,
           now: dt.datetime) -> dict[str, Any]:
    """``n`` audit entries drawn without replacement; the same seed and period give the same draw.

    The seed comes from :func:`new_seed` (the OS's CSPRNG), so the sample cannot be predicted; it is
    printed so an auditor can redraw the same entries.
    """
    import random

    chosen = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))  # noqa: S311 - seeded by CSPRNG
    keep = ("seq", "ts", "actor", "terminal", "action", "purpose", "outcome", "code", "result_count")
    return {"report": "sample", "generated_at": now.isoformat(), "period": [start.isoformat(), end.isoformat()],
            "seed": seed, "population": len(rows), "requested": n,
            "entries": [{k: rows[i].get(k) for k in keep} for i in chosen]}


def new_seed() -> int:
    import secrets

    return secrets.SystemRandom().getrandbits(63)


def render_sample(report: Mapping[str, Any]) -> str:
    lines = [f"抜き打ち監査 標本 (random sample of the access log) — {report['generated_at']}",
             f"period {report['period'][0]} .. {report['period'][1]}; {len(report['entries'])} of "
             f"{report['population']} entries; seed {report['seed']} (redraw with --seed {report['seed']})", ""]
    for e in report["entries"]:
        lines.append(f"  #{e['seq']:<8} {e['ts']}  {e['actor']:<16} {e['action']:<24} {e['purpose']:<12} "
                     f"{e['outcome']}{' ' + e['code'] if e['code'] else ''}  [ ] checked")
    lines += ["", "Audited by: ____________________  Date: __________"]
    return "\n".join(lines) + "\n"


def self_inspection(checks: Sequence[Mapping[str, Any]], *, now: dt.datetime) -> dict[str, Any]:
    """The annual 自己点検 checklist: each check has ``item``, ``status`` (ok, problem, not_available) and
    ``detail``; gathered from the live system by the caller (jukics.cli.report)."""
    counts = {s: sum(1 for c in checks if c["status"] == s) for s in ("ok", "problem", "not_available")}
    return {"report": "self-inspection", "generated_at": now.isoformat(), "summary": counts, "checks": list(checks)}


def render_self_inspection(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    lines = [f"自己点検 チェックリスト (annual self-inspection) — {report['generated_at']}",
             f"{s['ok']} ok, {s['problem']} problems, {s['not_available']} not available", ""]
    for c in report["checks"]:
        mark = {"ok": "[ok]", "problem": "[!!]", "not_available": "[--]"}[c["status"]]
        lines.append(f"{mark} {c['item']}")
        detail = c["detail"]
        for line in (detail if isinstance(detail, list) else [detail]):
            lines.append(f"       {line}")
    lines += ["", "Inspected by: ____________________  Approved by (管理責任者): ____________________  "
              "Date: __________"]
    return "\n".join(lines) + "\n"
