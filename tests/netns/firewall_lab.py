"""Helpers and fixtures for the firewall role's own tests (conftest.py exposes the fixtures): the
role's Python pieces, its template rendered by Ansible itself, and a network-namespace lab with real
veth links (root only, never skipped).

The lab uses the documentation ranges 192.0.2.0/24 (internal) and 198.51.100.0/24 (jukinet), only
inside namespaces created here and removed afterwards: no packet leaves them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "firewall"
FWLAB = ROOT / "molecule" / "firewall" / "files" / "fwlab.py"
SCRIPT = ROLE / "files" / "jukics_firewall.py"
VENV_BIN = ROOT / ".venv" / "bin"


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def filters() -> ModuleType:
    return load_module("jukics_firewall_filters", ROLE / "filter_plugins" / "jukics_firewall.py")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/netns needs root (network namespaces and nft); run pytest as root", pytrace=False)
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.fail(f"tests/netns needs '{tool}' on PATH (apt-get install iproute2 nftables)", pytrace=False)


def run(*argv: str, check: bool = True, netns: str | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def role_vars() -> dict[str, Any]:
    """The role's defaults and internal vars, as Ansible would layer them under the inventory."""
    merged: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        merged.update(yaml.safe_load((ROLE / part / "main.yml").read_text(encoding="utf-8")))
    return merged


def render(tmp: Path, inventory: dict[str, Any], name: str = "rendered.nft") -> Path:
    """Render templates/jukics.nft.j2 with ansible's own template module and the role's filters."""
    tmp.mkdir(parents=True, exist_ok=True)
    vars_file = tmp / f"{name}.vars.json"
    vars_file.write_text(json.dumps({**role_vars(), **inventory}), encoding="utf-8")
    dest = tmp / name
    env = {
        **os.environ,
        "ANSIBLE_FILTER_PLUGINS": str(ROLE / "filter_plugins"),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    }
    run(
        str(VENV_BIN / "ansible"),
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"@{vars_file}",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-m",
        "ansible.builtin.template",
        "-a",
        f"src={ROLE / 'templates' / 'jukics.nft.j2'} dest={dest}",
        env=env,
    )
    return dest


# --- the lab --------------------------------------------------------------------------------------

INTERNAL = "192.0.2"
JUKINET = "198.51.100"
MAC = {
    "kizon": "02:5a:00:00:01:20",
    "stranger": "02:5a:00:00:01:30",
    "pref": "02:5a:00:00:02:20",
    "spoofed": "02:5a:00:00:01:99",
}
PORTS = {"intake": 8080, "terminal": 8081, "peer": 8443, "ssh": 2222, "unlisted": 9000}


def lab_inventory() -> dict[str, Any]:
    """A site inventory for the lab, shaped like inventories/example/group_vars/appliance/firewall.yml."""
    return {
        "firewall_zones": {
            "internal": {"interface": "fwa-int", "mac_allowlist": [MAC["kizon"].upper()]},
            "jukinet": {"interface": "fwa-juk", "mac_allowlist": [MAC["pref"]]},
        },
        "firewall_inbound": [
            {"zone": "internal", "name": "intake", "sources": [f"{INTERNAL}.20"], "port": PORTS["intake"]},
            # the stranger's IP is a listed terminal; its MAC is not on the allowlist
            {"zone": "internal", "name": "terminals", "sources": [f"{INTERNAL}.30"], "port": PORTS["terminal"]},
            {"zone": "internal", "name": "ssh", "sources": [f"{INTERNAL}.20"], "port": PORTS["ssh"]},
            {"zone": "jukinet", "name": "peer", "sources": [f"{JUKINET}.20"], "port": PORTS["peer"]},
        ],
        "firewall_outbound": [
            {"zone": "jukinet", "name": "prefecture", "destinations": [f"{JUKINET}.20"], "port": PORTS["peer"]},
        ],
        "firewall_egress_services": {"ntp": {"zone": "internal", "servers": [f"{INTERNAL}.5"]}},
        "firewall_forbidden_networks": {"情報提供NWS": [f"{JUKINET}.128/25"]},
    }


@dataclass
class Lab:
    """Namespaces: appl (the CS), sw (a switch for the internal segment), kizon, stranger, pref."""

    prefix: str
    tmp: Path
    listeners: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def sh(self, where: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*argv, check=check, netns=self.ns(where))

    def probe(self, where: str, *specs: str) -> list[dict[str, str]]:
        """Run fwlab probes (HOST:PORT:open|dropped, icmp:HOST:...) from a namespace, in parallel."""
        proc = run(
            "env", "FWLAB_TIMEOUT=1", sys.executable, str(FWLAB), "probe", *specs, check=False, netns=self.ns(where)
        )
        results = json.loads(proc.stdout)
        bad = [r for r in results if r["ok"] != "true"]
        assert not bad, f"from {where}: {bad}"
        return results

    def counters(self) -> dict[str, int]:
        out = self.sh("appl", "nft", "-j", "list", "counters").stdout
        items = json.loads(out)["nftables"]
        return {i["counter"]["name"]: i["counter"]["packets"] for i in items if "counter" in i}

    def set_mac(self, where: str, ifname: str, mac: str) -> None:
        self.sh(where, "ip", "link", "set", "dev", ifname, "address", mac)
        self.sh(where, "ip", "neigh", "flush", "all")
        self.sh("appl", "ip", "neigh", "flush", "all")

    def firewall(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The role's jukics-firewall script, run inside the appliance namespace on a scratch state dir."""
        state = ["--state-dir", str(self.tmp / "state"), "--boot-file", str(self.tmp / "boot" / "jukics.nft")]
        return run(sys.executable, str(SCRIPT), *state, *argv, check=check, netns=self.ns("appl"))


def _link(lab: Lab, a: str, a_if: str, b: str, b_if: str) -> None:
    run("ip", "link", "add", a_if, "netns", lab.ns(a), "type", "veth", "peer", "name", b_if, "netns", lab.ns(b))


def _teardown(prefix: str) -> None:
    names = run("ip", "netns", "list", check=False).stdout.split()
    for name in names:
        if name.startswith(prefix + "-"):
            run("ip", "netns", "pids", name, check=False)
            for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
                run("kill", pid, check=False)
            run("ip", "netns", "delete", name, check=False)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_root()
    lab = Lab(prefix=f"jkfw{os.getpid()}", tmp=tmp_path_factory.mktemp("fwlab"))
    try:
        for name in ("appl", "sw", "kizon", "stranger", "pref"):
            run("ip", "netns", "add", lab.ns(name))
            lab.sh(name, "ip", "link", "set", "lo", "up")
        lab.sh("sw", "ip", "link", "add", "br0", "type", "bridge")
        lab.sh("sw", "ip", "link", "set", "br0", "up")
        # internal segment: appliance, 既存住基 and a stranger on one switch
        for name, ifname, addr in (
            ("appl", "fwa-int", f"{INTERNAL}.10"),
            ("kizon", "eth0", f"{INTERNAL}.20"),
            ("stranger", "eth0", f"{INTERNAL}.30"),
        ):
            port = f"sw-{name}"
            _link(lab, name, ifname, "sw", port)
            lab.sh("sw", "ip", "link", "set", port, "master", "br0", "up")
            if name in MAC:
                lab.sh(name, "ip", "link", "set", ifname, "address", MAC[name])
            lab.sh(name, "ip", "addr", "add", f"{addr}/24", "dev", ifname)
            lab.sh(name, "ip", "link", "set", ifname, "up")
        # jukinet: a direct link to the prefecture server
        _link(lab, "appl", "fwa-juk", "pref", "eth0")
        lab.sh("pref", "ip", "link", "set", "eth0", "address", MAC["pref"])
        lab.sh("appl", "ip", "addr", "add", f"{JUKINET}.10/24", "dev", "fwa-juk")
        lab.sh("pref", "ip", "addr", "add", f"{JUKINET}.20/24", "dev", "eth0")
        for name, ifname in (("appl", "fwa-juk"), ("pref", "eth0")):
            lab.sh(name, "ip", "link", "set", ifname, "up")
        for name, ports in (
            ("appl", [PORTS["intake"], PORTS["terminal"], PORTS["peer"], PORTS["ssh"], PORTS["unlisted"]]),
            ("kizon", [PORTS["intake"]]),
            ("stranger", [PORTS["intake"]]),
            ("pref", [PORTS["peer"]]),
        ):
            cmd = ["ip", "netns", "exec", lab.ns(name), sys.executable, str(FWLAB), "listen", *map(str, ports)]
            lab.listeners.append(subprocess.Popen(cmd))
        time.sleep(0.3)  # listeners bind
        yield lab
    finally:
        for proc in lab.listeners:
            proc.kill()
            proc.wait(timeout=5)
        _teardown(lab.prefix)
