"""Filters for the firewall role: validate the inventory and turn it into the model the template renders.

Everything runs on the controller, before the role touches the host, so a bad inventory fails early
with a stable error code (``FW-...``) and a path into the inventory that says which value is wrong.
Only the standard library is used (``ipaddress``), so the controller needs nothing extra.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

# SPEC §4: two zones, one NIC each. Anything else is a typo or a design change, never silently accepted.
KNOWN_ZONES = ("internal", "jukinet")
# Egress to infrastructure the inventory names: fixed protocol, overridable port.
EGRESS_SERVICES: dict[str, dict[str, Any]] = {
    "ntp": {"protos": ["udp"], "port": 123},
    "dns": {"protos": ["udp", "tcp"], "port": 53},
    "apt": {"protos": ["tcp"], "port": 80},
}
PROTOS = ("tcp", "udp")
MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
FLOW_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
# Linux interface names: at most 15 bytes, no slash, colon, whitespace or quote.
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
RATE_RE = re.compile(r"^[1-9][0-9]{0,5}/(second|minute|hour|day)$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_mac(value: object) -> str | None:
    """Return the MAC in nft's lower-case colon form, or None if it is not a MAC address."""
    text = str(value).strip().lower()
    if not MAC_RE.match(text):
        return None
    return text.replace("-", ":")


def _parse_network(value: object) -> tuple[Network | None, str | None]:
    """Parse an address or CIDR. Host bits set in a CIDR are an error: it is usually a typo."""
    text = str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=True), None
    except ValueError as exc:
        if "/" in text:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                pass
            else:
                return None, f"'{text}' has host bits set ({exc}); write the network address"
        return (
            None,
            f"'{text}' is not an IP address or CIDR (host names are not allowed: the firewall cannot resolve them)",
        )


def _port(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        port = int(str(value))
    except ValueError:
        return None
    return port if 1 <= port <= 65535 else None


def _protos(value: object) -> list[str] | None:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        return None
    protos = [str(p).lower() for p in items]
    return protos if all(p in PROTOS for p in protos) else None


def _as_list(value: object) -> list[Any] | None:
    if value is None:
        return []
    return value if isinstance(value, list) else None


class _Checker:
    """Collect every problem at once: fixing one error per run is how people lose an afternoon."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.s = settings
        self.errors: list[str] = []
        self.forbidden: list[tuple[str, Network]] = []

    def err(self, code: str, where: str, what: str) -> None:
        self.errors.append(f"{code}: {where}: {what}")

    def networks(self, values: object, where: str, *, allow_empty: bool = False) -> list[Network]:
        items = _as_list(values)
        if items is None:
            self.err("FW-ADDRESS-INVALID", where, "must be a list of IP addresses or CIDRs")
            return []
        if not items and not allow_empty:
            self.err("FW-PEER-MISSING", where, "is empty: a flow needs at least one peer address")
        nets: list[Network] = []
        for i, item in enumerate(items):
            net, problem = _parse_network(item)
            if net is None:
                self.err("FW-ADDRESS-INVALID", f"{where}[{i}]", problem or "invalid")
            else:
                nets.append(net)
        return nets

    def check_forbidden(self) -> None:
        forbidden = self.s.get("forbidden_networks") or {}
        if not isinstance(forbidden, Mapping):
            self.err("FW-FORBIDDEN-INVALID", "firewall_forbidden_networks", "must map a name to a list of CIDRs")
            return
        for name, cidrs in forbidden.items():
            where = f"firewall_forbidden_networks[{name}]"
            label = str(name)
            if not label or len(label) > 64 or any(c in label for c in '"\\\n\r'):
                self.err(
                    "FW-NAME-INVALID", where, "name must be 1-64 characters without quotes, backslashes or newlines"
                )
            nets = self.networks(cidrs, where, allow_empty=True)
            self.forbidden.extend((label, n) for n in nets)

    def overlaps_forbidden(self, nets: Iterable[Network], where: str) -> None:
        for net in nets:
            for label, bad in self.forbidden:
                if net.version == bad.version and net.overlaps(bad):
                    self.err(
                        "FW-ADDRESS-FORBIDDEN",
                        where,
                        f"{net} overlaps the forbidden network '{label}' ({bad}); an allow rule may never name it",
                    )

    def check_zones(self) -> None:
        zones = self.s.get("zones")
        if not isinstance(zones, Mapping) or not zones:
            self.err(
                "FW-ZONES-EMPTY", "firewall_zones", "define at least one zone (internal, jukinet) with its interface"
            )
            return
        seen_if: dict[str, str] = {}
        for name, zone in zones.items():
            where = f"firewall_zones.{name}"
            if name not in KNOWN_ZONES:
                self.err("FW-ZONE-UNKNOWN", where, f"unknown zone '{name}'; the zones are {', '.join(KNOWN_ZONES)}")
                continue
            if not isinstance(zone, Mapping):
                self.err("FW-ZONE-INVALID", where, "must be a mapping with 'interface' and 'mac_allowlist'")
                continue
            ifname = str(zone.get("interface") or "")
            if not IFNAME_RE.match(ifname):
                self.err("FW-INTERFACE-INVALID", f"{where}.interface", f"'{ifname}' is not a valid interface name")
            elif ifname in seen_if:
                self.err(
                    "FW-INTERFACE-DUPLICATE", f"{where}.interface", f"'{ifname}' is already zone {seen_if[ifname]}'s"
                )
            else:
                seen_if[ifname] = str(name)
            macs = _as_list(zone.get("mac_allowlist"))
            if macs is None:
                self.err("FW-MAC-INVALID", f"{where}.mac_allowlist", "must be a list of MAC addresses")
                continue
            if not macs and self.s.get("mac_filter_enabled", True):
                self.err(
                    "FW-MAC-EMPTY",
                    f"{where}.mac_allowlist",
                    "is empty while MAC filtering is on: every frame on the interface would be dropped",
                )
            for i, mac in enumerate(macs):
                norm = normalize_mac(mac)
                if norm is None:
                    self.err(
                        "FW-MAC-INVALID",
                        f"{where}.mac_allowlist[{i}]",
                        f"'{mac}' is not a MAC address (want 02:00:5e:00:53:01)",
                    )
                elif int(norm[:2], 16) & 1:
                    self.err(
                        "FW-MAC-MULTICAST",
                        f"{where}.mac_allowlist[{i}]",
                        f"'{mac}' is a multicast address: no device sends from it",
                    )

    def check_flows(self, key: str, peers_key: str, zones: Mapping[str, Any]) -> None:
        flows = _as_list(self.s.get(key))
        var = f"firewall_{key}"
        if flows is None:
            self.err("FW-FLOW-INVALID", var, "must be a list of flows")
            return
        names: set[tuple[str, str]] = set()
        for i, flow in enumerate(flows):
            if not isinstance(flow, Mapping):
                self.err("FW-FLOW-INVALID", f"{var}[{i}]", "must be a mapping")
                continue
            name = str(flow.get("name") or "")
            where = f"{var}[{i}] ({name or 'unnamed'})"
            if not FLOW_NAME_RE.match(name):
                self.err("FW-NAME-INVALID", where, "needs a name of letters, digits, '_', '.', '-' (at most 48)")
            zone = flow.get("zone")
            if zone not in zones:
                known = ", ".join(sorted(zones)) or "none defined"
                self.err("FW-ZONE-UNKNOWN", where, f"zone '{zone}' is not in firewall_zones ({known})")
            if (str(zone), name) in names:
                self.err("FW-NAME-DUPLICATE", where, f"flow name '{name}' is used twice in zone {zone}")
            names.add((str(zone), name))
            if _port(flow.get("port")) is None:
                self.err("FW-PORT-RANGE", where, f"port {flow.get('port')!r} is not an integer in 1-65535")
            if _protos(flow.get("proto", "tcp")) is None:
                self.err("FW-PROTO-INVALID", where, f"proto {flow.get('proto')!r} must be tcp or udp")
            if peers_key not in flow:
                self.err("FW-PEER-MISSING", where, f"has no '{peers_key}': name the peer addresses")
                continue
            self.overlaps_forbidden(self.networks(flow.get(peers_key), f"{where}.{peers_key}"), where)

    def check_egress_services(self, zones: Mapping[str, Any]) -> None:
        services = self.s.get("egress_services") or {}
        if not isinstance(services, Mapping):
            self.err("FW-SERVICE-INVALID", "firewall_egress_services", "must map ntp/dns/apt to {zone, servers}")
            return
        for svc, conf in services.items():
            where = f"firewall_egress_services.{svc}"
            if svc not in EGRESS_SERVICES:
                self.err(
                    "FW-SERVICE-UNKNOWN",
                    where,
                    f"unknown service; use one of {', '.join(EGRESS_SERVICES)} or firewall_outbound",
                )
                continue
            if not isinstance(conf, Mapping):
                self.err("FW-SERVICE-INVALID", where, "must be a mapping with 'zone' and 'servers'")
                continue
            if conf.get("zone") not in zones:
                self.err("FW-ZONE-UNKNOWN", where, f"zone '{conf.get('zone')}' is not in firewall_zones")
            if "port" in conf and _port(conf.get("port")) is None:
                self.err("FW-PORT-RANGE", where, f"port {conf.get('port')!r} is not an integer in 1-65535")
            self.overlaps_forbidden(self.networks(conf.get("servers"), f"{where}.servers"), where)

    def check_scalars(self) -> None:
        for key in ("mac_log_rate", "policy_log_rate"):
            value = str(self.s.get(key, ""))
            if not RATE_RE.match(value):
                self.err("FW-RATE-INVALID", f"firewall_{key}", f"'{value}' is not a rate like 10/minute")
        rollback = _port(self.s.get("rollback_seconds"))
        confirm = _port(self.s.get("confirm_timeout"))
        if rollback is None or confirm is None:
            self.err(
                "FW-ROLLBACK-BOUNDS",
                "firewall_rollback_seconds",
                "rollback and confirm times must be positive integers",
            )
        elif self.s.get("anti_lockout_enabled", True) and rollback < confirm + 15:
            self.err(
                "FW-ROLLBACK-BOUNDS",
                "firewall_rollback_seconds",
                f"{rollback}s leaves no time to confirm: it must be at least "
                f"firewall_confirm_timeout ({confirm}s) + 15s",
            )

    def run(self) -> list[str]:
        self.check_forbidden()
        self.check_zones()
        zones = self.s.get("zones")
        zone_names = {name: True for name in zones if name in KNOWN_ZONES} if isinstance(zones, Mapping) else {}
        self.check_flows("inbound", "sources", zone_names)
        self.check_flows("outbound", "destinations", zone_names)
        self.check_egress_services(zone_names)
        self.check_scalars()
        return self.errors


def firewall_errors(settings: Mapping[str, Any]) -> list[str]:
    """Every problem in the firewall settings, one line each, as ``CODE: where: what``."""
    return _Checker(settings).run()


def _split(nets: Iterable[Network]) -> tuple[list[str], list[str]]:
    """Collapse overlapping networks (nft refuses overlapping intervals) and split them by family."""
    nets = list(nets)
    v4 = [str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == 4)]
    v6 = [str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == 6)]
    return [_bare(a) for a in v4], [_bare(a) for a in v6]


def _bare(cidr: str) -> str:
    """Write a single host as an address: it reads better in `nft list ruleset`."""
    return cidr.rsplit("/", 1)[0] if cidr.endswith(("/32", "/128")) else cidr


def _nets(values: Iterable[object]) -> list[Network]:
    return [ipaddress.ip_network(str(v).strip(), strict=True) for v in values or []]


def firewall_model(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The validated settings in the shape the nft template renders. Call firewall_errors first."""
    errors = firewall_errors(settings)
    if errors:
        # The role asserts first; this only guards direct use of the filter.
        raise ValueError("invalid firewall settings:\n" + "\n".join(errors))
    zones_in: Mapping[str, Any] = settings["zones"]
    zones: list[dict[str, Any]] = []
    for name in KNOWN_ZONES:
        if name not in zones_in:
            continue
        conf = zones_in[name]
        macs = sorted({m for m in (normalize_mac(x) for x in conf.get("mac_allowlist") or []) if m})
        zones.append({"name": name, "interface": str(conf["interface"]), "macs": macs, "inbound": [], "outbound": []})
    by_name = {z["name"]: z for z in zones}

    def flow(entry: Mapping[str, Any], peers: Iterable[object], protos: list[str], port: int) -> dict[str, Any]:
        v4, v6 = _split(_nets(peers))
        return {"name": str(entry["name"]), "protos": protos, "port": port, "v4": v4, "v6": v6}

    for entry in settings.get("inbound") or []:
        protos = _protos(entry.get("proto", "tcp")) or ["tcp"]
        by_name[entry["zone"]]["inbound"].append(flow(entry, entry["sources"], protos, int(entry["port"])))
    for entry in settings.get("outbound") or []:
        protos = _protos(entry.get("proto", "tcp")) or ["tcp"]
        by_name[entry["zone"]]["outbound"].append(flow(entry, entry["destinations"], protos, int(entry["port"])))
    for svc, conf in (settings.get("egress_services") or {}).items():
        if not conf.get("servers"):
            continue
        spec = EGRESS_SERVICES[svc]
        port = int(conf.get("port", spec["port"]))
        by_name[conf["zone"]]["outbound"].append(flow({"name": svc}, conf["servers"], list(spec["protos"]), port))

    for zone in zones:
        zone["echo_in_v4"], zone["echo_in_v6"] = _split(
            _nets(a for f in settings.get("inbound") or [] if f["zone"] == zone["name"] for a in f["sources"])
        )
        outs = [a for f in settings.get("outbound") or [] if f["zone"] == zone["name"] for a in f["destinations"]]
        outs += [
            a
            for c in (settings.get("egress_services") or {}).values()
            if c.get("zone") == zone["name"]
            for a in c.get("servers") or []
        ]
        zone["echo_out_v4"], zone["echo_out_v6"] = _split(_nets(outs))

    forbidden: list[dict[str, Any]] = []
    every_forbidden: list[Network] = []
    for name, cidrs in (settings.get("forbidden_networks") or {}).items():
        nets = _nets(cidrs)
        every_forbidden += nets
        v4, v6 = _split(nets)
        forbidden.append({"name": str(name), "v4": v4, "v6": v6})
    all_v4, all_v6 = _split(every_forbidden)
    return {"zones": zones, "forbidden": forbidden, "forbidden_v4": all_v4, "forbidden_v6": all_v6}


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "jukics_firewall_errors": firewall_errors,
            "jukics_firewall_model": firewall_model,
            "jukics_normalize_mac": normalize_mac,
        }
