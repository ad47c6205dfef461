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


def compare_manifests(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two builds' package sets and role versions (empty: the same inputs gave the
    same packages). Artifact hashes and build dates are not compared: they differ by design."""
    diffs = []
    pa = {(p["name"], p["arch"]): p["version"] for p in a["packages"]}
    pb = {(p["name"], p["arch"]): p["version"] for p in b["packages"]}
    for key in sorted(pa.keys() | pb.keys()):
        name = f"{key[0]}:{key[1]}"
        if key not in pb:
            diffs.append(f"package {name} {pa[key]} only in the first build")
        elif key not in pa:
            diffs.append(f"package {name} {pb[key]} only in the second build")
        elif pa[key] != pb[key]:
            diffs.append(f"package {name}: {pa[key]} != {pb[key]}")
    for role in sorted(a["roles"].keys() | b["roles"].keys()):
        if a["roles"].get(role) != b["roles"].get(role):
            diffs.append(f"role {role}: {a['roles'].get(role)} != {b['roles'].get(role)}")
    if not diffs and a["package_set_sha256"] != b["package_set_sha256"]:
        diffs.append("package_set_sha256 differs although the package lists agree (a manifest was edited)")
    return diffs


def compare_main(paths: list[str]) -> int:
    """``--compare A B``: exit 0 when two manifests have the same package set and roles, else 1."""
    a, b = (json.loads(Path(p).read_text(encoding="utf-8")) for p in paths)
    diffs = compare_manifests(a, b)
    for line in diffs:
        print(line)
    print(f"{'same' if not diffs else 'DIFFERENT'} package set: {len(a['packages'])} / {len(b['packages'])} "
          f"packages, sha256 {a['package_set_sha256'][:16]} / {b['package_set_sha256'][:16]}")
    return 1 if diffs else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--compare"]:
        if len(args) != 3:
            print("usage: python -m jukics.image.manifest --compare A.json B.json", file=sys.stderr)
            return 2
        return compare_main(args[1:])
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packages", type=Path, required=True)
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--roles", type=Path, required=True)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--mirror", required=True)
    ap.add_argument("--command", required=True)
    a = ap.parse_args(args)
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
