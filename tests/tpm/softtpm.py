"""Software TPMs for tests: a real TPM 2.0 (libtpms) per ``swtpm`` process, on a unix socket."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR


@dataclass
class SoftTpm:
    state: Path
    socket: Path
    process: subprocess.Popen

    @property
    def tcti(self) -> str:
        return f"swtpm:path={self.socket}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def wait_for(path: Path, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.02)


def start_swtpm(state: Path) -> SoftTpm:
    if not shutil.which("swtpm"):
        pytest.fail("swtpm is not installed (scripts/bootstrap.sh installs it)")
    state.mkdir(parents=True, exist_ok=True)
    sock = state / "swtpm.sock"
    # The control socket must be named <socket>.ctrl for the swtpm TCTI.
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=unixio,path={sock}", "--ctrl", f"type=unixio,path={sock}.ctrl",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    wait_for(sock, proc, "swtpm")
    return SoftTpm(state=state, socket=sock, process=proc)


def set_lockout(tcti: str, max_tries: int) -> None:
    ectx = ESAPI(tcti)
    try:
        # maxTries 0 puts the TPM in lockout at once (TPM 2.0 Part 3, TPM2_DictionaryAttackParameters).
        ectx.dictionary_attack_parameters(max_tries, 1000, 1000, session1=ESYS_TR.PASSWORD)
        if max_tries:
            ectx.dictionary_attack_lock_reset(session1=ESYS_TR.PASSWORD)
    finally:
        ectx.close()
