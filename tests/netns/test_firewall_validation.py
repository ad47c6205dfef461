"""The role's inventory validation (filter_plugins/jukics_firewall.py): every bad value is refused
with its stable FW-* code before the role touches a host, and the model the template renders is
normalised (MACs, collapsed networks, families)."""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any

import pytest


def good() -> dict[str, Any]:
    return {
        "zones": {
            "internal": {"interface": "eth0", "mac_allowlist": ["02:00:5E:00:53:01", "02-00-5e-00-53-02"]},
            "jukinet": {"interface": "eth1", "mac_allowlist": ["02:00:5e:00:53:10"]},
        },
        "inbound": [
            {"zone": "internal", "name": "intake", "sources": ["192.0.2.20"], "port": 8443},
            {"zone": "internal", "name": "ssh", "sources": ["192.0.2.0/28", "2001:db8::/64"], "port": 22},
            {"zone": "jukinet", "name": "peer", "sources": ["198.51.100.20"], "port": 8443, "proto": "tcp"},
        ],
        "outbound": [{"zone": "jukinet", "name": "prefecture", "destinations": ["198.51.100.20"], "port": 8443}],
        "egress_services": {"ntp": {"zone": "internal", "servers": ["192.0.2.5"]}},
        "forbidden_networks": {"団体内統合宛名": ["203.0.113.0/25"], "情報提供NWS": ["203.0.113.128/25"]},
        "mac_filter_enabled": True,
        "anti_lockout_enabled": True,
        "mac_log_rate": "10/minute",
        "policy_log_rate": "5/second",
        "rollback_seconds": 60,
        "confirm_timeout": 15,
    }


def with_change(path: str, value: object) -> dict[str, Any]:
    """good() with one value replaced; path is dotted, list indexes are numbers, '+' appends."""
    settings = copy.deepcopy(good())
    node: Any = settings
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if last == "+":
        node.append(value)
    elif isinstance(node, list):
        node[int(last)] = value
    elif value is DELETE:
        del node[last]
    else:
        node[last] = value
    return settings


DELETE = object()
EXTRA = {"zone": "internal", "name": "extra", "sources": ["192.0.2.40"], "port": 8082}


def test_good_inventory_has_no_errors(filters: ModuleType) -> None:
    assert filters.firewall_errors(good()) == []


@pytest.mark.parametrize(
    ("path", "value", "code"),
    [
        ("zones.internal.mac_allowlist.0", "02:00:5e:00:53:zz", "FW-MAC-INVALID"),
        ("zones.internal.mac_allowlist.0", "02:00:5e:00:53", "FW-MAC-INVALID"),
        ("zones.internal.mac_allowlist.0", "01:00:5e:00:00:01", "FW-MAC-MULTICAST"),
        ("zones.internal.mac_allowlist", [], "FW-MAC-EMPTY"),
        ("zones.internal.mac_allowlist", "02:00:5e:00:53:01", "FW-MAC-INVALID"),
        ("zones.dmz", {"interface": "eth2", "mac_allowlist": ["02:00:5e:00:53:20"]}, "FW-ZONE-UNKNOWN"),
        ("zones", {}, "FW-ZONES-EMPTY"),
        ("zones.jukinet.interface", "eth0", "FW-INTERFACE-DUPLICATE"),
        ("zones.jukinet.interface", "eth1; drop", "FW-INTERFACE-INVALID"),
        ("zones.jukinet.interface", "a-very-long-interface-name", "FW-INTERFACE-INVALID"),
        ("inbound.+", {**EXTRA, "zone": "dmz"}, "FW-ZONE-UNKNOWN"),
        ("inbound.+", {**EXTRA, "port": 70000}, "FW-PORT-RANGE"),
        ("inbound.+", {**EXTRA, "port": 0}, "FW-PORT-RANGE"),
        ("inbound.+", {**EXTRA, "port": "http"}, "FW-PORT-RANGE"),
        ("inbound.+", {**EXTRA, "proto": "sctp"}, "FW-PROTO-INVALID"),
        ("inbound.+", {**EXTRA, "sources": []}, "FW-PEER-MISSING"),
        ("inbound.+", {k: v for k, v in EXTRA.items() if k != "sources"}, "FW-PEER-MISSING"),
        ("inbound.+", {**EXTRA, "sources": ["kizon.example.lg.jp"]}, "FW-ADDRESS-INVALID"),
        ("inbound.+", {**EXTRA, "sources": ["192.0.2.40/24"]}, "FW-ADDRESS-INVALID"),
        ("inbound.+", {**EXTRA, "sources": ["203.0.113.7"]}, "FW-ADDRESS-FORBIDDEN"),
        ("inbound.+", {**EXTRA, "name": "intake"}, "FW-NAME-DUPLICATE"),
        ("inbound.+", {**EXTRA, "name": 'x" accept'}, "FW-NAME-INVALID"),
        (
            "outbound.+",
            {"zone": "internal", "name": "atena", "destinations": ["203.0.113.0/24"], "port": 443},
            "FW-ADDRESS-FORBIDDEN",
        ),
        ("outbound.0.destinations", [], "FW-PEER-MISSING"),
        ("egress_services.smtp", {"zone": "internal", "servers": ["192.0.2.6"]}, "FW-SERVICE-UNKNOWN"),
        ("egress_services.ntp.zone", "dmz", "FW-ZONE-UNKNOWN"),
        ("egress_services.ntp.port", 99999, "FW-PORT-RANGE"),
        ("forbidden_networks.x", ["not-a-network"], "FW-ADDRESS-INVALID"),
        ("mac_log_rate", "lots", "FW-RATE-INVALID"),
        ("rollback_seconds", 20, "FW-ROLLBACK-BOUNDS"),
    ],
)
def test_bad_value_is_refused_with_its_code(filters: ModuleType, path: str, value: object, code: str) -> None:
    errors = filters.firewall_errors(with_change(path, value))
    assert any(e.startswith(code + ":") for e in errors), errors
    with pytest.raises(ValueError, match=code):
        filters.firewall_model(with_change(path, value))


def test_every_error_is_reported_at_once(filters: ModuleType) -> None:
    settings = with_change("inbound.+", {**EXTRA, "port": 70000, "zone": "dmz"})
    settings["zones"]["internal"]["mac_allowlist"].append("nonsense")
    codes = {e.split(":")[0] for e in filters.firewall_errors(settings)}
    assert {"FW-PORT-RANGE", "FW-ZONE-UNKNOWN", "FW-MAC-INVALID"} <= codes


def test_error_names_the_inventory_path(filters: ModuleType) -> None:
    [error] = filters.firewall_errors(with_change("zones.internal.mac_allowlist.1", "zz"))
    assert "firewall_zones.internal.mac_allowlist[1]" in error


def test_empty_allowlist_is_fine_when_mac_filtering_is_off(filters: ModuleType) -> None:
    settings = with_change("zones.internal.mac_allowlist", [])
    settings["mac_filter_enabled"] = False
    assert filters.firewall_errors(settings) == []


def test_short_rollback_is_fine_without_anti_lockout(filters: ModuleType) -> None:
    settings = with_change("rollback_seconds", 20)
    settings["anti_lockout_enabled"] = False
    assert filters.firewall_errors(settings) == []


def test_model_normalises_macs_networks_and_families(filters: ModuleType) -> None:
    settings = with_change("inbound.1.sources", ["192.0.2.0/28", "192.0.2.3", "2001:db8::/64", "192.0.2.16/28"])
    model = filters.firewall_model(settings)
    internal, jukinet = model["zones"]
    assert (internal["name"], jukinet["name"]) == ("internal", "jukinet")
    assert internal["macs"] == ["02:00:5e:00:53:01", "02:00:5e:00:53:02"]
    ssh = next(f for f in internal["inbound"] if f["name"] == "ssh")
    assert ssh["v4"] == ["192.0.2.0/27"]  # overlapping and adjacent networks collapse
    assert ssh["v6"] == ["2001:db8::/64"]
    assert ssh["protos"] == ["tcp"]
    ntp = next(f for f in internal["outbound"] if f["name"] == "ntp")
    assert (ntp["protos"], ntp["port"], ntp["v4"]) == (["udp"], 123, ["192.0.2.5"])
    assert model["forbidden_v4"] == ["203.0.113.0/24"]
    assert internal["echo_in_v4"] == ["192.0.2.0/27"]


def test_dns_opens_udp_and_tcp_and_apt_port_can_change(filters: ModuleType) -> None:
    settings = good()
    settings["egress_services"] = {
        "dns": {"zone": "internal", "servers": ["192.0.2.53"]},
        "apt": {"zone": "internal", "servers": ["192.0.2.80"], "port": 3142},
    }
    flows = {f["name"]: f for f in filters.firewall_model(settings)["zones"][0]["outbound"]}
    assert flows["dns"]["protos"] == ["udp", "tcp"]
    assert (flows["apt"]["protos"], flows["apt"]["port"]) == (["tcp"], 3142)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("02:00:5E:00:53:01", "02:00:5e:00:53:01"), ("02-00-5e-00-53-01", "02:00:5e:00:53:01"), ("02:00-5e", None)],
)
def test_normalize_mac(filters: ModuleType, raw: str, norm: str | None) -> None:
    assert filters.normalize_mac(raw) == norm
