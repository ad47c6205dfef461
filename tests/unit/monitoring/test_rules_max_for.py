"""The monitoring role's filter that caps `for:` in the lab's copy of the rules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location(
    "jukics_monitoring_filters", ROOT / "roles" / "monitoring" / "filter_plugins" / "jukics_monitoring.py")
assert _spec and _spec.loader
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)
RULES = yaml.safe_load((ROOT / "monitoring" / "rules" / "jukics.rules.yml").read_text(encoding="utf-8"))


def fors(rules: dict) -> dict[str, str | None]:
    return {r["alert"]: r.get("for") for g in rules["groups"] for r in g["rules"]}


def test_caps_only_longer_durations_and_leaves_the_source_alone() -> None:
    before = fors(RULES)
    capped = fors(filters.jukics_rules_max_for(RULES, "5m"))
    assert before["JukicsLinkMetricsMissing"] == "15m" and capped["JukicsLinkMetricsMissing"] == "5m"
    assert before["JukicsHostDown"] == "2m" and capped["JukicsHostDown"] == "2m"
    assert capped["JukicsLinkNacks"] is None  # no for: stays without one
    assert fors(RULES) == before
    assert set(capped) == set(before)


def test_empty_cap_is_the_rules_as_written() -> None:
    assert filters.jukics_rules_max_for(RULES, "") is RULES


@pytest.mark.parametrize("bad", ["30", "5 m", "1x", "m5"])
def test_a_bad_duration_is_refused(bad: str) -> None:
    with pytest.raises(Exception, match="not a Prometheus duration"):
        filters.jukics_rules_max_for(RULES, bad)
