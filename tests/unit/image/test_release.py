"""Signing and verifying an image release with a throwaway GnuPG key made at run time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from jukics.image import release
from jukics.image.manifest import sha256_file

AGENTS: list[Path] = []


@pytest.fixture(autouse=True)
def _stop_agents():
    yield
    for home in AGENTS:  # key generation starts a gpg-agent per home: stop it with the test
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
    AGENTS.clear()


def make_key(home: Path, name: str) -> str:
    home.mkdir(mode=0o700)
    AGENTS.append(home)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--passphrase", "", "--quick-gen-key",
                    f"{name} <{name}@release.invalid>", "ed25519", "sign", "1d"], check=True, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--with-colons", "--list-secret-keys"],
                         check=True, capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def export(home: Path, fpr: str, to: Path) -> Path:
    to.write_bytes(subprocess.run(["gpg", "--batch", "--homedir", str(home), "--export", fpr],
                                  check=True, capture_output=True).stdout)
    return to


@pytest.fixture
def signed(tmp_path, monkeypatch):
    home = tmp_path / "gnupg"
    fpr = make_key(home, "jukics-release")
    monkeypatch.setenv("GNUPGHOME", str(home))
    folder = tmp_path / "image"
    folder.mkdir()
    for name, data in (("jukics-appliance.qcow2", b"qcow2" * 100), ("vmlinuz", b"kernel")):
        (folder / name).write_bytes(data)
    manifest = {"artifacts": {p.name: {"sha256": sha256_file(p)} for p in sorted(folder.iterdir())}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert release.main(["sign", str(folder), "--key", fpr]) == 0
    return folder, export(home, fpr, tmp_path / "release-key.gpg"), tmp_path


def test_a_signed_release_verifies(signed, capsys):
    folder, keyring, _ = signed
    assert (folder / "manifest.json.sig").read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    assert release.main(["verify", str(folder), "--keyring", str(keyring)]) == 0
    assert "OK: 2 artifacts match the manifest, signature good" in capsys.readouterr().out


def test_a_changed_artifact_an_extra_file_and_a_missing_one_are_named(signed, capsys):
    folder, keyring, _ = signed
    (folder / "vmlinuz").write_bytes(b"another kernel")
    (folder / "jukics-appliance.qcow2").unlink()
    (folder / "backdoor.sh").write_text("#!/bin/sh\n")
    assert release.main(["verify", str(folder), "--keyring", str(keyring)]) == 1
    out = capsys.readouterr().out
    assert "BAD vmlinuz: sha256 differs" in out and "BAD jukics-appliance.qcow2: missing" in out
    assert "BAD backdoor.sh: not in the manifest" in out


def test_an_edited_manifest_fails_the_signature(signed, capsys):
    folder, keyring, _ = signed
    # the attacker replaces an artifact and its hash: the hashes agree, the signature does not
    (folder / "vmlinuz").write_bytes(b"evil kernel")
    doc = json.loads((folder / "manifest.json").read_text())
    doc["artifacts"]["vmlinuz"]["sha256"] = sha256_file(folder / "vmlinuz")
    (folder / "manifest.json").write_text(json.dumps(doc))
    assert release.main(["verify", str(folder), "--keyring", str(keyring)]) == 1
    assert "not a good signature by the release key" in capsys.readouterr().out


def test_another_key_or_no_signature_is_refused(signed, capsys):
    folder, _, tmp = signed
    other_home = tmp / "other"
    other = export(other_home, make_key(other_home, "someone-else"), tmp / "other-key.gpg")
    assert release.main(["verify", str(folder), "--keyring", str(other)]) == 1
    (folder / "manifest.json.sig").unlink()
    assert release.main(["verify", str(folder), "--keyring", str(other)]) == 1
    assert "missing, but a release key was given" in capsys.readouterr().out
    assert release.main(["verify", str(folder)]) == 0  # hashes only, and it says so


def test_signing_with_an_unknown_key_fails_and_leaves_no_signature(signed, capsys):
    folder, _, _ = signed
    (folder / "manifest.json.sig").unlink()
    assert release.main(["sign", str(folder), "--key", "0" * 40]) == 1
    assert not (folder / "manifest.json.sig").exists()


def test_no_manifest_is_a_usage_error(tmp_path):
    assert release.main(["verify", str(tmp_path)]) == 2
    assert os.listdir(tmp_path) == []
