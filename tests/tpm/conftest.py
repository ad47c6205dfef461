"""Software TPMs for the key-store tests: each ``swtpm`` is a real TPM 2.0 (libtpms) on a unix socket.

``swtpm_factory()`` starts a fresh one (its own state, so its own seeds: a blob sealed on one does
not open on another). ``abrmd`` puts tpm2-abrmd in front of one on a private D-Bus session bus, as
on the appliance, for tests where several processes use the TPM at once (gunicorn workers).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from softtpm import SoftTpm, start_swtpm, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def swtpm_factory(tmp_path: Path) -> Iterator[Callable[[], SoftTpm]]:
    started: list[SoftTpm] = []

    def make() -> SoftTpm:
        tpm = start_swtpm(tmp_path / f"swtpm{len(started)}")
        started.append(tpm)
        return tpm

    yield make
    for tpm in started:
        tpm.stop()


@pytest.fixture
def swtpm(swtpm_factory: Callable[[], SoftTpm]) -> SoftTpm:
    return swtpm_factory()


@dataclass
class Abrmd:
    tcti: str
    env: dict[str, str]


@pytest.fixture
def abrmd(tmp_path: Path, swtpm: SoftTpm) -> Iterator[Abrmd]:
    """tpm2-abrmd in front of ``swtpm`` on a private D-Bus session bus (never the system bus)."""
    bus_sock = tmp_path / "dbus.sock"
    dbus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address=unix:path={bus_sock}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(bus_sock, dbus, "dbus-daemon")
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=f"unix:path={bus_sock}")
    name = f"com.intel.tss2.Tabrmd.t{os.getpid()}"
    broker = subprocess.Popen(
        ["tpm2-abrmd", "--session", f"--dbus-name={name}", f"--tcti={swtpm.tcti}", "--flush-all", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    tcti = f"tabrmd:bus_name={name},bus_type=session"
    deadline = time.monotonic() + 10
    while subprocess.run(["tpm2_getrandom", "-T", tcti, "4"], env=env, capture_output=True).returncode != 0:
        if broker.poll() is not None or time.monotonic() > deadline:
            broker.kill()
            dbus.kill()
            pytest.fail("tpm2-abrmd did not come up")
        time.sleep(0.05)
    old = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = env["DBUS_SESSION_BUS_ADDRESS"]
    try:
        yield Abrmd(tcti=tcti, env=env)
    finally:
        if old is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = old
        for proc in (broker, dbus):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway lab PKI (scripts/lab-pki.sh): CA, cs, terminal, kizon, stranger... certificates."""
    out = tmp_path_factory.mktemp("pki")
    subprocess.run(["bash", str(ROOT / "scripts/lab-pki.sh"), str(out)], check=True, capture_output=True)
    return out
