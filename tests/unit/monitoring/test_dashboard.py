"""monitoring/dashboards/jukics.json: it parses as a Grafana dashboard and every query reads only
metrics that exist (the rules' series, or the metric names the service and the timers export)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "monitoring" / "dashboards" / "jukics.json"

# Exported but read by no alert (the dashboard shows them): the service's /metrics and the timers'
# textfiles (docs/monitoring.md, "Metrics").
EXPORTED = {
    "jukics_backup_size_bytes", "jukics_backup_generations", "jukics_backup_drill_duration_seconds",
    "jukics_intake_items_total", "jukics_intake_refusals_total", "jukics_searches_total",
    "jukics_link_delivered_total", "jukics_link_duplicates_total", "jukics_link_last_success_timestamp_seconds",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """Series names in a PromQL expression: identifiers outside label matchers, strings and ranges
    that are not functions, aggregations or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    return names


def rule_metrics() -> set[str]:
    names: set[str] = set()
    for f in (ROOT / "monitoring" / "rules").glob("*.yml"):
        for group in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                names |= metric_names(rule["expr"])
    return names


def exprs(dashboard: dict) -> list[str]:
    out = []
    for panel in dashboard["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            out += [t["expr"] for t in p.get("targets", [])]
    return out


def test_metric_names_parser() -> None:
    assert metric_names('sum by (instance) (increase(jukics_operator_logins_total{result!="ok"}[10m])) >= 10') \
        == {"jukics_operator_logins_total"}
    assert metric_names("time() - jukics_backup_last_success_timestamp_seconds > 26 * 3600") \
        == {"jukics_backup_last_success_timestamp_seconds"}
    assert metric_names('up{job="jukics"} == 0 or min without (pid) (jukics_tpm_up)') == {"up", "jukics_tpm_up"}


def test_dashboard_parses_and_every_panel_queries_prometheus() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    graphs = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(graphs) >= 15
    for p in graphs:
        assert p["targets"], p["title"]
        assert p["datasource"]["type"] == "prometheus", p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_every_dashboard_expression_reads_known_metrics() -> None:
    known = rule_metrics() | EXPORTED
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    unknown = {e: metric_names(e) - known for e in exprs(dash) if metric_names(e) - known}
    assert not unknown


@pytest.mark.parametrize("topic", ["jukics_link_", "jukics_intake_", "jukics_operator_logins_total", "jukics_cert_",
                                   "jukics_backup_", "jukics_nft_mac_drops_total", "node_filesystem_"])
def test_dashboard_covers(topic: str) -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert any(topic in e for e in exprs(dash))


def test_a_misspelt_metric_is_caught() -> None:
    known = rule_metrics() | EXPORTED
    assert metric_names("rate(jukics_link_deliverd_total[5m])") - known == {"jukics_link_deliverd_total"}
