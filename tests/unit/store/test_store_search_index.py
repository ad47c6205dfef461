"""The 氏名 + 生年月日 search index (migration 0010): keyed hashes only, normalised, kept current, and
the same answers as a scan of every record. Synthetic residents only."""

from __future__ import annotations

import random
import unicodedata

from alembic import command
from sqlalchemy import text
from store_support import SyntheticRegister

from jukics.store import db
from jukics.store.normalise import normalise
from jukics.store.repository import ResidentStore

ACTOR = {"actor": "kizon.lab.jukics.example", "terminal": "kizon-01"}
INDEX = "ix_residents_current_name_birth"


def codes(rows: list[dict]) -> list[str]:
    return sorted(r["juminhyo_code"] for r in rows)


def half_width(kana: str) -> str:
    """Half-width katakana (ﾔﾏﾀﾞ), as old terminals type it: the inverse of NFKC's mapping."""
    table = {unicodedata.normalize("NFKC", chr(c)): chr(c) for c in range(0xFF66, 0xFF9E)}
    out = []
    for ch in kana:
        base = unicodedata.normalize("NFD", ch)
        if base[0] in table:
            out.append(table[base[0]] + ("ﾞ" if "\u3099" in base else "ﾟ" if "\u309a" in base else ""))
        else:
            out.append(ch)
    return "".join(out)


def test_the_search_uses_the_two_column_index(engine, store):
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT code_hash FROM residents_current "
            "WHERE name_seion_hash = x'00' AND birth_date_hash = x'01'")))
        columns = [r[2] for r in conn.execute(text(f"PRAGMA index_info('{INDEX}')"))]
    assert INDEX in plan and "birth_date_hash=?" in plan
    assert columns == ["name_seion_hash", "birth_date_hash"]  # keyed hashes, no plaintext


def test_name_forms_find_the_same_resident(store, register):
    rec = dict(register.resident(), name_kana="ヤマダ　タロウ", birth_date="1980-01-02")
    other = dict(register.resident(), name_kana="ヤマダ　ハナコ", birth_date="1980-01-02")
    store.apply_batch([register.update("create", r, 1) for r in (rec, other)], **ACTOR)
    want = [rec["juminhyo_code"]]
    for typed in ("ヤマダ　タロウ", "ヤマダ タロウ", "ヤマダタロウ", "  ヤマダ\tタロウ ", "やまだ　たろう",
                  "ﾔﾏﾀﾞ ﾀﾛｳ", half_width("ヤマダタロウ"), "ヤマタ　タロウ"):  # 清音化: ダ and タ are one key
        assert codes(store.find_by_name_and_birth_date(typed, "1980-01-02")) == want, typed
    assert codes(store.find_by_name_and_birth_date("ヤマダ　タロウ", "１９８０-０１-０２")) == want  # full-width digits
    assert store.find_by_name_and_birth_date("ヤマダ　タロウ", "1980-01-03") == []
    assert store.find_by_name_and_birth_date("ヤマモト　タロウ", "1980-01-02") == []
    assert store.find_by_name_and_birth_date("", "1980-01-02") == []


def test_a_changed_name_or_birth_date_moves_the_entry(store, register):
    rec = dict(register.resident(), name_kana="サトウ　ハナコ", birth_date="1990-05-06")
    store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    renamed = dict(rec, name_kanji="鈴木　花子", name_kana="スズキ　ハナコ", change_reason="氏名の変更")
    [r] = store.apply_batch([register.update("change", renamed, 2)], **ACTOR)
    assert r.status == "applied"
    assert store.find_by_name_and_birth_date("サトウ　ハナコ", "1990-05-06") == []
    assert codes(store.find_by_name_and_birth_date("スズキ　ハナコ", "1990-05-06")) == [rec["juminhyo_code"]]
    corrected = dict(renamed, birth_date="1990-06-05", change_reason="職権修正")
    [r] = store.apply_batch([register.update("change", corrected, 3)], **ACTOR)
    assert r.status == "applied"
    assert store.find_by_name_and_birth_date("スズキ　ハナコ", "1990-05-06") == []
    assert codes(store.find_by_name_and_birth_date("スズキ　ハナコ", "1990-06-05")) == [rec["juminhyo_code"]]


def crowded_register(store: ResidentStore, n: int = 400) -> list[dict]:
    """Residents with few names and few birth dates, so most searches have several hits; some 消除者."""
    register = SyntheticRegister(seed=11)
    rng = random.Random(3)
    people = [dict(register.resident(), birth_date=rng.choice(["1970-03-01", "1985-07-15", "2001-12-31"]))
              for _ in range(n)]
    store.apply_batch([register.update("create", p, 1) for p in people], **ACTOR)
    gone = people[::17]
    store.apply_batch([register.update("delete", dict(p, change_reason="死亡"), 2) for p in gone], **ACTOR)
    return people


def scan(store: ResidentStore, people: list[dict], name_kana: str, birth_date: str) -> list[str]:
    """The search done the slow way: decrypt every record and compare the normalised values."""
    records = store.get_current_many([p["juminhyo_code"] for p in people]).values()
    key = normalise("name_kana", name_kana), normalise("birth_date", birth_date)
    return sorted(r["juminhyo_code"] for r in records
                  if (normalise("name_kana", r["name_kana"]), normalise("birth_date", r["birth_date"])) == key)


def test_results_equal_a_scan_of_every_record(store):
    people = crowded_register(store)
    asked = {(p["name_kana"], p["birth_date"]) for p in people[:60]} | {("ナイ　ナマエ", "1970-03-01")}
    several = 0
    for name, born in sorted(asked):
        want = scan(store, people, name, born)
        assert codes(store.find_by_name_and_birth_date(name, born)) == want, (name, born)
        several += len(want) > 1
    assert several > 5  # the data set really has shared names and birth dates


def test_migration_builds_the_index_from_the_stored_hashes(db_url, keystore, clock):
    engine = db.make_engine(db_url)
    try:
        with db.write_transaction(engine) as conn:  # the schema just before this migration
            command.upgrade(db._alembic_config(conn), "0010_search_index-1")
        store = ResidentStore.from_keystore(engine, keystore, clock)
        people = crowded_register(store, 120)
        before = {(p["name_kana"], p["birth_date"]): codes(store.find_by_name_and_birth_date(p["name_kana"],
                                                                                             p["birth_date"]))
                  for p in people}
        with db.write_transaction(engine) as conn:
            command.upgrade(db._alembic_config(conn), "0010_search_index")
            names = {r[1] for r in conn.execute(text("PRAGMA index_list('residents_current')"))}
        assert INDEX in names and "ix_residents_current_name_seion_hash" not in names
        for (name, born), want in before.items():
            assert codes(store.find_by_name_and_birth_date(name, born)) == want
        with db.write_transaction(engine) as conn:
            command.downgrade(db._alembic_config(conn), "0010_search_index-1")
            names = {r[1] for r in conn.execute(text("PRAGMA index_list('residents_current')"))}
        assert INDEX not in names and "ix_residents_current_name_seion_hash" in names
    finally:
        engine.dispose()
