"""Backups: roundtrip, both recipients decrypt, 送付先 absent, retention, bad input refused with the
live data untouched, no resurrection after restore, the drill and its textfile."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pyrage
import pytest

from jukics.backup import archive as bk
from jukics.cli.main import main as cli_main
from jukics.config import load_config
from jukics.service import Service

MUNICIPALITY = "142140"
CLIENT = "kizon.lab.jukics.example"
TODAY = dt.date(2026, 11, 1)
SOFUSAKI_PAYLOAD = b"SOFUSAKI-PLAINTEXT-MARKER"


def write_config(root: Path, escrow: str, municipality: str = MUNICIPALITY, db: str = "jukics.db",
                 database_url: str | None = None) -> Path:
    """A jukics.toml in `root`; `database_url` (PostgreSQL tests) instead of the SQLite file `db`."""
    cfg = root / f"jukics-{municipality}-{db}.toml"
    cfg.write_text(f"""
[cs]
municipality_code = "{municipality}"
environment = "development"
[database]
url = "{database_url or f'sqlite:///{root}/{db}'}"
[keystore]
backend = "dev"
dev_secret_file = "{root}/keys/dev-secret"
[intake]
listen = "127.0.0.1:18443"
cert_file = "/x"
key_file = "/x"
client_ca_file = "/x"
allowed_clients = ["{CLIENT}"]
[backup]
dir = "{root}/backups"
generations = 2
escrow_recipient = "{escrow}"
metrics_dir = "{root}/textfile"
""")
    return cfg


def seeded_host(root: Path, escrow_file: Path, *, residents: int, seed: int,
                database_url: str | None = None) -> tuple[Path, Any, Service, list]:
    """A migrated appliance in `root` with synthetic residents applied and an escrow identity kept in
    `escrow_file` (offline, in real life): (its jukics.toml, config, service, the residents).
    `database_url`: a PostgreSQL database instead of the SQLite file (tests/postgres)."""
    from jukics.sim.residents import generate_residents, resident_intake_items

    escrow = pyrage.x25519.Identity.generate()
    escrow_file.write_text(f"# escrow, kept offline\n{escrow}\n")
    cfg = write_config(root, str(escrow.to_public()), database_url=database_url)
    assert cli_main(["--config", str(cfg), "db", "upgrade"]) == 0
    config = load_config(cfg)
    svc = Service(config)
    svc.intake.today = lambda: TODAY
    people = list(generate_residents(residents, seed=seed, municipality_code=MUNICIPALITY, today=TODAY))
    out = svc.intake.submit([i for p in people for i in resident_intake_items(p)], client=CLIENT)
    assert out["applied"] > 0
    return cfg, config, svc, people


@pytest.fixture
def appliance(tmp_path):
    escrow_file = tmp_path / "escrow.key"
    cfg, config, svc, _ = seeded_host(tmp_path, escrow_file, residents=20, seed=3)
    with svc.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO card_messages (request_id, type, digest, received_at, delete_on, payload_ct) "
            "VALUES ('s1', 'sofusaki', ?, '2026-11-01T00:00:00Z', '2099-01-01', ?)",
            (b"\0" * 32, SOFUSAKI_PAYLOAD))
    svc.engine.dispose()
    assert cli_main(["--config", str(cfg), "backup", "provision"]) == 0
    return tmp_path, cfg, config, escrow_file


def live_digest(config) -> str:
    """The live data as rows (every table's count and record digest), whatever the WAL state."""
    conn = sqlite3.connect(config.database_url.removeprefix("sqlite:///"))
    try:
        return hashlib.sha256(json.dumps(bk.table_digests(conn), sort_keys=True).encode()).hexdigest()
    finally:
        conn.close()


def create(cfg: Path, capsys) -> Path:
    capsys.readouterr()
    assert cli_main(["--config", str(cfg), "backup", "create"]) == 0
    return Path(json.loads(capsys.readouterr().out)["backup"])


def counts(config) -> dict[str, int]:
    conn = sqlite3.connect(config.database_url.removeprefix("sqlite:///"))
    try:
        return bk.table_digests(conn)[0]
    finally:
        conn.close()


def test_roundtrip_both_recipients_and_no_sofusaki(appliance, capsys):
    root, cfg, config, escrow_file = appliance
    before = counts(config)
    path = create(cfg, capsys)
    data = path.read_bytes()
    assert data.startswith(bk.AGE_MAGIC) and bk.SQLITE_MAGIC not in data and SOFUSAKI_PAYLOAD not in data
    assert bk.looks_encrypted(path, (SOFUSAKI_PAYLOAD,))
    # the escrow identity alone decrypts it (a host without the TPM), and so does the sealed one
    escrow = bk.load_identity_file(escrow_file)
    own = bk.unseal_identity(root / "backups" / "identity.sealed", Service(config).keystore)
    for ids in (escrow, [own]):
        plain = pyrage.decrypt(data, ids)
        assert plain[257:262] == b"ustar"  # a tar inside
    tar_path = root / "plain.tar"
    tar_path.write_bytes(pyrage.decrypt(data, escrow))
    with tarfile.open(tar_path) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        snap = tar.extractfile("db.sqlite").read()
    assert manifest["municipality_code"] == MUNICIPALITY and manifest["sofusaki_included"] is False
    assert manifest["row_counts"]["resident_versions"] == before["resident_versions"] > 0
    assert SOFUSAKI_PAYLOAD not in snap  # erased and zeroed, not left in a free page
    assert cli_main(["--config", str(cfg), "backup", "verify", "--identity", str(escrow_file)]) == 0
    assert cli_main(["--config", str(cfg), "backup", "verify"]) == 0
    # restore with the escrow key: the data comes back
    Path(config.database_url.removeprefix("sqlite:///")).unlink()
    assert cli_main(["--config", str(cfg), "backup", "restore", "--identity", str(escrow_file)]) == 0
    after = counts(config)
    assert after["resident_versions"] == before["resident_versions"]
    assert after["audit_log"] > before["audit_log"]  # the restore itself is audited
    conn = sqlite3.connect(config.database_url.removeprefix("sqlite:///"))
    try:  # which archive was restored reads in clear (file name and time are not personal data)
        query = json.loads(conn.execute("SELECT query FROM audit_log WHERE action = 'backup.restore'").fetchone()[0])
    finally:
        conn.close()
    assert query == {"backup": path.name, "created_at": manifest["created_at"], "escrow": False}
    assert cli_main(["--config", str(cfg), "audit", "verify"]) == 0


def test_retention_and_metrics(appliance, capsys):
    root, cfg, config, _ = appliance
    names = set()
    for i in range(3):
        settings = bk.BackupSettings.from_config(config.raw)
        res = bk.create_backup(config.database_url, MUNICIPALITY, settings, Service(config).keystore,
                               now=dt.datetime(2026, 12, 1, 0, 0, i, tzinfo=dt.UTC))
        names.add(res.path.name)
    kept = [p.name for p in bk.list_backups(settings)]
    assert len(kept) == 2 and kept == sorted(names)[1:]
    create(cfg, capsys)
    prom = (root / "textfile" / "jukics_backup.prom").read_text()
    assert "jukics_backup_last_result 1.0" in prom and "jukics_backup_generations 2.0" in prom
    assert bk.previous_value(root / "textfile", "jukics_backup", "jukics_backup_last_success_timestamp_seconds") > 0
    assert cli_main(["--config", str(cfg), "backup", "drill"]) == 0
    drill = (root / "textfile" / "jukics_backup_drill.prom").read_text()
    assert "jukics_backup_drill_last_result 1.0" in drill and "jukics_backup_drill_duration_seconds" in drill
    assert cli_main(["--config", str(cfg), "purge", "--metrics-dir", str(root / "textfile")]) == 0
    assert "jukics_purge_last_result 1.0" in (root / "textfile" / "jukics_purge.prom").read_text()


def _reencrypt(path: Path, escrow_file: Path, own_public: str, edit) -> None:
    """Decrypt, let ``edit`` change the tar members, re-encrypt to the same public recipients."""
    ids = bk.load_identity_file(escrow_file)
    with tarfile.open(fileobj=__import__("io").BytesIO(pyrage.decrypt(path.read_bytes(), ids))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    edit(members)
    import io
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    recips = [pyrage.x25519.Recipient.from_str(own_public), ids[0].to_public()]
    path.write_bytes(pyrage.encrypt(buf.getvalue(), recips))


#: the damage both database kinds must refuse alike (tests/postgres/test_postgres_backup.py uses it too)
COMMON_DAMAGE = ("truncated", "corrupted", "wrong_key", "tampered_manifest")


def damage_archive(case: str, path: Path, root: Path, escrow_file: Path, own_public: str) -> list[str] | None:
    """Damage the archive at ``path`` as ``case`` says; the restore's identity arguments when they change."""
    data = path.read_bytes()
    if case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "corrupted":
        path.write_bytes(data[:-100] + bytes(b ^ 0xFF for b in data[-100:-90]) + data[-90:])
    elif case == "wrong_key":
        other = root / "other.key"
        other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
        return ["--identity", str(other)]
    elif case == "tampered_manifest":
        def edit(m):
            manifest = json.loads(m["manifest.json"])
            manifest["row_counts"]["resident_versions"] += 1
            m["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
        _reencrypt(path, escrow_file, own_public, edit)
    else:
        raise ValueError(case)
    return None


@pytest.mark.parametrize("case", ["truncated", "corrupted", "wrong_key", "tampered_manifest", "tampered_db",
                                  "other_municipality", "not_age"])
def test_bad_input_is_refused_and_live_data_untouched(appliance, capsys, case):
    root, cfg, config, escrow_file = appliance
    path = create(cfg, capsys)
    own_public = str(bk.unseal_identity(root / "backups" / "identity.sealed", Service(config).keystore).to_public())
    identity = ["--identity", str(escrow_file)]
    expected = {"truncated": "E_BACKUP_CORRUPT", "corrupted": "E_BACKUP_CORRUPT", "wrong_key": "E_BACKUP_WRONG_KEY",
                "tampered_manifest": "E_BACKUP_MANIFEST", "tampered_db": "E_BACKUP_MANIFEST",
                "other_municipality": "E_BACKUP_MUNICIPALITY", "not_age": "E_BACKUP_CORRUPT"}[case]
    target_cfg = cfg
    if case in COMMON_DAMAGE:
        identity = damage_archive(case, path, root, escrow_file, own_public) or identity
    elif case == "tampered_db":
        def edit(m):
            m["db.sqlite"] = m["db.sqlite"][:-1] + b"\x01"
        _reencrypt(path, escrow_file, own_public, edit)
    elif case == "other_municipality":
        # the same key store and escrow, but a CS of another municipality
        escrow_pub = str(bk.load_identity_file(escrow_file)[0].to_public())
        target_cfg = write_config(root, escrow_pub, municipality="131016", db="other.db")
    elif case == "not_age":
        path.write_bytes(b"SQLite format 3\x00" + b"\0" * 100)
    target = load_config(target_cfg)
    assert cli_main(["--config", str(target_cfg), "db", "upgrade"]) == 0
    before = live_digest(target)
    capsys.readouterr()
    rc = cli_main(["--config", str(target_cfg), "backup", "restore", str(path), *identity])
    err = capsys.readouterr().err
    assert rc == 1 and expected in err, err
    assert live_digest(target) == before
    assert not list(Path(root).glob(".restore-*"))  # no scratch left behind
    # the drill reports the failure as a metric
    if case not in ("other_municipality",):
        assert cli_main(["--config", str(cfg), "backup", "drill", *identity]) == 1
        assert "jukics_backup_drill_last_result 0.0" in (root / "textfile" / "jukics_backup_drill.prom").read_text()


def test_restore_reapplies_deletions_after_the_backup(appliance, capsys):
    """A 送付先 row due for deletion and a 消除者 past retention are not resurrected by a restore."""
    _root, cfg, config, escrow_file = appliance
    path = create(cfg, capsys)
    # Restore far in the future: everything the backup holds is then past its retention (150 years)
    # and the 送付先 row past its deletion day, so the re-applied purge must delete it before the copy goes live.
    from jukics.store import retention

    far = dt.datetime(2300, 1, 1, tzinfo=dt.UTC)
    svc = Service(config)
    report = bk.restore_backup(path, bk.load_identity_file(escrow_file), config, svc.keystore, clock=lambda: far)
    purged = report["purged_after_restore"]
    assert sum(v for k, v in purged.items() if isinstance(v, int)) > 0, purged
    assert retention.RETENTION_YEARS == 150
    c = counts(config)
    with sqlite3.connect(config.database_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT count(*) FROM card_messages WHERE payload_ct IS NOT NULL "
                            "AND type = 'sofusaki'").fetchone()[0] == 0
    assert c["purge_log"] >= 1


def test_config_fails_closed(tmp_path):
    with pytest.raises(bk.BackupError, match="E_BACKUP_CONFIG"):
        bk.BackupSettings.from_config({})
    good = {"dir": "/var/backups/jukics", "escrow_recipient": str(pyrage.x25519.Identity.generate().to_public())}
    assert bk.BackupSettings.from_config({"backup": good}).generations == 7
    for bad in ({"escrow_recipient": "age1nope"}, {"generations": 0}, {"encrypt": False}, {"dir": "rel"}):
        with pytest.raises(bk.BackupError, match="E_BACKUP_CONFIG"):
            bk.BackupSettings.from_config({"backup": {**good, **bad}})
