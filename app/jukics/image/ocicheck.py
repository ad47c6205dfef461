"""`make test-image` stage: the OCI archive imports into podman and is the same rootfs as the disk.

Loads ``jukics-appliance.oci.tar`` with ``podman load`` under a throwaway tag, runs a container from it
without a network, and checks: the package list inside equals the manifest's (the same rootfs), the
jukics CLI runs from its venv, no per-host identity was baked in (machine-id empty, no SSH host keys,
no TLS key or sealed key under /etc/jukics or /var/lib/jukics). The image is removed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from jukics.image.manifest import package_set_digest, parse_packages

INSIDE = ("dpkg-query -W -f '${Package}\\t${Version}\\t${Architecture}\\n' > /tmp/pkgs; "
          "echo '--packages--'; cat /tmp/pkgs; echo '--end--'; "
          "/opt/jukics/venv/bin/jukics --help > /dev/null && echo cli=ok; "
          "echo machine_id_bytes=$(wc -c < /etc/machine-id); "
          "echo ssh_host_keys=$(ls /etc/ssh/ssh_host_*key 2>/dev/null | wc -l); "
          "echo baked_keys=$(find /etc/jukics /var/lib/jukics -name '*.key' -o -name 'key.pem' "
          "-o -name '*.sealed' 2>/dev/null | wc -l)")


def loaded_image(podman_output: str) -> str:
    """The image reference ``podman load`` reports (``Loaded image: ref`` / ``Loaded image(s): ref``)."""
    m = re.search(r"Loaded image(?:\(s\))?:\s*(\S+)", podman_output)
    if m is None:
        raise ValueError(f"podman load did not name an image: {podman_output.strip()[-300:]!r}")
    return m.group(1).split(",")[0]


def parse_inside(output: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The container's package list and its ``key=value`` facts."""
    if "--packages--" not in output or "--end--" not in output:
        raise ValueError(f"no package list from the container: {output.strip()[-300:]!r}")
    head, rest = output.split("--packages--", 1)
    listing, tail = rest.split("--end--", 1)
    facts = dict(line.split("=", 1) for line in (head + tail).splitlines() if "=" in line)
    return parse_packages(listing), facts


def check(image_dir: Path, podman: str = "podman") -> list[str]:
    manifest = json.loads((image_dir / "manifest.json").read_text(encoding="utf-8"))
    archive = image_dir / "jukics-appliance.oci.tar"
    failures: list[str] = []
    load = subprocess.run([podman, "load", "-i", str(archive)], capture_output=True, text=True, check=False)
    if load.returncode != 0:
        return [f"podman load failed: {(load.stderr or load.stdout).strip()[-300:]}"]
    ref = loaded_image(load.stdout + load.stderr)
    print(f"podman load: {ref}")
    try:
        run = subprocess.run([podman, "run", "--rm", "--network", "none", ref, "/bin/sh", "-c", INSIDE],
                             capture_output=True, text=True, timeout=300, check=False)
        if run.returncode != 0:
            return [f"podman run failed ({run.returncode}): {run.stderr.strip()[-300:]}"]
        packages, facts = parse_inside(run.stdout)
        same = package_set_digest(packages) == manifest["package_set_sha256"]
        print(f"packages in the container: {len(packages)} (manifest {len(manifest['packages'])}), "
              f"{'same set' if same else 'DIFFERENT set'}")
        if not same:
            failures.append("the OCI rootfs's packages differ from the manifest's")
        for key, want, what in (("cli", "ok", "the jukics CLI runs from /opt/jukics/venv"),
                                ("machine_id_bytes", "0", "machine-id is empty (made at first boot)"),
                                ("ssh_host_keys", "0", "no SSH host keys baked in"),
                                ("baked_keys", "0", "no TLS or sealed key baked in")):
            ok = facts.get(key, "").strip() == want
            print(f"{'ok' if ok else 'FAIL'}: {what}")
            if not ok:
                failures.append(f"{what} (got {facts.get(key)!r})")
    finally:
        subprocess.run([podman, "rmi", "-f", ref], capture_output=True, check=False)
    return failures


def main() -> int:
    repo = Path(__file__).resolve().parents[3]
    image_dir = Path(os.environ.get("JUKICS_IMAGE_OUT", repo / "out" / "image"))
    if not (image_dir / "jukics-appliance.oci.tar").exists():
        print(f"no OCI archive in {image_dir}: run make appliance-image first", file=sys.stderr)
        return 2
    failures = check(image_dir)
    print(f"{'FAILED' if failures else 'OK'}: OCI archive, {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
