"""PostgreSQL backups (docs/backup.md "PostgreSQL"): pg_dump from one exported snapshot with the manifest's
counts and digests read in the same transaction, 送付先 payloads never in the archive, verify and the drill
in a scratch database that is always dropped, restore by swap (the live data intact on any failure),
purges re-applied after a restore, the escrow path, and every bad input refused. Against the throwaway
PostgreSQL 15 of conftest.py, with synthetic residents."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import psycopg
import pyrage
import pytest
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit" / "backup"))

from conftest import PG_BIN, PORT
from test_backup import CLIENT, MUNICIPALITY, TODAY, seeded_host, write_config

from jukics.backup import archive as bk
from jukics.backup import postgres as pg
from jukics.cli.main import main as cli_main
from jukics.config import load_config
from jukics.service import Service

pytestmark = pytest.mark.postgres

SOFUSAKI_PAYLOAD = b"SOFUSAKI-PG-PLAINTEXT-MARKER"
CARD_EVENT_PAYLOAD = b"CARD-EVENT-KEPT-MARKER"


def _hex(data: bytes) -> bytes:
    return data.hex().encode()  # how bytea appears in COPY text / pg_restore output (\x...)


@pytest.fixture
def appliance(tmp_path, db_url):
    """A migrated PostgreSQL appliance with residents, one 送付先 row (payload) and one card event."""
    escrow_file = tmp_path / "escrow.key"
    cfg, config, svc, people = seeded_host(tmp_path, escrow_file, residents=20, seed=7, database_url=db_url)
    with svc.engine.begin() as conn:
        for rid, kind, payload in (("s1", "sofusaki", SOFUSAKI_PAYLOAD), ("e1", "card_event", CARD_EVENT_PAYLOAD)):
            conn.execute(text("INSERT INTO card_messages (request_id, type, digest, received_at, delete_on, "
                              "payload_ct) VALUES (:r, :t, :d, '2026-11-01T00:00:00Z', '2099-01-01', :p)"),
                         {"r": rid, "t": kind, "d": b"\0" * 32, "p": payload})
    svc.engine.dispose()
    assert cli_main(["--config", str(cfg), "backup", "provision"]) == 0
    return tmp_path, cfg, config, escrow_file, people


def live_state(url: str) -> tuple[dict[str, int], dict[str, str]]:
    conn = pg.PgTarget.from_url(url).connect(autocommit=False)
    try:
        return pg.table_digests(conn, ())  # the raw rows, nothing erased
    finally:
        conn.close()


def databases(server) -> set[str]:
    with psycopg.connect(host=str(server["host"]), port=PORT, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def create(cfg: Path, capsys) -> Path:
    capsys.readouterr()
    assert cli_main(["--config", str(cfg), "backup", "create"]) == 0, capsys.readouterr().err
    return Path(json.loads(capsys.readouterr().out)["backup"])


def members(path: Path, escrow_file: Path) -> dict[str, bytes]:
    plain = pyrage.decrypt(path.read_bytes(), bk.load_identity_file(escrow_file))
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_create_writes_one_snapshot_dump_and_its_manifest(appliance, capsys, postgres_server):
    root, cfg, config, escrow_file, _ = appliance
    counts, digests = live_state(config.database_url)
    path = create(cfg, capsys)
    assert bk.looks_encrypted(path, (SOFUSAKI_PAYLOAD, _hex(SOFUSAKI_PAYLOAD), b"PGDMP"))
    got = members(path, escrow_file)
    assert set(got) == {"manifest.json", "manifest.mac", bk.ESCROW_MEMBER, "db.pgdump", "card_messages.copy"}
    manifest = json.loads(got["manifest.json"])
    assert manifest["database_kind"] == "postgresql" and manifest["format"] == bk.FORMAT
    assert manifest["digest_method"] == pg.DIGEST_PG and manifest["sofusaki_included"] is False
    assert manifest["row_counts"] == counts and manifest["row_counts"]["resident_versions"] > 0
    # every table but the erased one digests as the live rows; the erased one differs by the 送付先 payload only
    assert {t: d for t, d in manifest["record_digests"].items() if t != "card_messages"} == \
        {t: d for t, d in digests.items() if t != "card_messages"}
    assert manifest["record_digests"]["card_messages"] != digests["card_messages"]
    assert got["db.pgdump"].startswith(b"PGDMP")
    # the 送付先 payload is nowhere: not in the dump's data, not in the erased rows; the card event is kept
    (root / "db.pgdump").write_bytes(got["db.pgdump"])
    data_sql = subprocess.run([str(PG_BIN / "pg_restore"), "--data-only", "-f", "-", str(root / "db.pgdump")],
                              capture_output=True, check=True).stdout
    assert b"COPY public.resident_versions" in data_sql and b"COPY public.card_messages" not in data_sql
    for blob in (data_sql, got["db.pgdump"], got["card_messages.copy"]):
        assert _hex(SOFUSAKI_PAYLOAD) not in blob and SOFUSAKI_PAYLOAD not in blob
    assert _hex(CARD_EVENT_PAYLOAD) in got["card_messages.copy"]
    assert got["card_messages.copy"].count(b"\n") == 2  # both rows, the 送付先 one as a tombstone
    # the grep can fail: a plain pg_dump of the same database does carry the payload
    plain = subprocess.run([str(PG_BIN / "pg_dump"), "--data-only", "--table=card_messages",
                            f"--dbname={pg.PgTarget.from_url(config.database_url).conninfo()}"],
                           capture_output=True, check=True).stdout
    assert _hex(SOFUSAKI_PAYLOAD) in plain


def test_manifest_and_dump_describe_the_same_instant(appliance, monkeypatch, postgres_server):
    """A commit between the snapshot export and the digest pass is in neither the manifest nor the dump."""
    root, cfg, config, escrow_file, _ = appliance
    before, _ = live_state(config.database_url)
    real = pg.table_digests
    from jukics.sim.residents import generate_residents, resident_intake_items

    def write_then_digest(conn, never, **kw):
        svc = Service(config)
        svc.intake.today = lambda: TODAY
        extra = list(generate_residents(5, seed=99, municipality_code=MUNICIPALITY, today=TODAY))
        assert svc.intake.submit([i for p in extra for i in resident_intake_items(p)], client=CLIENT)["applied"] > 0
        svc.engine.dispose()
        return real(conn, never, **kw)

    monkeypatch.setattr(pg, "table_digests", write_then_digest)
    res = bk.create_backup(config.database_url, MUNICIPALITY, bk.BackupSettings.from_config(config.raw),
                           Service(config).keystore)
    monkeypatch.setattr(pg, "table_digests", real)
    after, _ = live_state(config.database_url)
    assert after["resident_versions"] > before["resident_versions"]  # the write did commit
    assert res.manifest["row_counts"] == before  # the manifest is the snapshot's
    assert cli_main(["--config", str(cfg), "backup", "verify", res.path.name]) == 0  # and so is the dump


def test_verify_drill_and_restore_roundtrip(appliance, capsys, postgres_server):
    root, cfg, config, escrow_file, people = appliance
    path = create(cfg, capsys)
    manifest = json.loads(members(path, escrow_file)["manifest.json"])
    dbs = databases(postgres_server)
    for extra in ([], ["--identity", str(escrow_file)]):
        capsys.readouterr()
        assert cli_main(["--config", str(cfg), "backup", "verify", *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["database_kind"] == "postgresql" and report["row_counts"] == manifest["row_counts"]
    assert cli_main(["--config", str(cfg), "backup", "drill"]) == 0
    assert "jukics_backup_drill_last_result 1.0" in (root / "textfile" / "jukics_backup_drill.prom").read_text()
    assert databases(postgres_server) == dbs  # every scratch database dropped
    assert not list((root / "backups").glob(".drill-*"))
    # the live data moves on after the backup; the restore brings back the backup's residents
    from jukics.sim.residents import generate_residents, resident_intake_items

    svc = Service(config)
    svc.intake.today = lambda: TODAY
    extra = list(generate_residents(4, seed=41, municipality_code=MUNICIPALITY, today=TODAY))
    assert svc.intake.submit([i for p in extra for i in resident_intake_items(p)], client=CLIENT)["applied"] > 0
    svc.engine.dispose()
    assert live_state(config.database_url)[0]["resident_versions"] > manifest["row_counts"]["resident_versions"]
    capsys.readouterr()
    assert cli_main(["--config", str(cfg), "backup", "restore", path.name]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["database_kind"] == "postgresql" and report["replaced_database"].endswith("z")
    counts, digests = live_state(config.database_url)
    assert counts["resident_versions"] == manifest["row_counts"]["resident_versions"]
    for table in ("resident_versions", "residents_current", "applied_requests"):
        assert digests[table] == manifest["record_digests"][table]
    assert counts["audit_log"] > manifest["row_counts"]["audit_log"]  # the restore itself is audited
    assert databases(postgres_server) == dbs  # the replaced database is dropped, no scratch left
    assert cli_main(["--config", str(cfg), "audit", "verify"]) == 0
    svc = Service(config)
    for p in people[:5]:
        assert svc.store.get_current(p["juminhyo_code"]) is not None  # decrypts under the same keys
    # the 送付先 payload did not come back; the card event did; new rows get fresh ids (sequences restored)
    with svc.engine.begin() as conn:
        rows = dict(conn.execute(text("SELECT request_id, payload_ct FROM card_messages")).all())
        assert rows["s1"] is None and bytes(rows["e1"]) == CARD_EVENT_PAYLOAD
        conn.execute(text("INSERT INTO card_messages (request_id, type, digest, received_at) "
                          "VALUES ('s2', 'sofusaki', :d, '2026-12-01T00:00:00Z')"), {"d": b"\1" * 32})
    svc.engine.dispose()
    assert cli_main(["--config", str(cfg), "backup", "create"]) == 0  # and the host backs up again
