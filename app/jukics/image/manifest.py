"""The image manifest: packages with versions, role versions, sha256 of every artifact, build date and
the command that rebuilds it (docs/image.md). `package_set_digest` is what two builds from the same
inputs share (artifact hashes differ: ext4 and the initramfs carry build-time stamps)."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def parse_packages(text: str) -> list[dict[str, str]]:
    """`dpkg-query -W -f '${Package}\\t${Version}\\t${Architecture}\\n'` output, sorted, de-duplicated."""
    rows = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"bad package line: {line!r}")
        rows[(parts[0], parts[2])] = {"name": parts[0], "version": parts[1], "arch": parts[2]}
    return [rows[k] for k in sorted(rows)]


def package_set_digest(packages: list[dict[str, str]]) -> str:
    canon = "\n".join(f"{p['name']}\t{p['version']}\t{p['arch']}" for p in packages)
    return hashlib.sha256(canon.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def role_versions(roles_dir: Path, repo: Path | None) -> dict[str, str]:
    """Each role's version: the git tree hash of its directory (changes exactly when the role does)."""
    out = {}
    for role in sorted(p.name for p in roles_dir.iterdir() if (p / "tasks").is_dir()):
        tree = "unknown"
        if repo is not None:
            r = subprocess.run(["git", "-C", str(repo), "rev-parse", f"HEAD:roles/{role}"],
                               capture_output=True, text=True, check=False)
            if r.returncode == 0:
                tree = r.stdout.strip()
        out[role] = tree
    return out


def build_manifest(packages: list[dict[str, str]], artifacts: dict[str, str], roles: dict[str, str], *,
                   mirror: str, command: str, commit: str, dirty: bool, built_at: float) -> dict[str, Any]:
    return {
        "format": "jukics-appliance-manifest/1",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(built_at)),
        "source": {"commit": commit, "dirty": dirty, "mirror": mirror, "suite": "trixie"},
        "rebuild": command,
        "roles": roles,
        "artifacts": {name: {"sha256": digest} for name, digest in sorted(artifacts.items())},
        "package_set_sha256": package_set_digest(packages),
        "packages": packages,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packages", type=Path, required=True)
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--roles", type=Path, required=True)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--mirror", required=True)
    ap.add_argument("--command", required=True)
    a = ap.parse_args(argv)
    packages = parse_packages(a.packages.read_text())
    artifacts = {p.name: sha256_file(p) for p in sorted(a.artifacts.iterdir()) if p.is_file()}
    commit, dirty = "unknown", True
    if a.repo is not None:
        r = subprocess.run(["git", "-C", str(a.repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
        commit = r.stdout.strip() or "unknown"
        d = subprocess.run(["git", "-C", str(a.repo), "status", "--porcelain", "--", "roles", "playbooks", "scripts",
                            "app"], capture_output=True, text=True, check=False)
        dirty = bool(d.stdout.strip())
    command = f"git checkout {commit} && JUKICS_MIRROR={a.mirror} {a.command}"
    doc = build_manifest(packages, artifacts, role_versions(a.roles, a.repo), mirror=a.mirror, command=command,
                         commit=commit, dirty=dirty, built_at=time.time())
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
