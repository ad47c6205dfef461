"""Reports: activity per operator, the random access-log sample, the self-inspection checklist."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from jukics.auth import reports
from jukics.cli import report as report_cli

NOW = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)
START, END = NOW - dt.timedelta(days=30), NOW


def row(seq: int, actor: str, action: str, outcome: str = "ok") -> dict:
    return {"seq": seq, "ts": f"2026-12-0{1 + seq % 5}T00:00:00.000000Z", "actor": actor, "terminal": "t",
            "action": action, "purpose": "p", "outcome": outcome, "code": None if outcome == "ok" else "E_X",
            "result_count": 1}


ROWS = [row(1, "op1", "search"), row(2, "op1", "search"), row(3, "op1", "operator.login", "refused"),
        row(4, "op2", "export.create"), row(5, "intake", "intake.apply")]
ACCOUNTS = [{"user_id": "op1", "department": "市民課"}, {"user_id": "op2", "department": "情報政策課"}]


def test_activity_counts_per_user_and_department():
    rep = reports.activity(ROWS, ACCOUNTS, start=START, end=END, now=NOW)
    op1 = rep["departments"]["市民課"][0]
    assert (op1["total"], op1["refused"], op1["actions"]) == (3, 1, {"operator.login": 1, "search": 2})
    assert rep["departments"]["情報政策課"][0]["actions"] == {"export.create": 1}
    assert rep["departments"]["(no operator)"][0]["user_id"] == "intake"
    text = reports.render_activity(rep)
    assert "op1" in text and "search 2" in text and "Reviewed by" in text


def test_sample_is_reproducible_from_its_seed_and_bounded():
    rows = [row(i, "op1", "search") for i in range(1, 200)]
    seed = reports.new_seed()
    a = reports.sample(rows, 10, seed=seed, start=START, end=END, now=NOW)
    b = reports.sample(rows, 10, seed=seed, start=START, end=END, now=NOW)
    assert a["entries"] == b["entries"] and len(a["entries"]) == 10 and len({e["seq"] for e in a["entries"]}) == 10
    assert reports.new_seed() != seed  # 63 random bits
    others = [reports.sample(rows, 10, seed=s, start=START, end=END, now=NOW)["entries"] for s in (1, 2, 3)]
    assert any(o != a["entries"] for o in others)
    assert len(reports.sample(rows[:3], 10, seed=1, start=START, end=END, now=NOW)["entries"]) == 3
    assert f"--seed {seed}" in reports.render_sample(a)


def test_self_inspection_summary_and_render():
    checks = [{"item": "a", "status": "ok", "detail": "fine"}, {"item": "b", "status": "problem", "detail": ["x"]},
              {"item": "c", "status": "not_available", "detail": "no tool"}]
    rep = reports.self_inspection(checks, now=NOW)
    assert rep["summary"] == {"ok": 1, "problem": 1, "not_available": 1}
    text = reports.render_self_inspection(rep)
    assert "[ok] a" in text and "[!!] b" in text and "[--] c" in text and "Approved by" in text


def test_firewall_check_degrades_and_reads_the_allowlist(tmp_path):
    boot = tmp_path / "jukics.nft"
    boot.write_text("table netdev jukics_mac { set allow { elements = { 52:54:00:AA:bb:01, 52:54:00:aa:bb:02 } } }")
    c = report_cli.firewall_check(tool=str(tmp_path / "missing-tool"), boot_file=boot)
    assert c["status"] == "not_available" and "52:54:00:aa:bb:01, 52:54:00:aa:bb:02" in c["detail"][0]
    tool = tmp_path / "fw"
    tool.write_text("#!/bin/sh\nexit 3\n")
    tool.chmod(0o755)
    assert report_cli.firewall_check(tool=str(tool), boot_file=boot)["status"] == "problem"
    tool.write_text("#!/bin/sh\nexit 0\n")
    assert report_cli.firewall_check(tool=str(tool), boot_file=tmp_path / "none")["status"] == "ok"


def test_report_cli(tmp_path, capsys, monkeypatch, dev_cli):
    from jukics.cli.main import main as cli_main

    cli = dev_cli(cert_file=f"{tmp_path}/missing.pem")
    base = cli.base
    for uid in ("op0001", "op0002"):
        cli.add_operator(uid)
    capsys.readouterr()
    assert cli_main([*base, "report", "activity", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["departments"]["(no operator)"][0]["actions"] == {"operator.add": 2}
    assert cli_main([*base, "report", "sample", "1", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["entries"]) == 1 and first["population"] == 2
    assert cli_main([*base, "report", "sample", "1", "--json", "--seed", str(first["seed"])]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == first["entries"]
    assert cli_main([*base, "report", "sample", "1"]) == 0 and "Audited by" in capsys.readouterr().out
    assert cli_main([*base, "report", "self-inspection", "--json"]) == 0
    checks = {c["item"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["audit chain health (jukics audit verify)"]["status"] == "ok"
    assert checks["certificates (jukics cert status)"]["status"] == "problem"  # the intake cert is missing
    assert "2 operator accounts, 2 active" in checks["roles and duties table (対応表)"]["detail"]
    assert checks["export recipients ([exports] recipients)"]["detail"] == ["none: exports are impossible"]
    assert Path("/nonexistent").exists() is False
    assert cli_main([*base, "report", "self-inspection"]) == 0 and "自己点検" in capsys.readouterr().out
