"""The role's template, rendered by Ansible itself: the ruleset passes `nft -c`, each control switch
removes exactly its part, and loading it replaces only the jukics tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from firewall_lab import lab_inventory, render, require_root, run


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    require_root()
    tmp = tmp_path_factory.mktemp("render")
    variants = {
        "default": {},
        "mac_only": {"firewall_rules_enabled": False},
        "rules_only": {"firewall_mac_filter_enabled": False},
        "open_egress": {"firewall_egress_filter_enabled": False, "firewall_forbidden_networks_enabled": False},
    }
    texts = {}
    for name, switches in variants.items():
        path = render(tmp, {**lab_inventory(), **switches}, f"{name}.nft")
        run("nft", "-c", "-f", str(path))  # nft 1.0.6 on the controller; the role validates with the host's nft
        texts[name] = path.read_text(encoding="utf-8")
    return texts


def test_default_ruleset_denies_by_default_and_filters_macs(rendered: dict[str, str]) -> None:
    text = rendered["default"]
    assert "type filter hook input priority filter; policy drop;" in text
    assert "type filter hook output priority filter; policy drop;" in text
    assert 'type filter hook ingress device "fwa-int" priority -500; policy drop;' in text
    assert "elements = { 02:5a:00:00:01:20 }" in text  # the inventory's upper-case MAC, normalised
    assert "ip daddr @forbidden_v4 counter name forbidden_drop_out drop" in text
    assert 'udp dport 123 accept comment "ntp"' in text


def test_only_our_tables_are_replaced(rendered: dict[str, str]) -> None:
    for text in rendered.values():
        assert "flush ruleset" not in text
        tables = {line for line in text.splitlines() if line.startswith(("table ", "delete table "))}
        assert tables <= {
            "table inet jukics",
            "delete table inet jukics",
            "table netdev jukics_mac",
            "delete table netdev jukics_mac",
            "table inet jukics {",
            "table netdev jukics_mac {",
        }


def test_each_switch_removes_its_part(rendered: dict[str, str]) -> None:
    assert "table inet jukics {" not in rendered["mac_only"]
    assert "table netdev jukics_mac {" in rendered["mac_only"]
    assert "table netdev jukics_mac {" not in rendered["rules_only"]
    assert "table inet jukics {" in rendered["rules_only"]
    assert "hook output priority filter; policy accept;" in rendered["open_egress"]
    assert "forbidden" not in rendered["open_egress"].split("table inet jukics {", 1)[1]


def test_loading_keeps_other_tables(rendered: dict[str, str], tmp_path: Path) -> None:
    ns = f"jkfwr{id(tmp_path) % 100000}"
    path = tmp_path / "r.nft"
    path.write_text(rendered["default"], encoding="utf-8")
    run("ip", "netns", "add", ns)
    try:
        for ifname in ("fwa-int", "fwa-juk"):
            run("ip", "link", "add", ifname, "type", "veth", "peer", "name", f"{ifname}-p", netns=ns)
        run("nft", "add", "table", "inet", "sitelocal", netns=ns)
        run("nft", "-f", str(path), netns=ns)
        run("nft", "-f", str(path), netns=ns)  # a reload replaces, it does not add twice
        tables = run("nft", "list", "tables", netns=ns).stdout.split("\n")
        assert sorted(t for t in tables if t) == [
            "table inet jukics",
            "table inet sitelocal",
            "table netdev jukics_mac",
        ]
        listing = run("nft", "list", "table", "inet", "jukics", netns=ns).stdout
        assert listing.count("chain input {") == 1
    finally:
        run("ip", "netns", "delete", ns, check=False)
