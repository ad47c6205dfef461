"""The access review: every account by department, with what needs a decision flagged."""

from __future__ import annotations

import datetime as dt

from jukics.auth.rbac import load_duties
from jukics.auth.reports import access_review, render_text

NOW = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)


def account(user_id: str, department: str = "市民課", roles: tuple[str, ...] = ("counter",), **kw) -> dict:
    base = {"user_id": user_id, "department": department, "roles": list(roles), "account_expires_on": "2027-03-31",
            "disabled": False, "locked_until": None, "last_login_at": "2026-12-01T00:00:00.000000Z"}
    return {**base, **kw}


def test_flags_and_grouping():
    accounts = [account("op0001"), account("op0002", last_login_at=None),
                account("op0003", last_login_at="2026-08-01T00:00:00.000000Z"),
                account("op0004", account_expires_on="2026-12-20"), account("op0005", account_expires_on="2026-12-01"),
                account("op0006", locked_until="2026-12-07T03:10:00.000000Z"), account("op0007", disabled=True),
                account("op0008", roles=("ghost",)), account("op0009", roles=()),
                account("ven001", department="委託先", roles=("vendor",))]
    report = access_review(accounts, load_duties(None), now=NOW)
    flags = {e["user_id"]: e["flags"] for entries in report["departments"].values() for e in entries}
    assert flags["op0001"] == [] and flags["ven001"] == []
    assert flags["op0002"] == ["never_used"] and flags["op0003"] == ["idle"]
    assert flags["op0004"] == ["expiring"] and flags["op0005"] == ["expired"]
    assert flags["op0006"] == ["locked"] and flags["op0007"] == ["disabled"]
    assert flags["op0008"] == ["unknown_roles"] and flags["op0009"] == ["no_role"]
    assert list(report["departments"]) == ["委託先", "市民課"]
    assert report["accounts"] == 10 and report["flagged"] == 8
    vendor = report["departments"]["委託先"][0]
    assert vendor["permissions"] == ["operate"]
    text = render_text(report)
    assert "[市民課]" in text and "op0003" in text and "** idle" in text and "Reviewed by" in text
