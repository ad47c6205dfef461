"""Sign an image release, and verify a received one (docs/image.md, "How a site receives, verifies and
installs").

    python3 -m jukics.image.release sign DIR --key KEYID      (the build, when JUKICS_IMAGE_SIGN_KEY is set)
    python3 -m jukics.image.release verify DIR [--keyring release-key.gpg]

``sign`` writes ``manifest.json.sig``, an armored detached GnuPG signature of the manifest (which
holds every artifact's sha256) by KEYID from the builder's GnuPG home. ``verify``
checks every artifact the manifest lists against its sha256, that nothing unlisted sits beside them
(only ``manifest.json`` and ``manifest.json.sig``), and, with ``--keyring``, that ``manifest.json.sig``
is a valid detached signature of the manifest by a key in that keyring (``gpgv``, which trusts
exactly the keyring given and nothing from the local GnuPG home). Exit 0 when all hold, 1 with each
problem named, 2 on a usage error (no manifest).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from jukics.image.manifest import sha256_file

MANIFEST, SIGNATURE = "manifest.json", "manifest.json.sig"


def verify_release(folder: Path, keyring: Path | None = None) -> list[str]:
    """The problems found (empty: the release is intact, and signed by the keyring's key if one is given)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        artifacts = manifest["artifacts"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"{MANIFEST}: unreadable ({exc})"]
    problems = []
    if keyring is not None:  # the signature first: an unsigned manifest's hashes prove nothing
        if not (folder / SIGNATURE).exists():
            problems.append(f"{SIGNATURE}: missing, but a release key was given")
        else:
            r = subprocess.run(["gpgv", "--keyring", str(keyring.resolve()), str(folder / SIGNATURE),
                                str(folder / MANIFEST)], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                problems.append(f"{SIGNATURE}: not a good signature by the release key: "
                                f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    for name, entry in sorted(artifacts.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    extra = sorted(p.name for p in folder.iterdir() if p.name not in artifacts and p.name not in (MANIFEST, SIGNATURE))
    problems += [f"{name}: not in the manifest" for name in extra]
    return problems


def sign_release(folder: Path, key: str) -> None:
    r = subprocess.run(["gpg", "--batch", "--yes", "--local-user", key, "--armor", "--detach-sign",
                        "--output", str(folder / SIGNATURE), str(folder / MANIFEST)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        (folder / SIGNATURE).unlink(missing_ok=True)
        raise RuntimeError(f"signing {MANIFEST} with {key} failed: {r.stderr.strip()[-300:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sign", help="write manifest.json.sig")
    s.add_argument("folder", type=Path)
    s.add_argument("--key", required=True, help="the release key's id or fingerprint (builder's GnuPG home)")
    v = sub.add_parser("verify", help="check the artifacts' sha256 and, with --keyring, the signature")
    v.add_argument("folder", type=Path)
    v.add_argument("--keyring", type=Path, help="the release key (gpg --export), required to check the signature")
    a = ap.parse_args(argv)
    if not (a.folder / MANIFEST).exists():
        print(f"{a.folder}: no {MANIFEST}", file=sys.stderr)
        return 2
    if a.command == "sign":
        try:
            sign_release(a.folder, a.key)
        except RuntimeError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 1
        print(f"signed {a.folder / SIGNATURE} with {a.key}")
        return 0
    problems = verify_release(a.folder, a.keyring)
    if problems:
        for p in problems:
            print(f"BAD {p}")
        print(f"FAILED: {len(problems)} problem(s)")
        return 1
    n = len(json.loads((a.folder / MANIFEST).read_text(encoding="utf-8"))["artifacts"])
    print(f"OK: {n} artifacts match the manifest" + (", signature good" if a.keyring else " (signature not checked)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
