"""The boot test's stages after first boot (docs/image.md): converge site.yml over SSH, certificates
from a throwaway CA, synthetic intake delivered to a simulated prefecture.

Everything stays on this machine's loopback: the guest's SSH and intake are forwarded to 127.0.0.1,
and the guest reaches the simulated peers (running in this process, on 127.0.0.1) through QEMU's
user-mode networking, whose host alias (the second NIC's 10.0.3.2) maps to the host's loopback. The
guest has two NICs, like the lab's cs1: 庁内 (internal, SSH and intake) and 住基ネット (jukinet, the peers),
so the lab inventory's variables apply with the addresses swapped (inventory_files).
The pure parts (inventory, commands) are unit-tested in tests/unit/image/test_boot_stages.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# QEMU user networking: the guest's DHCP address and the host alias, per NIC; libslirp's frames
# from the host carry the source MAC 52:55 + the host alias's IPv4 address.
INTERNAL_NET = "10.0.2.0/24"
INTERNAL_GUEST_IP = "10.0.2.15"
INTERNAL_HOST_IP = "10.0.2.2"
JUKINET_NET = "10.0.3.0/24"
JUKINET_GUEST_IP = "10.0.3.15"
JUKINET_HOST_IP = "10.0.3.2"
GUEST_MAC_JUKINET = "52:54:00:4a:4b:02"
INTAKE_GUEST_PORT = 8443
SENDER = "cs-142140"  # the CS's sender id at the prefecture (the lab's)
MUNICIPALITY = "142140"
JUKICS = "sudo /opt/jukics/venv/bin/jukics --config /etc/jukics/jukics.toml"


def slirp_mac(host_ip: str) -> str:
    """The source MAC of what QEMU's user networking sends from `host_ip` (libslirp: 52:55 + the IPv4)."""
    return "52:55:" + ":".join(f"{int(o):02x}" for o in host_ip.split("."))


@dataclass
class Ports:
    ssh: int  # host loopback -> guest 22
    intake: int  # host loopback -> guest 8443
    prefecture: int  # the prefecture sim on host loopback (the guest dials JUKINET_HOST_IP:this)
    national: int  # the national sim on host loopback


@dataclass
class Nics:
    internal: str  # guest interface names, found by MAC at run time
    jukinet: str


def nics_from_ip_json(text: str, internal_mac: str, jukinet_mac: str) -> Nics:
    """The guest's interface names from `ip -j link` by their fixed MACs."""
    by_mac = {str(link.get("address", "")).lower(): str(link["ifname"]) for link in json.loads(text)}
    missing = [m for m in (internal_mac, jukinet_mac) if m.lower() not in by_mac]
    if missing:
        raise RuntimeError(f"the guest has no NIC with MAC {', '.join(missing)} (ip link: {sorted(by_mac)})")
    return Nics(internal=by_mac[internal_mac.lower()], jukinet=by_mac[jukinet_mac.lower()])


def host_vars(ports: Ports, nics: Nics, key: Path, pki: Path, internal_mac: str) -> dict[str, Any]:
    """What differs from the lab's cs1 for the VM: the connection, the addresses behind QEMU's user
    networking, the peers' forwarded ports. Everything else comes from the lab's group_vars."""
    pref_url = f"https://{JUKINET_HOST_IP}:{ports.prefecture}"
    nat_url = f"https://{JUKINET_HOST_IP}:{ports.national}"
    host = {"ip": INTERNAL_HOST_IP, "mac": slirp_mac(INTERNAL_HOST_IP), "ifname": "-"}
    peer = {"ip": JUKINET_HOST_IP, "mac": slirp_mac(JUKINET_HOST_IP), "ifname": "-"}
    ca = str(pki / "ca.crt")
    return {
        "ansible_host": "127.0.0.1",
        "ansible_port": ports.ssh,
        "ansible_user": "jukics-admin",
        "ansible_become": True,
        "ansible_ssh_private_key_file": str(key),
        # ControlPersist: one SSH connection for the whole converge (TCG makes each handshake slow).
        "ansible_ssh_common_args": ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                    "-o ControlMaster=auto -o ControlPersist=600s"),
        "ansible_ssh_pipelining": True,
        "jukics_lab_pki_dir": str(pki),
        # The lab's topology, as the VM sees it: every neighbour is the host behind one of QEMU's aliases.
        "lab_hosts": {
            "cs1": {"internal": {"ip": INTERNAL_GUEST_IP, "mac": internal_mac, "ifname": nics.internal},
                    "jukinet": {"ip": JUKINET_GUEST_IP, "mac": GUEST_MAC_JUKINET, "ifname": nics.jukinet}},
            "kizon1": {"internal": host}, "mon1": {"internal": host}, "stranger1": {"internal": host},
            "pref1": {"jukinet": peer}, "nat1": {"jukinet": peer},
        },
        "lab_controller_ip": INTERNAL_HOST_IP,
        "lab_internal_bridge_mac": slirp_mac(INTERNAL_HOST_IP),
        "lab_jukinet_bridge_mac": slirp_mac(JUKINET_HOST_IP),
        # A real kernel (not a container): sysctls, audit rules and modules apply.
        "base_hardening_runtime_apply": True,
        "base_hardening_sysctl_overrides": {},
        # What the image itself brings and the allowlist would refuse: the DHCP client of the image's
        # networkd (20-wired.network: DHCP on every NIC; QEMU's user networking hands out the addresses)
        # (the first-boot unit is in base_hardening's default allowlist: it is the appliance's own).
        "base_hardening_allowed_listeners_extra_image": [
            {"port": 68, "proto": "udp", "process": "systemd-network",
             "comment": "DHCP client (the image's networkd)"}],
        # The guest has a TPM 2.0 device (swtpm behind QEMU's tpm-crb), not the lab's in-container swtpm.
        "tpm_keystore_mode": "device",
        # One source MAC per NIC (the host behind QEMU): the lab lists the same MAC several times.
        "firewall_zones": {
            "internal": {"interface": nics.internal, "mac_allowlist": [slirp_mac(INTERNAL_HOST_IP)]},
            "jukinet": {"interface": nics.jukinet, "mac_allowlist": [slirp_mac(JUKINET_HOST_IP)]},
        },
        "firewall_outbound": [
            {"zone": "jukinet", "name": "prefecture", "destinations": [JUKINET_HOST_IP], "port": ports.prefecture},
            {"zone": "jukinet", "name": "card", "destinations": [JUKINET_HOST_IP], "port": ports.national},
        ],
        # The controller checks the new ruleset through the forwarded SSH port.
        "firewall_confirm_host": "127.0.0.1",
        "firewall_confirm_port": ports.ssh,
        "cs_service_links_peers": [
            {"link": "prefecture", "url": pref_url, "peer_names": ["pref1"], "ca_src": ca},
            {"link": "fuhyo", "url": pref_url, "peer_names": ["pref1"], "ca_src": ca},
            {"link": "sofusaki", "url": nat_url, "peer_names": ["nat1"], "ca_src": ca},
            {"link": "card", "url": nat_url, "peer_names": ["nat1"], "ca_src": ca},
            {"link": "tokurei", "url": pref_url, "peer_names": ["pref1"], "ca_src": ca},
        ],
    }


def inventory_files(repo: Path, dest: Path, hv: Mapping[str, Any]) -> Path:
    """An inventory directory for the VM: the lab's group_vars as they are, cs1's host_vars for the VM.
    Returns the hosts file to pass to ansible-playbook -i."""
    lab = repo / "inventories" / "lab" / "group_vars"
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "group_vars").mkdir(parents=True)
    (dest / "host_vars").mkdir()
    shutil.copy(lab / "all.yml", dest / "group_vars" / "all.yml")
    shutil.copytree(lab / "appliance", dest / "group_vars" / "appliance")
    (dest / "host_vars" / "cs1.yml").write_text("---\n" + yaml.safe_dump(dict(hv), sort_keys=True))
    hosts = {"all": {"vars": {"ansible_python_interpreter": "/usr/bin/python3"},
                     "children": {"appliance": {"hosts": {"cs1": None}}}}}
    (dest / "hosts.yml").write_text("---\n" + yaml.safe_dump(hosts, sort_keys=False))
    return dest / "hosts.yml"


def converge_command(repo: Path, hosts: Path, extra: str = "") -> list[str]:
    """site.yml on the VM; `extra` (JUKICS_CONVERGE_ARGS, development only: e.g. --tags cs_service on a
    guest that converged once) is appended."""
    return ["ansible-playbook", "-i", str(hosts), str(repo / "playbooks" / "site.yml"), *shlex.split(extra)]


def converge_env(repo: Path, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(repo / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "PYTHONPATH": str(repo / "app"),
    })
    venv_bin = repo / ".venv" / "bin"
    if venv_bin.is_dir():
        env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    return env


def play_recap_ok(log: str) -> bool:
    """The converge passed: a recap line for cs1 with failed=0 and unreachable=0."""
    for line in log.splitlines():
        if line.startswith("cs1") and "ok=" in line:
            fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
            return fields.get("failed") == "0" and fields.get("unreachable") == "0"
    return False


def sim_config_toml(role: str, name: str, sender_id: str, port: int, pki: Path, state: Path,
                    senders: Mapping[str, str], national_port: int | None = None) -> str:
    """A sim's TOML (as roles/peer_sim renders it), on host loopback, its certificate from the throwaway CA."""
    lines = ["[sim]", f'role = "{role}"', f'name = "{name}"', f'sender_id = "{sender_id}"',
             f'listen = "127.0.0.1:{port}"', 'admin_listen = "127.0.0.1:0"', 'prefecture_code = "14"',
             f'cert_file = "{pki / (name + ".crt")}"', f'key_file = "{pki / (name + ".key")}"',
             f'ca_file = "{pki / "ca.crt"}"', f'database = "{state / (name + ".sqlite")}"', "", "[sim.senders]"]
    lines += [f'"{san}" = "{sid}"' for san, sid in sorted(senders.items())]
    if role == "prefecture":
        lines += ["", "[sim.national]", f'url = "https://127.0.0.1:{national_port}"', 'peer_name = "nat1"']
    return "\n".join(lines) + "\n"


class Sims:
    """The simulated 都道府県サーバ and 全国サーバ, in this process on host loopback."""

    def __init__(self, work: Path, pki: Path, ports: Ports) -> None:
        from jukics.sim.peers import load_sim_config, start_peer

        state = work / "sims"
        state.mkdir(exist_ok=True)
        nat = state / "nat1.toml"
        nat.write_text(sim_config_toml("national", "nat1", "nat-00", ports.national, pki, state,
                                       {"pref1": "pref-14", "cs1": SENDER}))
        pref = state / "pref1.toml"
        pref.write_text(sim_config_toml("prefecture", "pref1", "pref-14", ports.prefecture, pki, state,
                                        {"cs1": SENDER}, national_port=ports.national))
        self.national = start_peer(load_sim_config(nat))
        self.prefecture = start_peer(load_sim_config(pref))

    def state(self, which: str = "prefecture") -> dict[str, Any]:
        peer = self.prefecture if which == "prefecture" else self.national
        with urllib.request.urlopen(peer.admin_url + "/state", timeout=10) as r:  # noqa: S310 - loopback
            return dict(json.loads(r.read()))

    def stop(self) -> None:
        for p in (self.prefecture, self.national):
            p.stop()


def lab_pki(repo: Path, pki: Path) -> None:
    """The throwaway CA (and the 既存住基 and sims' certificates) of scripts/lab-pki.sh, in the work dir."""
    subprocess.run(["bash", str(repo / "scripts" / "lab-pki.sh"), str(pki), "cs1", INTERNAL_GUEST_IP],
                   check=True, capture_output=True, text=True, timeout=300)


def synthetic_items(residents: int, updates: int, today: dt.date | None = None) -> list[dict[str, Any]]:
    """SYNTHETIC intake items (valid check digits): the residents' history, then some 異動."""
    from jukics.sim.residents import generate_residents, generate_updates, resident_intake_items

    today = today or dt.date.today()
    people = list(generate_residents(residents, seed=8080, municipality_code=MUNICIPALITY, today=today))
    history = [item for p in people for item in resident_intake_items(p)]
    return history + list(generate_updates(people, updates, seed=8081, today=today))


def send_intake(pki: Path, port: int, items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """POST the items to the guest's intake (forwarded to host loopback) as 既存住基 (kizon.crt)."""
    from jukics.sim import kizon_client

    ctx = kizon_client.client_context(str(pki / "kizon.crt"), str(pki / "kizon.key"), str(pki / "ca.crt"))
    return kizon_client.post_batch(ctx, "127.0.0.1", port, items, timeout=300)


def wait_until(probe: Callable[[], Any], timeout: float, interval: float = 3.0) -> Any:
    """The first truthy result of probe() within timeout seconds, else None."""
    end = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


def links_drained(status_json: str) -> dict[str, Any] | None:
    """`jukics links status` output, when every link has nothing pending and something was sent."""
    try:
        rows = {r["link"]: r for r in json.loads(status_json or "[]")}
    except ValueError:
        return None
    if rows and all(r["pending"] == 0 for r in rows.values()) and any(r["last_seq"] > 0 for r in rows.values()):
        return rows
    return None
