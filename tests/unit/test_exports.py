"""Exports: age-encrypted to the recipient, a witness required, atomic, every refusal audited."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pyotp
import pyrage
import pytest
from sqlalchemy import create_engine, select

from jukics import exports as ex
from jukics.audit.chain import AuditLog, verify
from jukics.auth import operators as ops
from jukics.auth.rbac import load_duties
from jukics.store import db
from jukics.store.crypto import FieldCipher, SearchHasher
from jukics.store.schema import audit_log

PASSWORD = "Counter-Staff-2026"
RESIDENTS = [{"juminhyo_code": f"1000000000{i:02d}", "name_kanji": f"試験 太郎{i}", "birth_date": "1980-01-01",
              "sex": "1", "address": "神奈川県伊勢原市", "my_number": None, "change_reason": "転入",
              "changed_on": "2026-01-01"} for i in range(5)]


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 1, 0, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def env(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/x.db")
    db.upgrade(engine)
    clock = Clock()
    audit = AuditLog(engine, SearchHasher(os.urandom(32)), clock=clock)
    store = ops.OperatorStore(engine, FieldCipher(os.urandom(32)), audit, issuer="t", clock=clock)
    totp = {}
    for uid, roles in (("mgr1", ["manager"]), ("mgr2", ["manager"]), ("cnt1", ["counter"]),
                       ("ven1", ["vendor"]), ("adm1", ["security_admin"])):
        totp[uid] = pyotp.TOTP(store.add(uid, PASSWORD, department="市民課", roles=roles,
                                         account_expires_on=dt.date(2027, 3, 31), actor="root").totp_secret)
    identity = pyrage.x25519.Identity.generate()

    def residents(codes):
        return [r for r in RESIDENTS if codes is None or r["juminhyo_code"] in codes]

    svc = ex.ExportService(engine, store, load_duties(None), audit, recipients={"kenchou": [str(identity.to_public())]},
                           residents=residents, clock=clock)

    def witness(uid: str, *, good: bool = True) -> ex.WitnessCredentials:
        clock.now += dt.timedelta(seconds=30)  # every witness login a fresh TOTP step
        code = totp[uid].at(clock.now)
        if not good:
            code = f"{(int(code) + 1) % 10**6:06d}"
        return ex.WitnessCredentials(uid, PASSWORD, code)

    return engine, svc, identity, witness, tmp_path


def refusals(engine) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        return [(r.actor, r.code) for r in conn.execute(select(audit_log).where(
            audit_log.c.action == "export.create", audit_log.c.outcome == "refused"))]


def test_export_is_encrypted_to_the_recipient_and_recorded(env):
    engine, svc, identity, witness, tmp = env
    target = tmp / "media" / "export.age"
    target.parent.mkdir()
    rec = svc.create("mgr1", witness("cnt1"), dataset="residents", recipient="kenchou", media_id="USB-0042",
                     target=target)
    blob = target.read_bytes()
    assert b"age-encryption.org/v1" in blob and "試験".encode() not in blob
    lines = pyrage.decrypt(blob, [identity]).decode().splitlines()
    assert [json.loads(x)["juminhyo_code"] for x in lines] == [r["juminhyo_code"] for r in RESIDENTS]
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(blob, [pyrage.x25519.Identity.generate()])
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert rec.rows == 5 and rec.witness == "cnt1" and rec.media_id == "USB-0042"
    import hashlib
    assert rec.sha256 == hashlib.sha256(blob).hexdigest()
    assert svc.list()[0]["sha256"] == rec.sha256
    with engine.connect() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.action == "export.create")).one()
    q = json.loads(row.query)
    assert (q["sha256"], q["media_id"], q["witness"], q["kind"], row.result_count) == (
        rec.sha256, "USB-0042", "cnt1", "residents", 5)
    assert "試験" not in row.query
    assert sorted(os.listdir(target.parent)) == ["export.age"]
    assert verify(engine).ok


def test_search_and_audit_datasets(env):
    _engine, svc, identity, witness, tmp = env
    svc.create("mgr1", witness("mgr2"), dataset="search", recipient="kenchou", media_id="M1", target=tmp / "s.age",
               codes=[RESIDENTS[1]["juminhyo_code"]])
    lines = pyrage.decrypt((tmp / "s.age").read_bytes(), [identity]).decode().splitlines()
    assert [json.loads(x)["juminhyo_code"] for x in lines] == [RESIDENTS[1]["juminhyo_code"]]
    svc.create("mgr1", witness("mgr2"), dataset="audit", recipient="kenchou", media_id="M2", target=tmp / "a.age")
    rows = [json.loads(x) for x in pyrage.decrypt((tmp / "a.age").read_bytes(), [identity]).decode().splitlines()]
    assert rows and all("hash" in r for r in rows)


@pytest.mark.parametrize(("requester", "witness_of", "code"), [
    ("mgr1", None, ex.E_EXPORT_NO_WITNESS),
    ("mgr1", "mgr1", ex.E_EXPORT_WITNESS_SELF),
    ("mgr1", "bad:cnt1", ex.E_EXPORT_WITNESS_FAILED),
    ("cnt1", "mgr1", ex.E_EXPORT_FORBIDDEN),
    ("ven1", "mgr1", ex.E_EXPORT_FORBIDDEN),
    ("mgr1", "ven1", ex.E_EXPORT_WITNESS_FORBIDDEN),
    ("mgr1", "adm1", ex.E_EXPORT_WITNESS_FORBIDDEN),
    ("nobody", "mgr1", ex.E_EXPORT_FORBIDDEN),
])
def test_refusals_write_nothing_and_are_audited(env, requester, witness_of, code):
    engine, svc, _, witness, tmp = env
    creds = None
    if witness_of:
        bad = witness_of.startswith("bad:")
        creds = witness(witness_of.removeprefix("bad:"), good=not bad)
    with pytest.raises(ex.ExportError) as err:
        svc.create(requester, creds, dataset="residents", recipient="kenchou", media_id="USB-1", target=tmp / "o.age")
    assert err.value.code == code
    assert refusals(engine) == [(requester, code)]
    assert sorted(p.name for p in tmp.iterdir()) == ["x.db"]
    assert svc.list() == []
    assert verify(engine).ok


def test_bad_requests_are_refused(env):
    engine, svc, _, witness, tmp = env
    (tmp / "exists.age").write_bytes(b"x")
    cases = [dict(dataset="everything"), dict(recipient="nobody"), dict(media_id="../x"),
             dict(target=tmp / "exists.age"), dict(target=tmp / "no" / "dir.age"), dict(dataset="search")]
    for case in cases:
        kw = dict(dataset="residents", recipient="kenchou", media_id="M", target=tmp / "o.age") | case
        with pytest.raises(ex.ExportError):
            svc.create("mgr1", witness("cnt1"), **kw)
    assert [c for _, c in refusals(engine)] == [ex.E_EXPORT_DATASET, ex.E_EXPORT_RECIPIENT, ex.E_EXPORT_MEDIA_ID,
                                               ex.E_EXPORT_TARGET, ex.E_EXPORT_TARGET, ex.E_EXPORT_DATASET]
    assert (tmp / "exists.age").read_bytes() == b"x" and not (tmp / "o.age").exists()


def test_a_failure_while_writing_leaves_no_file(env, monkeypatch):
    engine, svc, _, witness, tmp = env

    def broken(*a, **k):
        raise OSError("media removed")

    monkeypatch.setattr(ex.os, "fsync", broken)
    with pytest.raises(OSError):
        svc.create("mgr1", witness("cnt1"), dataset="residents", recipient="kenchou", media_id="M",
                   target=tmp / "o.age")
    assert sorted(p.name for p in tmp.iterdir()) == ["x.db"]
    assert refusals(engine) == [("mgr1", ex.E_EXPORT_FAILED)] and svc.list() == []


def test_recipients_config_is_checked():
    problems: list[str] = []
    good = str(pyrage.x25519.Identity.generate().to_public())
    assert ex.parse_recipients({"a": good, "b": [good, good]}, problems) == {"a": (good,), "b": (good, good)}
    assert problems == []
    ex.parse_recipients({"c": "age1notakey", "d": 3}, problems)
    assert len(problems) == 2


def test_export_cli(tmp_path, capsys, monkeypatch, dev_cli):
    import io

    from jukics.cli.main import main as cli_main

    identity = pyrage.x25519.Identity.generate()
    cli = dev_cli(extra_toml=f"""
[exports.recipients]
kenchou = "{identity.to_public()}"
""")
    base = cli.base
    secrets = {uid: cli.add_operator(uid, role=role, password=PASSWORD)
               for uid, role in (("mgr1", "manager"), ("cnt1", "counter"))}
    out = tmp_path / "audit.age"
    create = [*base, "export", "create", "--dataset", "audit", "--recipient", "kenchou", "--media-id", "USB-7",
              "--out", str(out), "--requester", "mgr1", "--witness"]
    # the witness is the requester: refused, nothing written
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PASSWORD}\n{secrets['mgr1'].now()}\n{PASSWORD}\n000000\n"))
    assert cli_main([*create, "mgr1"]) == 2 and "E_EXPORT_WITNESS_SELF" in capsys.readouterr().err
    assert not out.exists()
    # a fresh step for the requester: the last code was spent
    import time as _time
    step = int(_time.time() // 30)
    code = pyotp.TOTP(secrets["mgr1"].secret).at((step + 1) * 30)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PASSWORD}\n{code}\n{PASSWORD}\n{secrets['cnt1'].now()}\n"))
    assert cli_main([*create, "cnt1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["media_id"] == "USB-7" and record["witness"] == "cnt1"
    assert b"export.create" in pyrage.decrypt(out.read_bytes(), [identity])
    assert cli_main([*base, "export", "list"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["sha256"] == record["sha256"]


def test_residents_dataset_exports_every_record_item(env):
    from jukics.domain.fields import F2_ITEMS, RECORD_ITEMS

    _engine, svc, identity, witness, tmp = env
    RESIDENTS[0]["name_kana"] = "しけん たろう"  # not an F2 item: it must be on the medium all the same
    try:
        svc.create("mgr1", witness("cnt1"), dataset="residents", recipient="kenchou", media_id="M",
                   target=tmp / "r.age")
    finally:
        del RESIDENTS[0]["name_kana"]
    first = json.loads(pyrage.decrypt((tmp / "r.age").read_bytes(), [identity]).decode().splitlines()[0])
    assert set(first) == set(RECORD_ITEMS) and set(RECORD_ITEMS) > set(F2_ITEMS)
    assert first["name_kana"] == "しけん たろう"
