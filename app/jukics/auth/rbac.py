"""RBAC from data: the duties-to-permissions table (対応表) in the configuration.

A role is a name with a list of permissions and two flags. ``vendor`` marks the operations/vendor
accounts, which may run the appliance but never read or export personal data
(「委託先には権限を付与していない」); ``management`` marks the role that may hold ``export``. The
table is checked when it is loaded, so a configuration that gives a vendor role ``search`` or a
counter role ``export`` never starts. A user with no role can do nothing; unknown role names grant
nothing (and are reported by the check).

    [roles.counter]
    permissions = ["identity_check", "search", "view"]
    [roles.manager]          # 本人確認情報管理責任者
    permissions = ["identity_check", "search", "view", "correction_request", "correction_approve", "export"]
    management = true
    [roles.vendor]
    permissions = ["operate"]
    vendor = true
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: what touches resident data (never for a vendor role)
PERSONAL_PERMISSIONS = frozenset({"identity_check", "search", "view", "correction_request", "correction_approve",
                                  "export", "witness"})
#: running the appliance: links, certificates, backups, reports without personal data
OPERATIONS_PERMISSIONS = frozenset({"operate", "manage_operators", "audit_review"})
PERMISSIONS = PERSONAL_PERMISSIONS | OPERATIONS_PERMISSIONS

DEFAULT_DUTIES: Mapping[str, Mapping[str, Any]] = {
    "counter": {"permissions": ["identity_check", "search", "view", "correction_request", "witness"]},
    "manager": {"permissions": ["identity_check", "search", "view", "correction_request", "correction_approve",
                                "export", "witness", "audit_review"], "management": True},
    "security_admin": {"permissions": ["manage_operators", "audit_review"]},
    "vendor": {"permissions": ["operate"], "vendor": True},
}


class DutiesError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Role:
    name: str
    permissions: frozenset[str]
    vendor: bool = False
    management: bool = False


@dataclass(frozen=True)
class Duties:
    roles: Mapping[str, Role]

    def permissions_of(self, role_names: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for name in role_names:
            role = self.roles.get(name)
            if role is not None:
                out |= role.permissions
        return frozenset(out)

    def allows(self, role_names: Iterable[str], permission: str) -> bool:
        if permission not in PERMISSIONS:
            raise KeyError(f"unknown permission {permission!r}")
        names = list(role_names)
        # a vendor account never reaches personal data, whatever else it was granted
        if permission in PERSONAL_PERMISSIONS and any(self.roles[n].vendor for n in names if n in self.roles):
            return False
        return permission in self.permissions_of(names)

    def unknown(self, role_names: Iterable[str]) -> list[str]:
        return sorted(set(role_names) - set(self.roles))


def load_duties(table: Mapping[str, Any] | None) -> Duties:
    """The ``[roles]`` table of the configuration (or the default); every problem is reported at once."""
    problems: list[str] = []
    roles: dict[str, Role] = {}
    for name, spec in (table if table is not None else DEFAULT_DUTIES).items():
        if not isinstance(spec, Mapping):
            problems.append(f"roles.{name}: must be a table")
            continue
        perms = spec.get("permissions", [])
        if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
            problems.append(f"roles.{name}.permissions: must be a list of permission names")
            continue
        unknown = sorted(set(perms) - PERMISSIONS)
        if unknown:
            problems.append(f"roles.{name}.permissions: unknown {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(PERMISSIONS))})")
        vendor, management = bool(spec.get("vendor", False)), bool(spec.get("management", False))
        if vendor and set(perms) & PERSONAL_PERMISSIONS:
            problems.append(f"roles.{name}: a vendor role may not hold "
                            f"{', '.join(sorted(set(perms) & PERSONAL_PERMISSIONS))} (委託先には権限を付与していない)")
        if "export" in perms and not management:
            problems.append(f"roles.{name}: only a management role (management = true) may hold export")
        extra = set(spec) - {"permissions", "vendor", "management"}
        if extra:
            problems.append(f"roles.{name}: unknown keys {', '.join(sorted(extra))}")
        roles[name] = Role(name, frozenset(perms), vendor, management)
    if problems:
        raise DutiesError(problems)
    return Duties(roles)
