"""Filters of the monitoring role."""

from __future__ import annotations

import copy
import re
from typing import Any

from ansible.errors import AnsibleFilterError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def _seconds(text: str) -> float:
    text = str(text).strip()
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise AnsibleFilterError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def jukics_rules_max_for(rules: dict[str, Any], cap: str) -> dict[str, Any]:
    """The rule file with every `for:` longer than `cap` set to `cap` (the lab's short alerts)."""
    if not cap:
        return rules
    limit = _seconds(cap)
    out = copy.deepcopy(rules)
    for group in out.get("groups", []):
        for rule in group.get("rules", []):
            if "for" in rule and _seconds(rule["for"]) > limit:
                rule["for"] = cap
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"jukics_rules_max_for": jukics_rules_max_for}
