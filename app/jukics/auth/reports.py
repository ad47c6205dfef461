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
