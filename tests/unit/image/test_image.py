"""The appliance image's pieces that run without a VM: manifest, OCI archive, QEMU command, first boot."""

from __future__ import annotations

import base64
import json
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from jukics.image import boottest, firstboot, manifest, oci

PKGS = "zlib1g\t1:1.3.dfsg-3.1\tamd64\nbash\t5.2.37-2\tamd64\n\nsystemd\t257.13-1~deb13u1\tamd64\n"


def test_manifest_package_set_is_order_independent_and_version_sensitive() -> None:
    a = manifest.parse_packages(PKGS)
    b = manifest.parse_packages("\n".join(reversed(PKGS.strip().splitlines())) + "\n")
    assert [p["name"] for p in a] == ["bash", "systemd", "zlib1g"]
    assert manifest.package_set_digest(a) == manifest.package_set_digest(b)
    c = manifest.parse_packages(PKGS.replace("5.2.37-2", "5.2.37-3"))
    assert manifest.package_set_digest(a) != manifest.package_set_digest(c)


def test_manifest_rejects_a_bad_package_line() -> None:
    with pytest.raises(ValueError, match="bad package line"):
        manifest.parse_packages("bash 5.2\n")


def test_manifest_records_artifacts_roles_and_rebuild_command(tmp_path: Path) -> None:
    (tmp_path / "a.raw").write_bytes(b"disk")
    pk = tmp_path / "p.tsv"
    pk.write_text(PKGS)
    art = tmp_path / "art"
    art.mkdir()
    (art / "x.qcow2").write_bytes(b"abc")
    roles = tmp_path / "roles"
    (roles / "r1" / "tasks").mkdir(parents=True)
    doc = manifest.build_manifest(manifest.parse_packages(PKGS), {"x.qcow2": manifest.sha256_file(art / "x.qcow2")},
                                  manifest.role_versions(roles, None), mirror="http://m/debian",
                                  command="make appliance-image", commit="c0ffee", dirty=False, built_at=0)
    assert doc["artifacts"]["x.qcow2"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert doc["roles"] == {"r1": "unknown"}
    assert doc["built_at"] == "1970-01-01T00:00:00Z"
    assert doc["rebuild"] == "make appliance-image"
    assert len(doc["packages"]) == 3


def test_oci_archive_is_deterministic_and_well_formed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("cs\n")
    rt = tmp_path / "rootfs.tar"
    with tarfile.open(rt, "w") as t:
        t.add(root, arcname=".")
    d1 = oci.write_archive(rt, tmp_path / "a.oci.tar", "jukics-appliance:latest")
    d2 = oci.write_archive(rt, tmp_path / "b.oci.tar", "jukics-appliance:latest")
    assert d1 == d2
    assert (tmp_path / "a.oci.tar").read_bytes() == (tmp_path / "b.oci.tar").read_bytes()
    with tarfile.open(tmp_path / "a.oci.tar") as t:
        index = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["manifests"][0]["digest"] == f"sha256:{d1}"
        m = json.load(t.extractfile(f"blobs/sha256/{d1}"))  # type: ignore[arg-type]
        layer = m["layers"][0]["digest"].split(":")[1]
        assert t.getmember(f"blobs/sha256/{layer}").size == rt.stat().st_size
    assert not (tmp_path / "a.oci.tar.tmp").exists()


def test_qemu_command_kvm_and_tcg(tmp_path: Path) -> None:
    vm = boottest.VM(kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img", disk=tmp_path / "d.qcow2",
                     tpm_socket=tmp_path / "swtpm.sock", ssh_port=2222, console_log=tmp_path / "c.log", accel="kvm")
    cmd = boottest.qemu_command(vm)
    joined = " ".join(cmd)
    assert "q35,accel=kvm" in joined and cmd[cmd.index("-cpu") + 1] == "host,-arch-capabilities"
    assert f"socket,id=chrtpm,path={tmp_path}/swtpm.sock" in cmd
    assert "emulator,id=tpm0,chardev=chrtpm" in cmd and "tpm-crb,tpmdev=tpm0" in cmd
    # SSH reachable on loopback only
    assert "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22" in cmd
    assert cmd[cmd.index("-append") + 1].startswith("root=/dev/vda rw console=ttyS0")
    vm.accel = "tcg"
    cmd = boottest.qemu_command(vm)
    assert "q35,accel=tcg" in cmd and cmd[cmd.index("-cpu") + 1] == "max"


def test_swtpm_command_uses_the_control_socket(tmp_path: Path) -> None:
    cmd = boottest.swtpm_command(tmp_path, tmp_path / "s.sock")
    assert cmd[:3] == ["swtpm", "socket", "--tpm2"] and f"type=unixio,path={tmp_path}/s.sock" in cmd


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample admin@site"


def test_ssh_key_from_cmdline() -> None:
    enc = base64.b64encode(KEY.encode()).decode().rstrip("=")
    assert firstboot.ssh_key_from_cmdline(f"root=/dev/vda jukics.ssh_key={enc} quiet") == KEY
    assert firstboot.ssh_key_from_cmdline("root=/dev/vda") is None
    two = base64.b64encode((KEY + "\nssh-rsa AAAA evil").encode()).decode()
    assert firstboot.ssh_key_from_cmdline(f"jukics.ssh_key={two}") is None
    assert firstboot.ssh_key_from_cmdline("jukics.ssh_key=" + base64.b64encode(b"command=x").decode()) is None


class FakeRunner:
    def __init__(self, rcs: dict[str, int] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.rcs = rcs or {}

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        rc = next((v for k, v in self.rcs.items() if k in " ".join(argv)), 0)
        return subprocess.CompletedProcess(list(argv), rc, "", "boom" if rc else "")


def _root(tmp_path: Path, tpm: bool = True, config: bool = True) -> firstboot.Paths:
    (tmp_path / "etc" / "ssh").mkdir(parents=True)
    (tmp_path / "etc" / "jukics").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    if tpm:
        (tmp_path / "dev" / "tpmrm0").write_text("")
    if config:
        (tmp_path / "etc" / "jukics" / "jukics.toml").write_text("")
    return firstboot.Paths(root=tmp_path)


def test_first_boot_provisions_and_writes_csrs(tmp_path: Path) -> None:
    paths = _root(tmp_path)
    run = FakeRunner({"keystore provision": 3})  # a retried first boot: the keys exist already
    out = firstboot.first_boot(paths, run, cmdline="", identities=lambda _: ["intake", "links"], tpm_wait_s=0)
    assert out.state == "awaiting-certificates", out.error
    steps = [s["step"] for s in out.steps]
    assert steps == ["ssh-host-keys", "db-upgrade", "keystore-provision", "csr-intake", "csr-links"]
    assert run.calls[1][:8] == ["runuser", "-u", "jukics", "-g", "jukics", "-G", "tss", "--"]
    firstboot.write_status(paths, out, now=lambda: 5)
    assert firstboot.read_status(tmp_path)["state"] == "awaiting-certificates"  # type: ignore[index]
    assert (tmp_path / "var/lib/jukics-firstboot/done").exists()


def test_first_boot_without_tpm_fails_clearly_and_will_retry(tmp_path: Path) -> None:
    paths = _root(tmp_path, tpm=False)
    run = FakeRunner()
    out = firstboot.first_boot(paths, run, identities=lambda _: ["intake"], tpm_wait_s=0)
    assert out.state == "failed" and "no TPM" in (out.error or "")
    assert not any("keystore" in " ".join(c) for c in run.calls)
    firstboot.write_status(paths, out)
    assert not (tmp_path / "var/lib/jukics-firstboot/done").exists()


def test_first_boot_stops_at_the_first_failed_step(tmp_path: Path) -> None:
    paths = _root(tmp_path)
    run = FakeRunner({"keystore provision": 1})
    out = firstboot.first_boot(paths, run, identities=lambda _: ["intake"], tpm_wait_s=0)
    assert out.state == "failed" and out.error is not None and out.error.startswith("keystore-provision: exit 1")
    assert not any("csr" in c for c in run.calls)


def test_first_boot_installs_the_admin_key(tmp_path: Path) -> None:
    paths = _root(tmp_path)
    (tmp_path / "etc/ssh/ssh_host_ed25519_key").write_text("k")
    (tmp_path / "home" / "jukics-admin").mkdir(parents=True)
    run = FakeRunner()
    enc = base64.b64encode(KEY.encode()).decode()
    out = firstboot.first_boot(paths, run, cmdline=f"jukics.ssh_key={enc}", identities=lambda _: [], tpm_wait_s=0)
    assert out.state == "awaiting-certificates"
    assert (tmp_path / "home/jukics-admin/.ssh/authorized_keys").read_text() == KEY + "\n"
    assert ["groupadd", "-f", "jukics-ssh"] in run.calls
    assert not any(c[0] == "ssh-keygen" for c in run.calls)  # host keys existed


def test_jukics_status_waiting_ready_failed(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from jukics.cli.status import EXIT_FAILED, EXIT_READY, EXIT_WAITING, appliance_status

    cfg = SimpleNamespace(intake=SimpleNamespace(cert_file=Path("/etc/jukics/tls/intake/current/cert.pem")))
    paths = firstboot.Paths(root=tmp_path)
    firstboot.write_status(paths, firstboot.Outcome(state="awaiting-certificates", csrs=["intake"]))
    rc, doc = appliance_status(cfg, tmp_path)  # type: ignore[arg-type]
    assert rc == EXIT_WAITING and doc["state"] == "awaiting-certificates" and "site.yml" in doc["next"]
    cert = tmp_path / "etc/jukics/tls/intake/current/cert.pem"
    cert.parent.mkdir(parents=True)
    cert.write_text("x")
    assert appliance_status(cfg, tmp_path)[0] == EXIT_READY  # type: ignore[arg-type]
    firstboot.write_status(paths, firstboot.Outcome(state="failed", error="no TPM"))
    rc, doc = appliance_status(cfg, tmp_path)  # type: ignore[arg-type]
    assert rc == EXIT_FAILED and "no TPM" in doc["next"]


def test_kvm_failure_is_recognised_for_the_tcg_fallback() -> None:
    assert boottest.kvm_failed("KVM internal error. Suberror: 1\nemulation failure\n")
    assert boottest.kvm_failed("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n")
    assert not boottest.kvm_failed("")
    assert not boottest.kvm_failed("qemu-system-x86_64: terminating on signal 15\n")
