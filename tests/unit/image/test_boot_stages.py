"""The boot test's stages that run without a VM: the VM's inventory, the commands, the checks' parsing."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from jukics.image import boot_stages, boottest

REPO = Path(__file__).resolve().parents[3]
PORTS = boot_stages.Ports(ssh=2222, intake=2443, prefecture=3443, national=4443)
NICS = boot_stages.Nics(internal="enp0s2", jukinet="enp0s3")


def test_slirp_mac_is_52_55_and_the_host_alias() -> None:
    assert boot_stages.slirp_mac("10.0.2.2") == "52:55:0a:00:02:02"
    assert boot_stages.slirp_mac("10.0.3.2") == "52:55:0a:00:03:02"


def test_nics_found_by_mac_and_a_missing_one_named() -> None:
    links = json.dumps([{"ifname": "lo", "address": "00:00:00:00:00:00"},
                        {"ifname": "enp0s2", "address": boottest.GUEST_MAC},
                        {"ifname": "enp0s3", "address": boot_stages.GUEST_MAC_JUKINET.upper()}])
    assert boot_stages.nics_from_ip_json(links, boottest.GUEST_MAC, boot_stages.GUEST_MAC_JUKINET) == NICS
    with pytest.raises(RuntimeError, match="no NIC with MAC 52:54:00:4a:4b:02"):
        boot_stages.nics_from_ip_json(json.dumps([{"ifname": "enp0s2", "address": boottest.GUEST_MAC}]),
                                      boottest.GUEST_MAC, boot_stages.GUEST_MAC_JUKINET)


def test_host_vars_put_the_vm_behind_loopback(tmp_path: Path) -> None:
    hv = boot_stages.host_vars(PORTS, NICS, tmp_path / "id", tmp_path / "pki", boottest.GUEST_MAC)
    assert (hv["ansible_host"], hv["ansible_port"], hv["ansible_user"]) == ("127.0.0.1", 2222, "jukics-admin")
    assert "ControlPersist" in hv["ansible_ssh_common_args"] and hv["ansible_ssh_pipelining"] is True
    assert hv["lab_hosts"]["cs1"]["internal"] == {"ip": "10.0.2.15", "mac": boottest.GUEST_MAC, "ifname": "enp0s2"}
    assert hv["lab_hosts"]["cs1"]["jukinet"]["ifname"] == "enp0s3"
    # every neighbour is the host behind QEMU's alias of its network
    assert hv["lab_hosts"]["kizon1"]["internal"]["ip"] == "10.0.2.2"
    assert hv["lab_hosts"]["pref1"]["jukinet"] == {"ip": "10.0.3.2", "mac": "52:55:0a:00:03:02", "ifname": "-"}
    assert hv["firewall_zones"]["internal"] == {"interface": "enp0s2", "mac_allowlist": ["52:55:0a:00:02:02"]}
    assert hv["firewall_zones"]["jukinet"]["mac_allowlist"] == ["52:55:0a:00:03:02"]
    assert {r["name"]: (r["destinations"], r["port"]) for r in hv["firewall_outbound"]} == {
        "prefecture": (["10.0.3.2"], 3443), "card": (["10.0.3.2"], 4443)}
    assert (hv["firewall_confirm_host"], hv["firewall_confirm_port"]) == ("127.0.0.1", 2222)
    urls = {p["link"]: p["url"] for p in hv["cs_service_links_peers"]}
    assert urls["prefecture"] == urls["fuhyo"] == urls["tokurei"] == "https://10.0.3.2:3443"
    assert urls["card"] == urls["sofusaki"] == "https://10.0.3.2:4443"
    assert all(p["ca_src"] == str(tmp_path / "pki" / "ca.crt") for p in hv["cs_service_links_peers"])
    assert hv["jukics_lab_pki_dir"] == str(tmp_path / "pki")
    # what the image brings that the allowlist would refuse: networkd's DHCP client (the first-boot
    # unit is the appliance's own, in base_hardening's default allowlist)
    assert hv["base_hardening_allowed_listeners_extra_image"] == [
        {"port": 68, "proto": "udp", "process": "systemd-network", "comment": "DHCP client (the image's networkd)"}]
    assert "base_hardening_allowed_units_extra_image" not in hv
    defaults = (Path(__file__).resolve().parents[3] / "roles/base_hardening/defaults/main.yml").read_text()
    assert "  - jukics-firstboot.service\n" in defaults
    assert hv["tpm_keystore_mode"] == "device"  # the guest's /dev/tpmrm0, not the lab's in-container swtpm


def test_inventory_reuses_the_lab_group_vars_and_overrides_per_host(tmp_path: Path) -> None:
    hv = boot_stages.host_vars(PORTS, NICS, tmp_path / "id", tmp_path / "pki", boottest.GUEST_MAC)
    hosts = boot_stages.inventory_files(REPO, tmp_path / "inv", hv)
    doc = yaml.safe_load(hosts.read_text())
    assert list(doc["all"]["children"]) == ["appliance"]
    assert list(doc["all"]["children"]["appliance"]["hosts"]) == ["cs1"]
    lab = REPO / "inventories" / "lab" / "group_vars"
    assert (tmp_path / "inv" / "group_vars" / "all.yml").read_text() == (lab / "all.yml").read_text()
    assert ((tmp_path / "inv" / "group_vars" / "appliance" / "main.yml").read_text()
            == (lab / "appliance" / "main.yml").read_text())
    assert yaml.safe_load((tmp_path / "inv" / "host_vars" / "cs1.yml").read_text()) == hv
    # a second run starts from a clean directory
    (tmp_path / "inv" / "host_vars" / "stale.yml").write_text("x: 1\n")
    boot_stages.inventory_files(REPO, tmp_path / "inv", hv)
    assert not (tmp_path / "inv" / "host_vars" / "stale.yml").exists()


def test_ansible_resolves_the_vm_inventory(tmp_path: Path) -> None:
    """The host vars win over the lab's group_vars, and the lab's templates resolve to the VM's addresses."""
    hv = boot_stages.host_vars(PORTS, NICS, tmp_path / "id", tmp_path / "pki", boottest.GUEST_MAC)
    hosts = boot_stages.inventory_files(REPO, tmp_path / "inv", hv)
    env = boot_stages.converge_env(REPO, tmp_path)
    r = subprocess.run(["ansible", "-i", str(hosts), "cs1", "-m", "ansible.builtin.debug", "-a",
                        "msg={{ [base_hardening_ssh_listen_addresses, cs_service_tls_subject_names,"
                        " firewall_inbound | map(attribute='sources') | list, base_hardening_runtime_apply] }}",
                        "-c", "local"], env=env, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "10.0.2.15" in r.stdout and "10.0.2.2" in r.stdout and "10.0.3.2" in r.stdout
    assert "10.233." not in r.stdout.split("=>", 1)[1]


def test_converge_command_and_env(tmp_path: Path) -> None:
    cmd = boot_stages.converge_command(REPO, tmp_path / "hosts.yml")
    assert cmd == ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(REPO / "playbooks" / "site.yml")]
    assert boot_stages.converge_command(REPO, tmp_path / "h.yml", "--tags 'cs_service,firewall' -v")[-3:] == [
        "--tags", "cs_service,firewall", "-v"]
    env = boot_stages.converge_env(REPO, tmp_path)
    assert env["ANSIBLE_CONFIG"] == str(REPO / "ansible.cfg") and env["ANSIBLE_PIPELINING"] == "True"
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(tmp_path / "cp")


def test_play_recap() -> None:
    ok = "PLAY RECAP ***\ncs1                        : ok=412  changed=97   unreachable=0    failed=0    skipped=50\n"
    assert boot_stages.play_recap_ok(ok)
    assert not boot_stages.play_recap_ok(ok.replace("failed=0", "failed=1"))
    assert not boot_stages.play_recap_ok(ok.replace("unreachable=0", "unreachable=1"))
    assert not boot_stages.play_recap_ok("fatal: [cs1]: UNREACHABLE!\n")


def test_sim_configs_parse_as_the_sims_read_them(tmp_path: Path) -> None:
    from jukics.sim.peers import parse_sim_config

    pref = boot_stages.sim_config_toml("prefecture", "pref1", "pref-14", 3443, tmp_path / "pki", tmp_path,
                                       {"cs1": "cs-142140"}, national_port=4443)
    cfg = parse_sim_config(tomllib.loads(pref))
    assert cfg.listen == ("127.0.0.1", 3443) and cfg.admin_listen == ("127.0.0.1", 0)
    assert cfg.national_url == "https://127.0.0.1:4443" and cfg.senders == {"cs1": "cs-142140"}
    assert cfg.cert_file == tmp_path / "pki" / "pref1.crt"
    nat = parse_sim_config(tomllib.loads(boot_stages.sim_config_toml(
        "national", "nat1", "nat-00", 4443, tmp_path / "pki", tmp_path, {"pref1": "pref-14"})))
    assert nat.role == "national" and nat.national_url is None


def test_links_drained() -> None:
    rows = [{"link": "prefecture", "pending": 0, "last_seq": 30}, {"link": "fuhyo", "pending": 0, "last_seq": 0}]
    assert set(boot_stages.links_drained(json.dumps(rows)) or {}) == {"prefecture", "fuhyo"}
    assert boot_stages.links_drained(json.dumps([{**rows[0], "pending": 2}])) is None
    assert boot_stages.links_drained(json.dumps([{**rows[0], "last_seq": 0}])) is None  # nothing sent yet
    assert boot_stages.links_drained("") is None and boot_stages.links_drained("not json") is None


def test_synthetic_items_have_valid_check_digits() -> None:
    from jukics.domain.identifiers import ProvisionalCheckDigitJuminhyoCodeValidator, is_valid_my_number

    items = boot_stages.synthetic_items(residents=5, updates=3)
    assert len(items) >= 8
    assert all(ProvisionalCheckDigitJuminhyoCodeValidator().is_valid(str(i["juminhyo_code"])) for i in items)
    assert all(is_valid_my_number(str(i["my_number"])) for i in items if i.get("my_number"))


def test_qemu_command_forwards_the_intake_and_adds_the_jukinet_nic(tmp_path: Path) -> None:
    vm = boottest.VM(kernel=tmp_path / "k", initrd=tmp_path / "i", disk=tmp_path / "d", tpm_socket=tmp_path / "s",
                     ssh_port=2222, console_log=tmp_path / "c", forwards=((2443, 8443),), jukinet=True)
    cmd = boottest.qemu_command(vm)
    assert "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:2443-:8443" in cmd
    assert "user,id=n1,net=10.0.3.0/24,host=10.0.3.2" in cmd
    assert f"virtio-net-pci,netdev=n1,mac={boot_stages.GUEST_MAC_JUKINET}" in cmd
    # loopback only: no forward binds anything but 127.0.0.1
    assert all("hostfwd=tcp:127.0.0.1:" in part for a in cmd for part in a.split(",") if "hostfwd" in part)
