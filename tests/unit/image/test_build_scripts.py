"""Bad input of the image builds (docs/image.md): a clear message and no half-written artifact.

Runs the real scripts: scripts/lib/debootstrap.sh (shared by the base and the appliance image) and the
stages of scripts/build-appliance-image.sh that fail before any debootstrap or chroot.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LIB = REPO / "scripts" / "lib" / "debootstrap.sh"
APPLIANCE = REPO / "scripts" / "build-appliance-image.sh"
DEAD = "http://127.0.0.1:9/debian"  # discard port: nothing listens


def _lib(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("JUKICS_")} | env
    return subprocess.run(["bash", "-c", f'set -euo pipefail; . "{LIB}"; {script}'], capture_output=True,
                          text=True, env=full, timeout=60, check=False)


def test_mirror_from_deb822_sources_and_security_derived(tmp_path: Path) -> None:
    src = tmp_path / "debian.sources"
    src.write_text("Types: deb\nURIs: http://mirror.example/debian/\nSuites: trixie\nComponents: main\n")
    r = _lib('jukics_mirrors; echo "$mirror $security"', {"JUKICS_SOURCES_FILE": str(src)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["http://mirror.example/debian", "http://mirror.example/debian-security"]
    sec = "\nTypes: deb\nURIs: http://sec.example/debian-security\nSuites: trixie-security\n"
    src.write_text(src.read_text() + sec)
    r = _lib('jukics_mirrors; echo "$mirror $security"', {"JUKICS_SOURCES_FILE": str(src)})
    assert r.stdout.split() == ["http://mirror.example/debian", "http://sec.example/debian-security"]
    r = _lib('jukics_mirrors; echo "$mirror"', {"JUKICS_SOURCES_FILE": str(src), "JUKICS_MIRROR": "http://o/debian"})
    assert r.stdout.split() == ["http://o/debian"]


def test_no_mirror_configured_is_a_clear_error(tmp_path: Path) -> None:
    r = _lib("jukics_mirrors", {"JUKICS_SOURCES_FILE": str(tmp_path / "absent.sources")})
    assert r.returncode == 2
    assert "no Debian mirror configured" in r.stderr and "JUKICS_MIRROR" in r.stderr


def test_unreachable_mirror_is_a_clear_error() -> None:
    r = _lib("jukics_mirrors; jukics_probe_mirror", {"JUKICS_MIRROR": DEAD, "JUKICS_MIRROR_TIMEOUT": "5"})
    assert r.returncode == 1
    assert f"mirror unreachable: {DEAD}" in r.stderr


def test_appliance_rootfs_stage_stops_on_an_unreachable_mirror_before_debootstrap(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKICS_")}
    env |= {"JUKICS_MIRROR": DEAD, "JUKICS_MIRROR_TIMEOUT": "5", "JUKICS_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(["bash", str(APPLIANCE), "rootfs", str(tmp_path / "w")], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert r.returncode != 0
    assert f"mirror unreachable: {DEAD}" in r.stderr
    assert not (tmp_path / "w" / "rootfs").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="finalize runs chroot and mkfs as root")
def test_appliance_finalize_without_a_kernel_writes_nothing(tmp_path: Path) -> None:
    work = tmp_path / "w"
    (work / "rootfs" / "boot").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.qcow2").write_text("the previous build")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKICS_")} | {"JUKICS_IMAGE_OUT": str(out)}
    r = subprocess.run(["bash", str(APPLIANCE), "finalize", str(work)], capture_output=True, text=True, env=env,
                       timeout=60, check=False)
    assert r.returncode != 0
    assert "no kernel in the rootfs" in r.stderr and "linux-image-amd64" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["previous.qcow2"]
    assert (out / "previous.qcow2").read_text() == "the previous build"
    assert not (tmp_path / "out.new").exists()
