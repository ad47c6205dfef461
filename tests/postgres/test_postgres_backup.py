"""PostgreSQL backups (docs/backup.md "PostgreSQL"): pg_dump from one exported snapshot with the manifest's
counts and digests read in the same transaction, 送付先 payloads never in the archive, verify and the drill
in a scratch database that is always dropped, restore by swap (the live data intact on any failure),
purges re-applied after a restore, the escrow path, and every bad input refused. Against the throwaway
PostgreSQL 15 of conftest.py, with synthetic residents."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import psycopg
import pyrage
import pytest
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit" / "backup"))

from test_backup import (
    CLIENT,
    COMMON_DAMAGE,
    MUNICIPALITY,
    TODAY,
    _reencrypt,
    damage_archive,
    live_digest,
    seeded_host,
    write_config,
)

from jukics.backup import archive as bk
from jukics.backup import postgres as pg
from jukics.cli.main import main as cli_main
from jukics.config import load_config
from jukics.service import Service

pytestmark = pytest.mark.postgres

# as in conftest.py (not imported from it: another test dir's conftest may hold that module name)
PG_BIN = Path(os.environ.get("JUKICS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PORT = 5432

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
    leaked = root / "leaked.age"  # an "archive" that carries a plaintext dump is not taken for encrypted
    leaked.write_bytes(bk.AGE_MAGIC + b"x" * 100 + got["db.pgdump"][:200])
    assert not bk.looks_encrypted(leaked)
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
    _root, cfg, config, _escrow_file, _ = appliance
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


@pytest.fixture
def other_db(postgres_server):
    """A second empty database on the same server (another host's, or another municipality's)."""
    name = f"o_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=str(postgres_server["host"]), port=PORT, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@/{name}?host={postgres_server['host']}&port={PORT}"
    with psycopg.connect(host=str(postgres_server["host"]), port=PORT, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _own_public(root: Path, config) -> str:
    return str(bk.unseal_identity(root / "backups" / "identity.sealed", Service(config).keystore).to_public())


CASES = {"truncated": "E_BACKUP_CORRUPT", "corrupted": "E_BACKUP_CORRUPT", "not_age": "E_BACKUP_CORRUPT",
         "wrong_key": "E_BACKUP_WRONG_KEY", "tampered_manifest": "E_BACKUP_MANIFEST",
         "tampered_dump": "E_BACKUP_MANIFEST", "tampered_erased_rows": "E_BACKUP_MANIFEST",
         "sofusaki_smuggled_in": "E_BACKUP_MANIFEST", "other_municipality": "E_BACKUP_MUNICIPALITY",
         "sqlite_archive": "E_BACKUP_KIND"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_and_live_data_untouched(appliance, capsys, case, postgres_server, other_db):
    root, cfg, config, escrow_file, _ = appliance
    path = create(cfg, capsys)
    identity = ["--identity", str(escrow_file)]
    target_cfg = cfg
    keystore = Service(config).keystore

    def remac(m):  # someone holding this key store (the worst case): the MAC is valid again
        m["manifest.mac"] = bk.manifest_mac(m["manifest.json"], keystore).encode()

    if case in COMMON_DAMAGE:
        identity = damage_archive(case, path, root, escrow_file, _own_public(root, config)) or identity
    elif case == "not_age":
        path.write_bytes(b"PGDMP\x01\x0e\x00\x04\x08\x01" + b"\0" * 100)
    elif case == "tampered_dump":
        def edit(m):
            m["db.pgdump"] = m["db.pgdump"][:-1] + bytes([m["db.pgdump"][-1] ^ 1])
        _reencrypt(path, escrow_file, _own_public(root, config), edit)
    elif case == "tampered_erased_rows":
        def edit(m):
            m["card_messages.copy"] += b"9\tx9\tsofusaki\t\\N\t\\\\x00\t2026\t\\N\t\\N\t\\N\t\\N\n"
        _reencrypt(path, escrow_file, _own_public(root, config), edit)
    elif case == "sofusaki_smuggled_in":
        # the 送付先 payload put back into the erased rows, with hash and MAC made to match: the check of
        # the restored copy still finds it
        def edit(m):
            lines = m["card_messages.copy"].split(b"\n")
            fixed = []
            for ln in lines:
                if b"\tsofusaki\t" in ln:
                    cols = ln.split(b"\t")
                    cols[-1] = b"\\\\x" + _hex(SOFUSAKI_PAYLOAD)
                    ln = b"\t".join(cols)
                fixed.append(ln)
            m["card_messages.copy"] = b"\n".join(fixed)
            manifest = json.loads(m["manifest.json"])
            manifest["erased_members"]["card_messages.copy"] = hashlib.sha256(m["card_messages.copy"]).hexdigest()
            m["manifest.json"] = json.dumps(manifest, sort_keys=True, ensure_ascii=False).encode()
            remac(m)
        _reencrypt(path, escrow_file, _own_public(root, config), edit)
    elif case == "other_municipality":
        escrow_pub = str(bk.load_identity_file(escrow_file)[0].to_public())
        target_cfg = write_config(root, escrow_pub, municipality="131016", db="other", database_url=other_db)
        assert cli_main(["--config", str(target_cfg), "db", "upgrade"]) == 0
    elif case == "sqlite_archive":
        sq = root / "sqlite-host"
        sq.mkdir()
        sq_cfg, _sq_config, sq_svc, _ = seeded_host(sq, sq / "escrow.key", residents=3, seed=2)
        sq_svc.engine.dispose()
        assert cli_main(["--config", str(sq_cfg), "backup", "provision"]) == 0
        sq_path = create(sq_cfg, capsys)
        path = root / "backups" / sq_path.name
        path.write_bytes(sq_path.read_bytes())
        identity = ["--identity", str(sq / "escrow.key")]
    target = load_config(target_cfg)
    before, dbs = live_state(target.database_url), databases(postgres_server)
    capsys.readouterr()
    rc = cli_main(["--config", str(target_cfg), "backup", "restore", str(path), *identity])
    err = capsys.readouterr().err
    assert rc == 1 and CASES[case] in err, err
    if case == "sofusaki_smuggled_in":
        assert "送付先情報" in err  # found in the loaded copy, not by a hash (hash and MAC were made to match)
    assert live_state(target.database_url) == before
    assert databases(postgres_server) == dbs  # the scratch database is gone too
    assert not list((root / "backups").glob(".restore-*"))
    if case != "other_municipality":
        assert cli_main(["--config", str(cfg), "backup", "drill", *identity]) == 1
        assert "jukics_backup_drill_last_result 0.0" in (root / "textfile" / "jukics_backup_drill.prom").read_text()
        assert databases(postgres_server) == dbs and not list((root / "backups").glob(".drill-*"))


def test_a_postgresql_archive_is_refused_by_a_sqlite_host(appliance, capsys, tmp_path):
    _root, cfg, _config, escrow_file, _ = appliance
    path = create(cfg, capsys)
    sq = tmp_path / "sqlite-host"
    sq.mkdir()
    sq_cfg, sq_config, sq_svc, _ = seeded_host(sq, sq / "escrow.key", residents=3, seed=2)
    sq_svc.engine.dispose()
    before = live_digest(sq_config)
    capsys.readouterr()
    rc = cli_main(["--config", str(sq_cfg), "backup", "restore", str(path), "--identity", str(escrow_file)])
    err = capsys.readouterr().err
    assert rc == 1 and "E_BACKUP_KIND" in err and "postgresql" in err, err
    assert live_digest(sq_config) == before and not list(sq.glob(".restore-*"))


def test_restore_refuses_while_the_database_is_in_use(appliance, capsys, postgres_server):
    _root, cfg, config, _escrow_file, _ = appliance
    path = create(cfg, capsys)
    before, dbs = live_state(config.database_url), databases(postgres_server)
    with pg.PgTarget.from_url(config.database_url).connect():  # the service, still running
        capsys.readouterr()
        assert cli_main(["--config", str(cfg), "backup", "restore", path.name]) == 1
        assert "E_BACKUP_IN_USE" in capsys.readouterr().err
    assert live_state(config.database_url) == before and databases(postgres_server) == dbs


def test_a_failure_inside_the_swap_leaves_the_live_database_as_it_was(appliance, capsys, postgres_server,
                                                                      monkeypatch):
    """The first rename (live -> aside) succeeds inside the transaction, the second fails: the rollback
    gives the live database its name back, with its data; the restored copy is dropped."""
    _root, cfg, config, escrow_file, _ = appliance
    path = create(cfg, capsys)
    from jukics.sim.residents import generate_residents, resident_intake_items

    svc = Service(config)
    svc.intake.today = lambda: TODAY
    extra = list(generate_residents(3, seed=77, municipality_code=MUNICIPALITY, today=TODAY))
    assert svc.intake.submit([i for p in extra for i in resident_intake_items(p)], client=CLIENT)["applied"] > 0
    svc.engine.dispose()
    before, dbs = live_state(config.database_url), databases(postgres_server)
    real_swap = pg.swap
    held = []

    def swap_with_the_copy_in_use(live_url, scratch_url, stamp):
        held.append(pg.PgTarget.from_url(scratch_url).connect())  # the second rename will fail
        return real_swap(live_url, scratch_url, stamp)

    monkeypatch.setattr(pg, "swap", swap_with_the_copy_in_use)
    with pytest.raises(bk.BackupError, match="E_BACKUP_IN_USE") as refused:
        bk.restore_backup(path, bk.load_identity_file(escrow_file), config, Service(config).keystore)
    # it was the SECOND rename that failed (the copy in use): the first one had gone through
    assert "database jukics_restore_" in refused.value.message
    for conn in held:
        conn.close()
    assert live_state(config.database_url) == before  # the newer residents are still there
    assert databases(postgres_server) == dbs


def test_restore_reapplies_deletions_after_the_backup(appliance, capsys):
    """A 消除者 and history past retention are not resurrected: the purge runs on the copy before the swap."""
    _root, cfg, config, escrow_file, _ = appliance
    path = create(cfg, capsys)
    far = dt.datetime(2300, 1, 1, tzinfo=dt.UTC)
    report = bk.restore_backup(path, bk.load_identity_file(escrow_file), config, Service(config).keystore,
                               clock=lambda: far)
    purged = report["purged_after_restore"]
    assert sum(v for k, v in purged.items() if isinstance(v, int)) > 0, purged
    counts, _ = live_state(config.database_url)
    assert counts["purge_log"] >= 1
    with pg.PgTarget.from_url(config.database_url).connect() as conn:
        assert conn.execute("SELECT count(*) FROM card_messages WHERE type = 'sofusaki' "
                            "AND payload_ct IS NOT NULL").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action = 'backup.restore'").fetchone()[0] == 1


def test_escrow_restore_on_a_new_host(appliance, capsys, tmp_path, other_db):
    """A host with a NEW (software) key store and an empty database restores with the escrow identity only."""
    root, cfg, config, escrow_file, people = appliance
    path = create(cfg, capsys)
    old_secret = (root / "keys" / "dev-secret").read_bytes()
    fp = Service(config).keystore.fingerprint()
    new = tmp_path / "new"
    new.mkdir()
    escrow_pub = str(bk.load_identity_file(escrow_file)[0].to_public())
    new_cfg = write_config(new, escrow_pub, database_url=other_db)
    assert cli_main(["--config", str(new_cfg), "db", "upgrade"]) == 0
    assert cli_main(["--config", str(new_cfg), "backup", "provision"]) == 0
    assert (new / "keys" / "dev-secret").read_bytes() != old_secret
    (new / "backups" / path.name).write_bytes(path.read_bytes())
    capsys.readouterr()
    rc = cli_main(["--config", str(new_cfg), "backup", "restore", path.name, "--escrow-identity", str(escrow_file),
                   "--expect-fingerprint", fp])
    out = capsys.readouterr()
    assert rc == 0, out.err
    report = json.loads(out.out)
    assert report["keystore"] == "replaced" and report["backup_identity"] == "provisioned"
    assert (new / "keys" / "dev-secret").read_bytes() == old_secret
    new_config = load_config(new_cfg)
    svc = Service(new_config)
    for p in people[:5]:
        assert svc.store.get_current(p["juminhyo_code"]) is not None
    svc.engine.dispose()
    assert cli_main(["--config", str(new_cfg), "audit", "verify"]) == 0
    assert cli_main(["--config", str(new_cfg), "backup", "create"]) == 0
    assert cli_main(["--config", str(new_cfg), "backup", "verify", "--escrow-identity", str(escrow_file)]) == 0


def test_missing_tools_are_clear_errors(appliance, capsys, tmp_path, monkeypatch):
    root, cfg, config, _escrow_file, _ = appliance
    empty = tmp_path / "no-pg-bin"
    empty.mkdir()
    monkeypatch.setenv("JUKICS_PG_BIN", str(empty))
    capsys.readouterr()
    assert cli_main(["--config", str(cfg), "backup", "create"]) == 1
    err = capsys.readouterr().err
    assert "E_BACKUP_TOOL" in err and str(empty / "pg_dump") in err
    assert bk.list_backups(bk.BackupSettings.from_config(config.raw)) == []
    assert not list((root / "backups").glob(".work-*"))
    # [backup] pg_bin_dir is checked by `jukics config check`; a good one wins over the environment
    bad = cfg.with_name("bad.toml")
    bad.write_text(cfg.read_text() + f'pg_bin_dir = "{empty}"\n')
    capsys.readouterr()
    assert cli_main(["--config", str(bad), "config", "check"]) != 0
    out = capsys.readouterr()
    assert "backup.pg_bin_dir: no executable pg_dump, pg_restore" in out.err + out.out
    good = cfg.with_name("good.toml")
    good.write_text(cfg.read_text() + f'pg_bin_dir = "{PG_BIN}"\n')
    cli_main(["--config", str(good), "config", "check"])  # the test config's TLS files (/x) fail it anyway
    out = capsys.readouterr()
    assert "config: intake.cert_file" in out.err + out.out and "pg_bin_dir" not in out.err + out.out
    assert cli_main(["--config", str(good), "backup", "create"]) == 0


def test_the_password_never_reaches_a_command_line(tmp_path):
    target = pg.PgTarget.from_url("postgresql+psycopg://jukics:s3:cr\\et@/jukics?host=/run/postgresql&sslmode=disable")
    assert "s3" not in target.conninfo() and "host=/run/postgresql" in target.conninfo()
    env = pg.PgTools(tmp_path).env(target, tmp_path)
    passfile = Path(env["PGPASSFILE"])
    assert passfile.read_text() == "*:*:*:*:s3\\:cr\\\\et\n" and passfile.stat().st_mode & 0o077 == 0
    assert "PGPASSWORD" not in env
    assert "PGPASSFILE" not in pg.PgTools(tmp_path).env(pg.PgTarget.from_url("postgresql://u@/d"), tmp_path)


def test_the_documented_privileges_are_enough(tmp_path, capsys, postgres_server):
    """A service role with LOGIN CREATEDB that owns its database (no superuser) backs up, drills, restores."""
    role, name = f"svc_{uuid.uuid4().hex[:8]}", f"j_{uuid.uuid4().hex[:12]}"
    admin = dict(host=str(postgres_server["host"]), port=PORT, user="postgres", dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
    url = f"postgresql+psycopg://{role}@/{name}?host={postgres_server['host']}&port={PORT}"
    try:
        cfg, config, svc, people = seeded_host(tmp_path, tmp_path / "escrow.key", residents=5, seed=11,
                                               database_url=url)
        svc.engine.dispose()
        assert cli_main(["--config", str(cfg), "backup", "provision"]) == 0
        create(cfg, capsys)
        assert cli_main(["--config", str(cfg), "backup", "drill"]) == 0, capsys.readouterr().out
        capsys.readouterr()
        assert cli_main(["--config", str(cfg), "backup", "restore"]) == 0, capsys.readouterr().err
        svc = Service(config)
        assert svc.store.get_current(people[0]["juminhyo_code"]) is not None
        svc.engine.dispose()
        with psycopg.connect(**admin) as conn:
            owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                 (name,)).fetchone()[0]
            assert owner == role
            assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0]
    finally:
        with psycopg.connect(**admin) as conn:
            for db in [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datdba = "
                                                  "(SELECT oid FROM pg_roles WHERE rolname = %s)", (role,))]:
                conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
            conn.execute(f'DROP ROLE "{role}"')
