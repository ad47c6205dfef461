#!/usr/bin/env python3
"""Build the offline wheelhouse for the jukics service on the controller (the target never reaches PyPI).

    jukics_wheelhouse.py build  --project DIR --requirements FILE --cache DIR [target options] [--export DIR]
    jukics_wheelhouse.py bundle --wheels DIR --cache DIR [target options]

`build` downloads the pinned runtime dependencies as wheels for the TARGET interpreter (not this one)
into `CACHE/wheelhouse-<sha256 of the requirements file>` (reused while the file is unchanged), builds
the jukics wheel from the current sources (reproducibly: SOURCE_DATE_EPOCH is fixed, so unchanged
sources give a byte-identical wheel, kept in `CACHE/project-wheels/<sha256 of the sources>`), and
bundles both. A dependency published only as an sdist is built into
a wheel here; that is accepted only when the result is pure Python (`none-any`), because a compiled
wheel built on the controller would be for the controller's Python, not the target's.

`bundle` takes a ready directory of wheels (an operator's wheelhouse for a controller that is itself
offline, made elsewhere with `build --export DIR`) and bundles it unchanged.

A bundle is `CACHE/bundles/<digest>/` holding `wheelhouse.tar` (wheels/*.whl, SHA256SUMS,
requirements.lock; deterministic, so the same wheels give the same tar) where the digest is the sha256
of SHA256SUMS: the identity of the set of wheels. `requirements.lock` pins every wheel by version and
sha256 for `pip install --require-hashes` on the target.

Prints one JSON object on stdout: digest, tar, wheels, changed (whether anything was downloaded or
built into the cache). Errors go to stderr as `wheelhouse: E_<CODE>: <message>` with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# 1980-01-01: the earliest time a zip entry can hold; any fixed value makes the jukics wheel reproducible.
SOURCE_DATE_EPOCH = "315532800"
DEFAULT_PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64", "any")
# Files of the project that a wheel build may read besides the package directories.
PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md", "README.rst", "LICENSE",
                 "LICENSE.txt", "NOTICE")
KEEP_BUNDLES = 5
_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;]+)")


class WheelhouseError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Target:
    python_version: str  # "3.13"
    platforms: tuple[str, ...]

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--python-version", self.python_version, "--implementation", "cp",
                "--abi", self.abi]
        for platform in self.platforms:
            args += ["--platform", platform]
        return args


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    version: str
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_wheel(path: Path) -> Wheel:
    # {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl (PEP 427; the name never holds a dash)
    parts = path.name[: -len(".whl")].split("-")
    if not path.name.endswith(".whl") or len(parts) not in (5, 6):
        raise WheelhouseError("E_WHEEL_NAME", f"{path.name}: not a wheel file name")
    return Wheel(path, parts[0], parts[1], sha256_file(path))


def check_compatible(wheel: Wheel, target: Target) -> None:
    """The filename's tags must allow the target interpreter (the target's pip re-checks, this fails early)."""
    python_tags, abi_tags, platform_tags = (t.split(".") for t in wheel.path.name[: -len(".whl")].split("-")[-3:])
    major = target.python_version.split(".")[0]
    py_ok = any(t in (f"py{major}", target.abi, f"cp{major}") or re.fullmatch(r"cp3\d+", t) for t in python_tags)
    abi_ok = any(t in ("none", "abi3", target.abi) for t in abi_tags)
    plat_ok = any(t == "any" or t in target.platforms for t in platform_tags)
    if not (py_ok and abi_ok and plat_ok):
        raise WheelhouseError(
            "E_WHEEL_TARGET",
            f"{wheel.path.name} does not fit the target (cp{target.abi[2:]}, {', '.join(target.platforms)})",
        )


def run(cmd: Sequence[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)  # noqa: S603 - fixed argv


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One builder at a time per cache (two playbook runs may share a controller)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def download_dependencies(pip: list[str], requirements: Path, cache: Path, target: Target,
                          pip_extra: list[str]) -> tuple[Path, bool]:
    """Wheels of the pinned dependencies for the target, cached by the requirements file's hash."""
    req_hash = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    deps = cache / f"wheelhouse-{req_hash}"
    if (deps / ".complete").exists():
        return deps, False
    work = Path(tempfile.mkdtemp(prefix=f"wheelhouse-{req_hash}.", dir=cache))
    built = work / "sdist-built"
    try:
        for _attempt in range(20):  # one more round per sdist-only dependency found
            cmd = [*pip, "download", "--disable-pip-version-check", *target.pip_args(), *pip_extra,
                   "-r", str(requirements), "-d", str(work / "wheels")]
            if built.exists():
                cmd += ["--find-links", str(built)]
            proc = run(cmd)
            if proc.returncode == 0:
                break
            missing = _NO_MATCH.search(proc.stderr)
            if not missing or (built / missing.group(1)).exists():
                raise WheelhouseError("E_DOWNLOAD", f"pip download failed:\n{proc.stderr.strip()[-2000:]}")
            build_sdist_wheel(pip, missing.group(1), missing.group(2), built, pip_extra)
        else:
            raise WheelhouseError("E_DOWNLOAD", "too many sdist-only dependencies")
        for wheel in sorted((work / "wheels").glob("*.whl")):
            check_compatible(parse_wheel(wheel), target)
        (work / "wheels" / ".complete").write_text(requirements.name + "\n")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(deps)
        (work / "wheels").rename(deps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return deps, True


def build_sdist_wheel(pip: list[str], name: str, version: str, built: Path, pip_extra: list[str]) -> None:
    out = built / name
    out.mkdir(parents=True)
    proc = run([*pip, "wheel", "--disable-pip-version-check", "--no-deps", *pip_extra, "-w", str(out),
                f"{name}=={version}"])
    if proc.returncode != 0:
        raise WheelhouseError("E_SDIST_BUILD", f"{name}=={version} has no wheel and its sdist did not build:\n"
                              f"{proc.stderr[-2000:]}")
    wheels = list(out.glob("*.whl"))
    if len(wheels) != 1 or not wheels[0].name.endswith("-none-any.whl"):
        raise WheelhouseError(
            "E_SDIST_NOT_PURE",
            f"{name}=={version} has no wheel for the target and is not pure Python; "
            "provide a wheel built on the target's Python (cs_service_wheelhouse_src)",
        )
    # Flat find-links directory for pip; the per-name folder above only marks "already built".
    shutil.copy2(wheels[0], built / wheels[0].name)


def copy_project(project: Path, dest: Path) -> str:
    """Copy what a wheel build reads into `dest`; return the sha256 over those files (names and bytes)."""
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        raise WheelhouseError("E_PROJECT", f"{pyproject} not found")
    meta = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    where = meta.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("where", ["."])
    for name in PROJECT_FILES:
        if (project / name).is_file():
            shutil.copy2(project / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*", "build", "dist")
    for folder in where:
        if folder != ".":
            shutil.copytree(project / folder, dest / folder, ignore=ignore)
    digest = hashlib.sha256()
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


def build_project_wheel(pip: list[str], project: Path, cache: Path, pip_extra: list[str]) -> tuple[Path, bool]:
    """The jukics wheel from a clean copy of the current sources (no stale build/ or egg-info).

    The build is reproducible (fixed SOURCE_DATE_EPOCH), so the wheel is kept per hash of the sources:
    unchanged sources reuse it instead of paying for another isolated build.
    """
    src = Path(tempfile.mkdtemp(prefix="jukics-src."))
    try:
        src_hash = copy_project(project, src)
        out = cache / "project-wheels" / src_hash[:16]
        cached = sorted(out.glob("*.whl"))
        if len(cached) == 1:
            os.utime(out)
            return cached[0], False
        dist = Path(tempfile.mkdtemp(prefix="jukics-dist.", dir=cache))
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PYTHONDONTWRITEBYTECODE="1")
        proc = run([*pip, "wheel", "--disable-pip-version-check", "--no-deps", *pip_extra, "-w", str(dist),
                    str(src)], env=env)
        wheels = list(dist.glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            shutil.rmtree(dist, ignore_errors=True)
            raise WheelhouseError("E_PROJECT_BUILD", f"building the jukics wheel failed:\n{proc.stderr[-2000:]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        dist.rename(out)
        prune(out.parent)
        return out / wheels[0].name, True
    finally:
        shutil.rmtree(src, ignore_errors=True)


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o644, 0, 0, 0
    tar.addfile(info, io.BytesIO(data))


def make_bundle(wheels: list[Wheel], cache: Path) -> tuple[str, Path, bool]:
    names = sorted(w.name.lower().replace("-", "_") for w in wheels)
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise WheelhouseError("E_DUPLICATE", f"more than one wheel for: {', '.join(sorted(dupes))}")
    if "jukics" not in names:
        raise WheelhouseError("E_NO_JUKICS", "the wheelhouse has no jukics wheel")
    wheels = sorted(wheels, key=lambda w: w.path.name)
    sums = "".join(f"{w.sha256}  wheels/{w.path.name}\n" for w in wheels).encode()
    lock = "".join(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in wheels).encode()
    digest = hashlib.sha256(sums).hexdigest()
    bundle = cache / "bundles" / digest[:16]
    tar_path = bundle / "wheelhouse.tar"
    if tar_path.exists() and (bundle / "SHA256SUMS").read_bytes() == sums:
        os.utime(bundle)  # recently used: kept by the pruning below
        return digest, tar_path, False
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bundle.", dir=cache))
    try:
        with tarfile.open(work / "wheelhouse.tar", "w", format=tarfile.PAX_FORMAT) as tar:
            _tar_add(tar, "SHA256SUMS", sums)
            _tar_add(tar, "requirements.lock", lock)
            for w in wheels:
                _tar_add(tar, f"wheels/{w.path.name}", w.path.read_bytes())
        (work / "SHA256SUMS").write_bytes(sums)
        (work / "requirements.lock").write_bytes(lock)
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(bundle, ignore_errors=True)
        work.rename(bundle)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    prune(cache / "bundles")
    return digest, tar_path, True


def prune(parent: Path, keep: int = KEEP_BUNDLES) -> None:
    """Keep the `keep` most recently used entries of a cache folder."""
    dirs = sorted((d for d in parent.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for old in dirs[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def cmd_build(args: argparse.Namespace, target: Target) -> dict[str, object]:
    pip = [args.python, "-m", "pip"]
    cache = Path(args.cache)
    with locked(cache):
        deps, downloaded = download_dependencies(pip, Path(args.requirements), cache, target, args.pip_arg)
        project_wheel, built = build_project_wheel(pip, Path(args.project), cache, args.pip_arg)
        wheels = [parse_wheel(p) for p in sorted(deps.glob("*.whl"))]
        wheels = [w for w in wheels if w.name.lower() != "jukics"] + [parse_wheel(project_wheel)]
        digest, tar_path, created = make_bundle(wheels, cache)
        if args.export:
            export = Path(args.export)
            export.mkdir(parents=True, exist_ok=True)
            for w in wheels:
                shutil.copy2(w.path, export / w.path.name)
    return result(digest, tar_path, wheels, downloaded or built or created)


def cmd_bundle(args: argparse.Namespace, target: Target) -> dict[str, object]:
    source = Path(args.wheels)
    if not source.is_dir():
        raise WheelhouseError("E_SOURCE", f"{source}: not a directory")
    wheels = [parse_wheel(p) for p in sorted(source.glob("*.whl"))]
    for w in wheels:
        check_compatible(w, target)
    with locked(Path(args.cache)):
        digest, tar_path, created = make_bundle(wheels, Path(args.cache))
    return result(digest, tar_path, wheels, created)


def result(digest: str, tar_path: Path, wheels: list[Wheel], changed: bool) -> dict[str, object]:
    return {"digest": digest, "tar": str(tar_path), "changed": changed,
            "wheels": sorted(f"{w.name}=={w.version}" for w in wheels)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="offline wheelhouse for the jukics service")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "bundle"):
        p = sub.add_parser(name)
        p.add_argument("--cache", required=True, help="controller cache directory (e.g. /var/cache/jukics)")
        p.add_argument("--python-version", default="3.13", help="the TARGET's Python version (X.Y)")
        p.add_argument("--platform", action="append", help="wheel platform tags the target accepts (repeatable)")
        if name == "build":
            p.add_argument("--project", required=True, help="the jukics source tree (with pyproject.toml)")
            p.add_argument("--requirements", required=True, help="pinned runtime requirements (requirements/app.txt)")
            p.add_argument("--python", default=sys.executable, help="Python whose pip downloads and builds")
            p.add_argument("--pip-arg", action="append", default=[], help="extra pip argument, e.g. --index-url=URL")
            p.add_argument("--export", help="also copy the wheels here (a wheelhouse for an offline controller)")
        else:
            p.add_argument("--wheels", required=True, help="directory of ready wheels, jukics included")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        print(f"wheelhouse: E_TARGET: --python-version must be 3.X, got {args.python_version!r}", file=sys.stderr)
        return 2
    target = Target(args.python_version, tuple(args.platform or DEFAULT_PLATFORMS))
    try:
        out = cmd_build(args, target) if args.command == "build" else cmd_bundle(args, target)
    except WheelhouseError as exc:
        print(f"wheelhouse: {exc.code}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
