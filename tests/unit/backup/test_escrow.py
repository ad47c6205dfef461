"""Data-key escrow: a backup restores on a host whose key store (TPM) is new, with only the escrow
identity; the appliance identity of another key store, a wrong escrow key and a swapped escrow member
are refused and leave the live database and the host's key store untouched."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pyrage
import pytest
from test_backup import MUNICIPALITY, live_digest, seeded_host, write_config

from jukics.backup import archive as bk
from jukics.cli.main import main as cli_main
from jukics.config import load_config
from jukics.keystore.base import SecretKeyStore
from jukics.service import Service


@pytest.fixture
def old_host(tmp_path):
    """The appliance whose TPM will die: residents, one backup, the escrow identity kept offline."""
    root = tmp_path / "old"
    root.mkdir()
    escrow_file = tmp_path / "escrow.key"
    cfg, config, svc, people = seeded_host(root, escrow_file, residents=15, seed=5)
    svc.engine.dispose()
    assert cli_main(["--config", str(cfg), "backup", "provision"]) == 0
    settings = bk.BackupSettings.from_config(config.raw)
    res = bk.create_backup(config.database_url, MUNICIPALITY, settings, svc.keystore)
    codes = {p["juminhyo_code"]: Service(config).store.get_current(p["juminhyo_code"]) for p in people}
    escrow = bk.load_identity_file(escrow_file)[0]
    return root, config, res.path, escrow_file, escrow, codes


@pytest.fixture
def new_host(tmp_path, old_host):
    """A host with a NEW key store, converged as site.yml does (db upgrade, backup provision), empty."""
    _, _, path, _, escrow, _ = old_host
    root = tmp_path / "new"
    root.mkdir()
    cfg = write_config(root, str(escrow.to_public()))
    assert cli_main(["--config", str(cfg), "db", "upgrade"]) == 0
    assert cli_main(["--config", str(cfg), "backup", "provision"]) == 0
    (root / "backups").mkdir(exist_ok=True)
    copy = root / "backups" / path.name
    shutil.copy(path, copy)
    return root, cfg, load_config(cfg), copy


def _state(root: Path, config) -> tuple[str, bytes, bytes]:
    return live_digest(config), (root / "keys" / "dev-secret").read_bytes(), \
        (root / "backups" / "identity.sealed").read_bytes()


def _restore(cfg: Path, capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli_main(["--config", str(cfg), "backup", "restore", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_escrow_member_opens_only_with_the_escrow_identity(old_host):
    root, config, path, escrow_file, _, _ = old_host
    ids = bk.load_identity_file(escrow_file)
    with tarfile.open(fileobj=io.BytesIO(pyrage.decrypt(path.read_bytes(), ids))) as tar:
        blob = tar.extractfile(bk.ESCROW_MEMBER).read()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    keystore = Service(config).keystore
    secret = keystore.escrow_secret()
    assert secret not in blob and manifest["format"] == bk.FORMAT
    assert manifest["keystore_fingerprint"] == keystore.fingerprint()
    assert manifest["keystore_escrow"]["recipient"] == str(ids[0].to_public())
    assert bk.open_escrow(blob, ids).data_key() == keystore.data_key()
    own = bk.unseal_identity(root / "backups" / "identity.sealed", keystore)
    with pytest.raises(bk.BackupError, match="E_BACKUP_ESCROW"):
        bk.open_escrow(blob, [own])  # the appliance identity cannot open the escrow


def test_escrow_restore_on_a_fresh_host_recovers_the_keys_and_the_residents(old_host, new_host, capsys):
    old_root, old_config, _, escrow_file, _, codes = old_host
    root, cfg, config, path = new_host
    old_secret = (old_root / "keys" / "dev-secret").read_bytes()
    new_secret = (root / "keys" / "dev-secret").read_bytes()
    assert old_secret != new_secret
    fp = Service(old_config).keystore.fingerprint()
    rc, out, err = _restore(cfg, capsys, path.name, "--escrow-identity", str(escrow_file),
                            "--expect-fingerprint", fp)
    assert rc == 0, err
    report = json.loads(out)
    assert report["keystore"] == "replaced" and report["keystore_fingerprint"] == fp
    assert report["backup_identity"] == "provisioned"
    # the host's key store now holds the escrowed secret; its own old one is kept aside, not deleted
    assert (root / "keys" / "dev-secret").read_bytes() == old_secret
    assert Path(report["replaced_blob_kept_as"]).read_bytes() == new_secret
    svc = Service(config)
    for code, record in codes.items():
        assert svc.store.get_current(code) == record  # the fields decrypt under the recovered data key
    assert cli_main(["--config", str(cfg), "audit", "verify"]) == 0
    # the host backs up again, to its new sealed identity and the escrow key
    assert cli_main(["--config", str(cfg), "backup", "create"]) == 0
    assert cli_main(["--config", str(cfg), "backup", "verify"]) == 0
    assert cli_main(["--config", str(cfg), "backup", "verify", "--escrow-identity", str(escrow_file)]) == 0


@pytest.mark.parametrize("case", ["own_identity", "old_sealed_identity", "escrow_as_plain_identity",
                                  "wrong_escrow", "wrong_fingerprint", "swapped_escrow_member"])
def test_refusals_on_a_fresh_host_leave_everything_untouched(old_host, new_host, capsys, case):
    _, _, _, escrow_file, escrow, _ = old_host
    old_root = old_host[0]
    root, cfg, config, path = new_host
    args: list[str] = [path.name]
    expected = {"own_identity": "E_BACKUP_WRONG_KEY", "old_sealed_identity": "E_BACKUP_IDENTITY",
                "escrow_as_plain_identity": "E_BACKUP_MANIFEST", "wrong_escrow": "E_BACKUP_WRONG_KEY",
                "wrong_fingerprint": "E_BACKUP_ESCROW", "swapped_escrow_member": "E_BACKUP_MANIFEST"}[case]
    if case == "old_sealed_identity":
        # the old appliance's sealed identity copied over: it is sealed under the dead TPM's key
        shutil.copy(old_root / "backups" / "identity.sealed", root / "backups" / "identity.sealed")
    elif case == "escrow_as_plain_identity":
        args += ["--identity", str(escrow_file)]
    elif case == "wrong_escrow":
        other = root.parent / "other.key"
        other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
        args += ["--escrow-identity", str(other)]
    elif case == "wrong_fingerprint":
        args += ["--escrow-identity", str(escrow_file), "--expect-fingerprint", "00" * 16]
    elif case == "swapped_escrow_member":
        # someone with only the public escrow recipient puts another secret in the escrow member
        ids = bk.load_identity_file(escrow_file)
        with tarfile.open(fileobj=io.BytesIO(pyrage.decrypt(path.read_bytes(), ids))) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        members[bk.ESCROW_MEMBER] = pyrage.encrypt(bk.ESCROW_MAGIC + b"\x07" * 32, [escrow.to_public()])
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        path.write_bytes(pyrage.encrypt(buf.getvalue(), [escrow.to_public()]))
        args += ["--escrow-identity", str(escrow_file)]
    before = _state(root, config)
    rc, _, err = _restore(cfg, capsys, *args)
    assert rc == 1 and expected in err, err
    if case == "own_identity":
        assert "--escrow-identity" in err  # says what to do
    if case == "escrow_as_plain_identity":
        assert "another key store" in err and "--escrow-identity" in err
    assert _state(root, config) == before
    assert not list(root.glob(".restore-*")) and not list((root / "keys").glob("*.adopt-*"))


def test_secret_key_store_and_adopt_are_strict(tmp_path):
    from jukics.keystore import KeyStoreError
    from jukics.keystore.dev import DevKeyStore

    with pytest.raises(KeyStoreError):
        SecretKeyStore(b"short")
    ks = DevKeyStore(tmp_path / "k" / "secret")
    secret = SecretKeyStore(b"\x01" * 32)
    assert ks.adopt_secret(secret.escrow_secret(), "s1") == ("sealed", None)
    assert ks.data_key() == secret.data_key() and ks.fingerprint() == secret.fingerprint()
    assert ks.adopt_secret(b"\x01" * 32, "s2") == ("unchanged", None)
    assert (tmp_path / "k" / "secret").stat().st_mode & 0o077 == 0

