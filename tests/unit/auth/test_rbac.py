"""RBAC from the duties table: no role, no access; vendors never reach personal data; export only for management."""

from __future__ import annotations

import pytest

from jukics.auth.rbac import PERMISSIONS, DutiesError, load_duties

DUTIES = load_duties(None)


def test_a_user_with_no_role_can_do_nothing():
    assert not any(DUTIES.allows([], p) for p in PERMISSIONS)
    assert not any(DUTIES.allows(["no-such-role"], p) for p in PERMISSIONS)
    assert DUTIES.unknown(["no-such-role", "counter"]) == ["no-such-role"]


def test_counter_staff_search_but_do_not_export_or_approve():
    assert DUTIES.allows(["counter"], "search") and DUTIES.allows(["counter"], "view")
    assert not DUTIES.allows(["counter"], "export") and not DUTIES.allows(["counter"], "correction_approve")


def test_only_the_management_role_exports():
    holders = [name for name in DUTIES.roles if DUTIES.allows([name], "export")]
    assert holders == ["manager"]


@pytest.mark.parametrize("permission", ["search", "view", "export", "identity_check"])
def test_a_vendor_never_reaches_personal_data_even_with_another_role(permission):
    assert not DUTIES.allows(["vendor"], permission)
    assert not DUTIES.allows(["vendor", "manager"], permission)
    assert DUTIES.allows(["vendor"], "operate")


def test_unknown_permission_is_a_programming_error():
    with pytest.raises(KeyError):
        DUTIES.allows(["manager"], "delete_everything")


@pytest.mark.parametrize(("table", "needle"), [
    ({"ops": {"permissions": ["operate", "search"], "vendor": True}}, "a vendor role may not hold search"),
    ({"clerk": {"permissions": ["export"]}}, "only a management role"),
    ({"clerk": {"permissions": ["fly"]}}, "unknown fly"),
    ({"clerk": {"permissions": "search"}}, "must be a list"),
    ({"clerk": {"permissions": [], "colour": "red"}}, "unknown keys colour"),
])
def test_a_bad_duties_table_is_refused(table, needle):
    with pytest.raises(DutiesError) as exc:
        load_duties(table)
    assert any(needle in p for p in exc.value.problems)


def test_a_custom_table():
    duties = load_duties({"kakari": {"permissions": ["identity_check"]},
                          "kacho": {"permissions": ["search", "export"], "management": True}})
    assert duties.allows(["kakari"], "identity_check") and not duties.allows(["kakari"], "search")
    assert duties.allows(["kacho"], "export")


def test_the_config_loads_the_table_and_refuses_a_bad_one(tmp_path):
    from jukics.config import ConfigError, parse_config

    base = {"cs": {"municipality_code": "142140", "environment": "development"},
            "database": {"url": f"sqlite:///{tmp_path}/j.db"},
            "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "s")},
            "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x", "key_file": "/x", "client_ca_file": "/x",
                       "allowed_clients": ["kizon"]}}
    assert parse_config(base).duties.allows(["manager"], "export")
    custom = parse_config({**base, "roles": {"kacho": {"permissions": ["export"], "management": True}}})
    assert set(custom.duties.roles) == {"kacho"}
    with pytest.raises(ConfigError, match="vendor role may not hold"):
        parse_config({**base, "roles": {"ops": {"permissions": ["view"], "vendor": True}}})
