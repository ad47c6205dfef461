"""No plaintext personal data at rest or in messages: the grep test (SPEC §3 "Encryption at rest").

Synthetic residents are created, changed, deleted, searched, refused and caught in a failing batch;
then the raw bytes of every storage file (and the logs, the item results and the audit rows) are
searched for every 個人番号, 住民票コード, name and address used: zero hits allowed."""

from __future__ import annotations

import json
import logging
import re

from sqlalchemy import text

from jukics.audit.chain import AuditEvent

ACTOR = {"actor": "kizon.lab.jukics.example", "terminal": "kizon-01"}


def _secrets(records) -> set[bytes]:
    out: set[bytes] = set()
    for r in records:
        for key in ("my_number", "juminhyo_code", "name_kanji", "name_kana", "address"):
            out.add(str(r[key]).encode("utf-8"))
        out.add(r["name_kanji"].split("　")[1].encode("utf-8"))  # the given name with its number
    return out


def _make_outbox_fail(engine):
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER t_fail BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'x'); END"))
        else:
            conn.execute(text("CREATE FUNCTION t_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                              "RAISE EXCEPTION 'x'; END $$"))
            conn.execute(text("CREATE TRIGGER t_fail BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION t_fail()"))


def test_no_personal_data_in_storage_logs_or_results(store, register, engine, raw_storage_files, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)  # as if someone turned SQL echo on
    try:
        residents = [register.resident() for _ in range(40)]
        results = store.apply_batch([register.update("create", r, 1) for r in residents[:20]], **ACTOR)
        results += store.apply_batch([register.update("create", r, 1) for r in residents[20:]], **ACTOR)
        renamed = []
        for i, r in enumerate(residents[:10]):
            new = dict(r, name_kanji=f"改名　次郎{5000 + i}", address=f"{r['address']}別館", change_reason="氏名変更")
            renamed.append(new)
        results += store.apply_batch([register.update("change", r, 2) for r in renamed], **ACTOR)
        results += store.apply_batch(
            [register.update("delete", dict(r, change_reason="死亡"), 2) for r in residents[30:35]], **ACTOR
        )
        # Refused items, with personal data in the wrong places.
        stranger = register.resident()
        results += store.apply_batch(
            [
                register.update("create", dict(stranger, 本籍=stranger["address"]), 1),
                register.update("change", stranger, 5),
                register.update("create", dict(register.resident(), my_number=residents[25]["my_number"]), 1),
            ],
            **ACTOR,
        )
        # A batch that fails while writing (rolled back, audited as errors).
        _make_outbox_fail(engine)
        lost = [register.resident() for _ in range(3)]
        results += store.apply_batch([register.update("create", r, 1) for r in lost], **ACTOR)
        # Searches, and an audit event that names personal values in its query conditions.
        r = residents[15]
        assert store.find_by_my_number(r["my_number"])
        assert store.find_by_name_and_birth_date(r["name_kana"], r["birth_date"])
        store.audit.append(
            AuditEvent(
                actor="operator-7",
                terminal="counter-3",
                action="search",
                purpose="P01",
                query={"my_number": r["my_number"], "name_kana": r["name_kana"], "address": r["address"]},
                targets=[r["juminhyo_code"]],
                result_count=1,
            )
        )
        assert {x.status for x in results} == {"applied", "refused", "error"}
        assert store.get_current(residents[0]["juminhyo_code"])["name_kanji"] == renamed[0]["name_kanji"]

        secrets = _secrets([*residents, *renamed, stranger, *lost])
        needle = re.compile(b"|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))
        texts = {
            "logs": caplog.text.encode("utf-8"),
            "results": json.dumps([x.as_dict() for x in results], ensure_ascii=False).encode("utf-8"),
        }
        assert "parameters hidden" in caplog.text  # SQL logging ran and hid every parameter
        for label, blob in texts.items():
            assert needle.search(blob) is None, f"personal data in {label}"
        for checkpoint in (False, True):
            files = raw_storage_files(engine, checkpoint=checkpoint)
            assert files
            for path in files:
                hit = needle.search(path.read_bytes())
                assert hit is None, f"personal data in {path.name} (checkpoint={checkpoint})"
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
