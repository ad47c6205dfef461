"""First boot of the appliance image (jukics-firstboot.service, runs once; docs/image.md).

Makes what is per host and was deliberately left out of the image: SSH host keys, the admin's SSH
key (from the kernel command line, `jukics.ssh_key=<base64 of an authorized_keys line>`), the TPM
provisioning (storage key, sealed data key) and a key plus CSR for every TLS identity. It ends in a
clear state in STATUS_FILE that `jukics status` reports, and leaves jukics.service waiting (by a
ConditionPathExists on the certificate) instead of failing in a loop. A failed first boot records
why and is retried at the next boot; a finished one writes DONE_FILE and never runs again.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR = Path("/var/lib/jukics-firstboot")
STATUS_FILE = STATE_DIR / "status.json"
DONE_FILE = STATE_DIR / "done"
ADMIN_USER = "jukics-admin"
SSH_GROUP = "jukics-ssh"

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@dataclass
class Paths:
    root: Path = Path("/")
    config: Path = Path("/etc/jukics/jukics.toml")
    venv: Path = Path("/opt/jukics/venv")
    tpm_device: Path = Path("/dev/tpmrm0")
    service_user: str = "jukics"
    tpm_group: str = "tss"

    def at(self, p: Path) -> Path:
        """`p` under the root (tests run against a temp dir)."""
        return self.root / p.relative_to("/")


@dataclass
class Outcome:
    state: str  # awaiting-certificates | failed
    steps: list[dict[str, Any]] = field(default_factory=list)
    csrs: list[str] = field(default_factory=list)
    error: str | None = None


def ssh_key_from_cmdline(cmdline: str) -> str | None:
    """The admin's public key from `jukics.ssh_key=` (base64, so it survives the command line)."""
    for word in cmdline.split():
        if word.startswith("jukics.ssh_key="):
            raw = word.split("=", 1)[1]
            try:
                line = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=False).decode().strip()
            except (binascii.Error, UnicodeDecodeError):
                return None
            # One key line, nothing an authorized_keys parser would read as a second entry.
            if "\n" in line or not line.startswith(("ssh-ed25519 ", "ecdsa-sha2-", "ssh-rsa ")):
                return None
            return line
    return None


def identities_of(config_path: Path) -> list[str]:
    from jukics.config import load_config

    cfg = load_config(config_path)
    return sorted(cfg.tls.identities) if cfg.tls is not None else []


def wait_for(path: Path, seconds: float, sleep: Callable[[float], None] = time.sleep) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if path.exists():
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(0.5)


def first_boot(paths: Paths, runner: Runner = run, cmdline: str = "",
               identities: Callable[[Path], list[str]] = identities_of, tpm_wait_s: float = 30.0) -> Outcome:
    out = Outcome(state="failed")

    def step(name: str, argv: Sequence[str], ok: Sequence[int] = (0,)) -> bool:
        r = runner(argv)
        good = r.returncode in ok
        out.steps.append({"step": name, "rc": r.returncode})
        if not good:
            out.error = f"{name}: exit {r.returncode}: {(r.stderr or r.stdout or '').strip()[-400:]}"
        return good

    ssh_dir = paths.at(Path("/etc/ssh"))
    if not any(ssh_dir.glob("ssh_host_*_key")) and not step("ssh-host-keys", ["ssh-keygen", "-A"]):
        return out

    key = ssh_key_from_cmdline(cmdline)
    if key is not None:
        if not step("admin-group", ["groupadd", "-f", SSH_GROUP]):
            return out
        home = paths.at(Path("/home") / ADMIN_USER)
        if not home.exists() and not step("admin-user", ["useradd", "-m", "-s", "/bin/bash", "-G",
                                                         f"sudo,{SSH_GROUP}", ADMIN_USER]):
            return out
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh / "authorized_keys").write_text(key + "\n")
        (ssh / "authorized_keys").chmod(0o600)
        sudoers = paths.at(Path("/etc/sudoers.d/jukics-admin"))
        sudoers.parent.mkdir(parents=True, exist_ok=True)
        sudoers.write_text(f"{ADMIN_USER} ALL=(ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        if not step("admin-key-owner", ["chown", "-R", f"{ADMIN_USER}:{ADMIN_USER}", str(ssh)]):
            return out
        out.steps.append({"step": "admin-key", "rc": 0})

    if not wait_for(paths.at(paths.tpm_device), tpm_wait_s):
        out.error = (f"no TPM: {paths.tpm_device} did not appear; enable the TPM 2.0 in the firmware "
                     "(or attach swtpm under QEMU) and reboot")
        return out
    if not paths.at(paths.config).is_file():
        out.error = f"no configuration at {paths.config}: the image was built without cs_service"
        return out

    jukics = [str(paths.venv / "bin" / "jukics"), "--config", str(paths.config)]
    # The service's groups as its units give them (cs_service: SupplementaryGroups=tss): /dev/tpmrm0 is
    # tss:tss 0660, so the bare user cannot open the TPM.
    as_service = ["runuser", "-u", paths.service_user, "-g", paths.service_user, "-G", paths.tpm_group, "--"]
    if not step("db-upgrade", as_service + jukics + ["db", "upgrade"]):
        return out
    # 0: created the storage key and sealed data key; 3: they exist already (a retried first boot).
    if not step("keystore-provision", as_service + jukics + ["keystore", "provision"], ok=(0, 3)):
        return out
    for name in identities(paths.config):
        if not step(f"csr-{name}", [*jukics, "cert", "csr", name]):
            return out
        out.csrs.append(name)
    out.state = "awaiting-certificates"
    return out


def write_status(paths: Paths, outcome: Outcome, now: Callable[[], float] = time.time) -> None:
    state = paths.at(STATE_DIR)
    state.mkdir(mode=0o755, parents=True, exist_ok=True)
    doc = {"state": outcome.state, "error": outcome.error, "csrs": outcome.csrs, "steps": outcome.steps,
           "at": int(now())}
    tmp = paths.at(STATUS_FILE).with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, paths.at(STATUS_FILE))
    if outcome.state != "failed":
        paths.at(DONE_FILE).write_text(f"{int(now())}\n")


def read_status(root: Path = Path("/")) -> dict[str, Any] | None:
    p = root / STATUS_FILE.relative_to("/")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    paths = Paths()
    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        cmdline = ""
    outcome = first_boot(paths, cmdline=cmdline)
    write_status(paths, outcome)
    if outcome.state == "failed":
        print(f"jukics first boot failed: {outcome.error}", file=sys.stderr)
        return 1
    print(f"jukics first boot done: {outcome.state}; CSRs for {', '.join(outcome.csrs) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
