"""Two builds from the same inputs give the same package set: `manifest --compare` proves it or names
what differs."""

from __future__ import annotations

import json
from pathlib import Path

from jukics.image import manifest as m

PACKAGES = "nftables\t1.1.3-1\tamd64\nsystemd\t257.9-1~deb13u1\tamd64\npython3\t3.13.5-1\tamd64\n"


def build(tmp: Path, name: str, packages: str, roles: dict[str, str] | None = None, built_at: float = 0) -> Path:
    doc = m.build_manifest(m.parse_packages(packages), {"jukics-appliance.qcow2": name * 8},
                           roles or {"firewall": "abc"}, mirror="http://deb.example", command="make appliance-image",
                           commit="c0ffee", dirty=False, built_at=built_at)
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_same_package_set_passes_although_dates_and_artifact_hashes_differ(tmp_path, capsys):
    a = build(tmp_path, "a", PACKAGES, built_at=0)
    b = build(tmp_path, "b", "".join(reversed(PACKAGES.splitlines(keepends=True))), built_at=3600)
    assert m.main(["--compare", str(a), str(b)]) == 0
    assert "same package set: 3 / 3 packages" in capsys.readouterr().out


def test_a_changed_added_or_removed_package_and_a_changed_role_are_named(tmp_path, capsys):
    a = build(tmp_path, "a", PACKAGES)
    b = build(tmp_path, "b", PACKAGES.replace("1.1.3-1", "1.1.3-2").replace("python3\t3.13.5-1\tamd64\n", "")
              + "zstd\t1.5.7+dfsg-1\tamd64\n", roles={"firewall": "def"})
    assert m.main(["--compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "package nftables:amd64: 1.1.3-1 != 1.1.3-2" in out
    assert "package python3:amd64 3.13.5-1 only in the first build" in out
    assert "package zstd:amd64 1.5.7+dfsg-1 only in the second build" in out
    assert "role firewall: abc != def" in out
    assert "DIFFERENT package set" in out


def test_an_edited_digest_is_caught(tmp_path):
    a, b = build(tmp_path, "a", PACKAGES), build(tmp_path, "b", PACKAGES)
    doc = json.loads(b.read_text())
    doc["package_set_sha256"] = "0" * 64
    b.write_text(json.dumps(doc))
    assert m.main(["--compare", str(a), str(b)]) == 1


def test_usage_error(capsys):
    assert m.main(["--compare", "only-one.json"]) == 2
