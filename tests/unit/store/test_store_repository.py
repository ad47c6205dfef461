"""ResidentStore behaviour: history, idempotency, ordering, atomicity, outbox, search, encryption.

Runs on SQLite here and on PostgreSQL from tests/postgres (same functions, other ``db_url``)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text
from store_support import SyntheticRegister, make_immutable_tables_writable

from jukics.audit.chain import verify
from jukics.domain import fields
from jukics.store.crypto import CryptoError
from jukics.store.repository import ResidentStore
from jukics.store.schema import (
    applied_requests,
    audit_log,
    outbox,
    outbox_head,
    resident_versions,
    residents_current,
)

ACTOR = {"actor": "kizon.lab.jukics.example", "terminal": "kizon-01"}


def table_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (resident_versions, residents_current, applied_requests, outbox, audit_log)
        }


def raw_versions(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(resident_versions).order_by(resident_versions.c.id))]


def test_create_then_read_back(store: ResidentStore, register: SyntheticRegister):
    rec = register.resident()
    [result] = store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    assert (result.status, result.version, result.code) == ("applied", 1, None)
    got = store.get_current(rec["juminhyo_code"])
    assert got is not None
    assert {k: got[k] for k in rec} == rec
    assert got["record_status"] == "current"
    assert got["update_seq"] == 1 and got["operator_id"] == "op-0001"
    assert store.get_current("99999999999") is None


def test_history_is_never_overwritten(store: ResidentStore, register: SyntheticRegister, engine, clock):
    rec = register.resident()
    store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    before = raw_versions(engine)
    clock.advance(days=1)
    moved = dict(rec, address="東京都千代田区永田町9丁目9番9号999", change_reason="転居", changed_on="2026-04-02")
    store.apply_batch([register.update("change", moved, 2)], **ACTOR)
    clock.advance(days=1)
    renamed = dict(moved, name_kanji="山田　改名", change_reason="氏名変更", changed_on="2026-04-03")
    store.apply_batch([register.update("change", renamed, 3)], **ACTOR)

    after = raw_versions(engine)
    assert len(after) == 3
    assert after[0] == before[0]  # the stored bytes of version 1 did not change at all
    history = store.get_history(rec["juminhyo_code"])
    assert [h["address"] for h in history] == [rec["address"], moved["address"]]
    assert [h["name_kanji"] for h in history] == [rec["name_kanji"], moved["name_kanji"]]
    assert all(h["record_status"] == "history" for h in history)
    assert store.get_current(rec["juminhyo_code"])["name_kanji"] == "山田　改名"
    full = store.get_history(rec["juminhyo_code"], include_current=True)
    assert [v["update_seq"] for v in full] == [1, 2, 3]


def test_versions_table_refuses_updates(store: ResidentStore, register: SyntheticRegister, engine):
    store.apply_batch([register.update("create", register.resident(), 1)], **ACTOR)
    with pytest.raises(Exception, match="E_IMMUTABLE"), engine.begin() as conn:
        conn.execute(text("UPDATE resident_versions SET change_reason = 'x'"))


def test_retried_batch_creates_nothing_twice(store: ResidentStore, register: SyntheticRegister, engine):
    recs = [register.resident() for _ in range(5)]
    batch = [register.update("create", r, 1) for r in recs]
    first = store.apply_batch(batch, **ACTOR)
    counts = table_counts(engine)
    second = store.apply_batch(batch, **ACTOR)
    assert [r.status for r in first] == ["applied"] * 5
    assert [r.status for r in second] == ["duplicate"] * 5
    assert [r.version for r in second] == [r.version for r in first]
    after = table_counts(engine)
    assert {k: v for k, v in after.items() if k != "audit_log"} == {k: v for k, v in counts.items() if k != "audit_log"}
    assert after["audit_log"] == counts["audit_log"] + 5  # the retry is audited, nothing else is written


def test_duplicate_within_one_batch(store: ResidentStore, register: SyntheticRegister):
    rec = register.resident()
    u = register.update("create", rec, 1)
    results = store.apply_batch([u, u], **ACTOR)
    assert [r.status for r in results] == ["applied", "duplicate"]


def test_same_seq_under_a_new_request_id_is_a_conflict(store, register):
    rec = register.resident()
    store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    [again] = store.apply_batch([register.update("create", rec, 1)], **ACTOR)  # same content, new 依頼管理番号
    assert (again.status, again.code) == ("refused", "E_SEQ_CONFLICT")


def test_retry_of_an_older_request_is_still_a_duplicate(store, register):
    rec = register.resident()
    first = register.update("create", rec, 1)
    second = register.update("change", dict(rec, address="転居先", change_reason="転居"), 2)
    store.apply_batch([first, second], **ACTOR)
    assert [(r.status, r.version) for r in store.apply_batch([first, second], **ACTOR)] == [
        ("duplicate", 1),
        ("duplicate", 2),
    ]


def test_first_update_of_a_code_carries_seq_1(store, register):
    [r] = store.apply_batch([register.update("create", register.resident(), 2)], **ACTOR)
    assert (r.status, r.code) == ("refused", "E_OUT_OF_ORDER")
    assert "must carry 更新順番号 1" in r.message


def test_request_id_reused_with_other_content_is_refused(store, register):
    a, b = register.resident(), register.resident()
    store.apply_batch([register.update("create", a, 1, request_id="R-1")], **ACTOR)
    [result] = store.apply_batch([register.update("create", b, 1, request_id="R-1")], **ACTOR)
    assert (result.status, result.code) == ("refused", "E_REQUEST_ID_REUSED")
    assert store.get_current(b["juminhyo_code"]) is None


def test_out_of_order_updates_are_refused_never_applied(store, register, engine):
    rec = register.resident()
    store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    v3 = register.update("change", dict(rec, address="先の住所3", change_reason="転居"), 3)
    [gap] = store.apply_batch([v3], **ACTOR)
    assert (gap.status, gap.code) == ("refused", "E_OUT_OF_ORDER")
    assert "skips ahead" in gap.message
    assert store.get_current(rec["juminhyo_code"])["update_seq"] == 1
    v2 = register.update("change", dict(rec, address="先の住所2", change_reason="転居"), 2)
    assert store.apply_batch([v2], **ACTOR)[0].status == "applied"
    stale_change = dict(rec, address="古い", change_reason="転居")
    [same_seq] = store.apply_batch([register.update("change", stale_change, 2)], **ACTOR)
    assert (same_seq.status, same_seq.code) == ("refused", "E_SEQ_CONFLICT")
    [old] = store.apply_batch([register.update("change", stale_change, 1)], **ACTOR)
    assert (old.status, old.code) == ("refused", "E_OUT_OF_ORDER")
    assert "lower" in old.message
    # Re-sent in order, the held-back update applies.
    assert store.apply_batch([v3], **ACTOR)[0].status == "applied"
    assert store.get_current(rec["juminhyo_code"])["address"] == "先の住所3"


def test_two_updates_of_one_resident_in_one_batch_are_sequenced(store, register):
    rec = register.resident()
    batch = [
        register.update("create", rec, 1),
        register.update("change", dict(rec, address="二番目", change_reason="転居"), 2),
        register.update("change", dict(rec, address="飛ばし", change_reason="転居"), 4),
        register.update("change", dict(rec, address="三番目", change_reason="転居"), 3),
    ]
    results = store.apply_batch(batch, **ACTOR)
    assert [(r.status, r.code) for r in results] == [
        ("applied", None),
        ("applied", None),
        ("refused", "E_OUT_OF_ORDER"),
        ("applied", None),
    ]
    assert [r.version for r in results] == [1, 2, None, 3]
    assert store.get_current(rec["juminhyo_code"])["address"] == "三番目"


@pytest.mark.parametrize(
    ("setup", "kind", "code"),
    [
        ("none", "change", "E_UNKNOWN_RESIDENT"),
        ("none", "delete", "E_UNKNOWN_RESIDENT"),
        ("created", "create", "E_ALREADY_RESIDENT"),
        ("deleted", "delete", "E_ALREADY_DELETED"),
        ("deleted", "change", "E_RESIDENT_DELETED"),
    ],
)
def test_state_rules(store, register, setup, kind, code):
    rec = register.resident()
    seq = 1
    if setup != "none":
        store.apply_batch([register.update("create", rec, 1)], **ACTOR)
        seq = 2
    if setup == "deleted":
        store.apply_batch([register.update("delete", dict(rec, change_reason="死亡"), 2)], **ACTOR)
        seq = 3
    [result] = store.apply_batch([register.update(kind, dict(rec, change_reason="転居"), seq)], **ACTOR)
    assert (result.status, result.code) == ("refused", code)
    assert result.message and rec["my_number"] not in result.message


def test_delete_keeps_the_record_as_shoujo(store, register):
    rec = register.resident()
    store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    [r] = store.apply_batch([register.update("delete", dict(rec, change_reason="死亡"), 2)], **ACTOR)
    assert r.status == "applied"
    got = store.get_current(rec["juminhyo_code"])
    assert got["record_status"] == "deleted" and got["my_number"] == rec["my_number"]
    assert store.stats() == {"residents": 0, "deleted": 1, "versions": 2}
    # A 消除者 who moves back in gets a new current version (the deletion stays in history).
    [back] = store.apply_batch([register.update("create", dict(rec, change_reason="転入"), 3)], **ACTOR)
    assert (back.status, back.version) == ("applied", 3)
    assert [h["record_status"] for h in store.get_history(rec["juminhyo_code"])] == ["history", "history"]


def test_my_number_of_another_living_resident_is_refused(store, register):
    a, b = register.resident(), register.resident()
    store.apply_batch([register.update("create", a, 1)], **ACTOR)
    [r] = store.apply_batch([register.update("create", dict(b, my_number=a["my_number"]), 1)], **ACTOR)
    assert (r.status, r.code) == ("refused", "E_MY_NUMBER_IN_USE")
    # Within one batch too.
    c = register.resident()
    twin = dict(register.resident(), my_number=c["my_number"])
    results = store.apply_batch([register.update("create", c, 1), register.update("create", twin, 1)], **ACTOR)
    assert [x.code for x in results] == [None, "E_MY_NUMBER_IN_USE"]
    # Once the owner is 消除, the number may be used by another record (the same person, re-registered).
    store.apply_batch([register.update("delete", dict(c, change_reason="転出"), 2)], **ACTOR)
    assert store.apply_batch([register.update("create", twin, 1)], **ACTOR)[0].status == "applied"
    # A change of the owner that keeps its own number is not a conflict.
    [own] = store.apply_batch([register.update("change", dict(twin, address="同一人物", change_reason="転居"), 2)],
                              **ACTOR)
    assert own.status == "applied"


def test_juminhyo_code_change_moves_the_record(store, register, engine):
    rec = register.resident()
    store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    old, new = rec["juminhyo_code"], "55555555555"
    change = register.update(
        "change", dict(rec, juminhyo_code=new, previous_juminhyo_code=old, change_reason="juminhyo_code_henko"), 2
    )
    change["lookup_code"] = old
    [r] = store.apply_batch([change], **ACTOR)
    assert (r.status, r.version) == ("applied", 2)
    assert store.get_current(old) is None
    moved = store.get_current(new)
    assert moved["juminhyo_code"] == new and moved["previous_juminhyo_code"] == old
    [v1] = store.get_history(new)
    assert v1["juminhyo_code"] == old and v1["name_kanji"] == rec["name_kanji"]
    assert [m["juminhyo_code"] for m in store.find_by_my_number(rec["my_number"])] == [new]
    [next_] = store.apply_batch([register.update("change", dict(moved, address="その後", change_reason="転居"), 3)],
                                **ACTOR)
    assert next_.status == "applied"
    # A change onto a code that already has a record is refused.
    other = register.resident()
    store.apply_batch([register.update("create", other, 1)], **ACTOR)
    clash = register.update("change", dict(other, juminhyo_code=new, change_reason="juminhyo_code_henko"), 2)
    clash["lookup_code"] = other["juminhyo_code"]
    [refused] = store.apply_batch([clash], **ACTOR)
    assert (refused.status, refused.code) == ("refused", "E_CODE_ALREADY_USED")


def test_accepts_the_domain_update_objects(store, register):
    """The validator hands over dataclasses (attributes, ``meta`` object); mappings work the same."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Meta:
        request_id: str
        operator_id: str
        terminal_id: str
        update_seq: int

    @dataclass(frozen=True)
    class Update:
        kind: str
        juminhyo_code: str
        lookup_code: str
        record: dict
        meta: Meta

    rec = register.resident()
    record = dict(rec, name_kana_seion="ignored-derived-here", record_status="current", request_id="R-9")
    u = Update("create", rec["juminhyo_code"], rec["juminhyo_code"], record, Meta("R-9", "op", "t", 1))
    [r] = store.apply_batch([u], **ACTOR)
    assert r.status == "applied"
    assert store.get_current(rec["juminhyo_code"])["record_status"] == "current"
    assert store.find_by_name_and_birth_date(rec["name_kana"], rec["birth_date"])


def test_bad_items_are_refused_and_the_rest_applies(store, register, engine):
    good = register.resident()
    bad_items = [
        {"kind": "rename", "juminhyo_code": "12345678901", "record": {}, "meta": {}},
        register.update("create", dict(register.resident(), 本籍="東京都"), 1),  # field not on the allowlist
        {**register.update("create", register.resident(), 1), "meta": {"request_id": "x", "update_seq": 1}},
        register.update("create", register.resident(), 0),
        register.update("create", dict(register.resident(), sex=object()), 1),  # not storable
    ]
    results = store.apply_batch([*bad_items, register.update("create", good, 1)], **ACTOR)
    assert [r.code for r in results[:-1]] == ["E_BAD_UPDATE"] * len(bad_items)
    assert results[-1].status == "applied"
    assert table_counts(engine)["resident_versions"] == 1
    assert table_counts(engine)["audit_log"] == len(bad_items) + 1  # refused ones are audited too


def test_failure_while_writing_leaves_nothing_half_written(store, register, engine):
    ok = register.resident()
    store.apply_batch([register.update("create", ok, 1)], **ACTOR)
    before = table_counts(engine)
    versions_before = raw_versions(engine)
    # Make the outbox insert fail: versions and the current index are written before it in the
    # same transaction, so a partial write would show up below.
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER t_fail BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'boom'); END"))
        else:
            conn.execute(text("CREATE FUNCTION t_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                              "RAISE EXCEPTION 'boom'; END $$"))
            conn.execute(text("CREATE TRIGGER t_fail BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION t_fail()"))
    new = [register.resident() for _ in range(3)]
    batch = [register.update("create", r, 1) for r in new]
    batch.append(register.update("change", dict(ok, address="新住所", change_reason="転居"), 2))
    results = store.apply_batch(batch, **ACTOR)
    assert {(r.status, r.code) for r in results} == {("error", "E_STORE_ERROR")}
    after = table_counts(engine)
    assert {k: v for k, v in after.items() if k != "audit_log"} == {k: v for k, v in before.items() if k != "audit_log"}
    assert after["audit_log"] == before["audit_log"] + 4  # the failure itself is audited
    assert raw_versions(engine) == versions_before
    assert store.get_current(ok["juminhyo_code"])["address"] == ok["address"]
    assert all(store.get_current(r["juminhyo_code"]) is None for r in new)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER t_fail" + ("" if engine.dialect.name == "sqlite" else " ON outbox")))
    # The same batch, retried once the fault is gone, applies completely.
    assert [r.status for r in store.apply_batch(batch, **ACTOR)] == ["applied"] * 4
    assert verify(engine).ok


def test_outbox_messages_per_link(store, register):
    recs = [register.resident() for _ in range(3)]
    store.apply_batch([register.update("create", r, 1) for r in recs], **ACTOR)
    store.apply_batch([register.update("delete", dict(recs[0], change_reason="死亡"), 2)], **ACTOR)
    f2 = store.outbox_pending("prefecture")
    fuhyo = store.outbox_pending("fuhyo")
    assert [m.seq for m in f2] == [1, 2, 3, 4] and [m.seq for m in fuhyo] == [1, 2, 3, 4]
    for m in f2:
        assert sorted(m.payload) == sorted(fields.F2_ITEMS) and len(m.payload) == 8
    for m in fuhyo:
        assert set(m.payload) == set(fields.FUHYO_ITEMS) and "my_number" not in m.payload
    assert [m.kind for m in f2] == ["create", "create", "create", "delete"]
    assert f2[0].payload["my_number"] == recs[0]["my_number"]
    assert {m.payload["juminhyo_code"] for m in fuhyo[:3]} == {r["juminhyo_code"] for r in recs}


def test_outbox_is_written_with_the_change_and_holds_no_personal_data(store, register, engine):
    rec = register.resident()
    store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(outbox).order_by(outbox.c.link))]
        version_id = conn.execute(select(resident_versions.c.id)).scalar_one()
    assert {r["link"] for r in rows} == {"prefecture", "fuhyo"}
    assert all(r["version_id"] == version_id and r["seq"] == 1 for r in rows)
    assert set(rows[0]) == {"link", "seq", "version_id", "kind", "created_at"}  # no payload copy at all
    # The message is made of the immutable version it points to: later changes do not alter it.
    store.apply_batch([register.update("change", dict(rec, address="後の住所", change_reason="転居"), 2)], **ACTOR)
    [first, second] = store.outbox_pending("prefecture")
    assert first.payload["address"] == rec["address"] and second.payload["address"] == "後の住所"


def test_outbox_ack_deletes_delivered_messages(store, register, engine):
    store.apply_batch([register.update("create", register.resident(), 1) for _ in range(3)], **ACTOR)
    assert store.outbox_ack("prefecture", 2) == 2
    assert [m.seq for m in store.outbox_pending("prefecture")] == [3]
    assert store.outbox_ack("prefecture", 1) == 0  # backwards: nothing to do
    with pytest.raises(ValueError, match="cannot acknowledge"):
        store.outbox_ack("prefecture", 9)
    with engine.connect() as conn:
        heads = {link: seq for link, seq in conn.execute(select(outbox_head.c.link, outbox_head.c.acked_seq))}
    assert heads == {"prefecture": 2, "fuhyo": 0, "sofusaki": 0, "card": 0, "tokurei": 0}


def test_ciphertext_swapped_between_rows_fails_to_decrypt(store, register, engine):
    a, b = register.resident(), register.resident()
    store.apply_batch([register.update("create", a, 1), register.update("create", b, 1)], **ACTOR)
    store.apply_batch([register.update("change", dict(a, address="変更後", change_reason="転居"), 2)], **ACTOR)
    make_immutable_tables_writable(engine)
    with engine.begin() as conn:
        rows = conn.execute(select(resident_versions.c.id, resident_versions.c.record_ct).order_by("id")).all()
        a1, b1, a2 = rows
        # Swap between residents: b's current row now holds a's version-1 ciphertext.
        conn.execute(resident_versions.update().where(resident_versions.c.id == b1.id).values(record_ct=a1.record_ct))
    with pytest.raises(CryptoError):
        store.get_current(b["juminhyo_code"])
    with engine.begin() as conn:
        conn.execute(resident_versions.update().where(resident_versions.c.id == b1.id).values(record_ct=b1.record_ct))
        # Swap between versions of one resident: the old version's ciphertext as the current one.
        conn.execute(resident_versions.update().where(resident_versions.c.id == a2.id).values(record_ct=a1.record_ct))
    assert store.get_current(b["juminhyo_code"])["name_kanji"] == b["name_kanji"]
    with pytest.raises(CryptoError):
        store.get_current(a["juminhyo_code"])


def test_search_by_hashes(store, register):
    recs = [register.resident() for _ in range(4)]
    store.apply_batch([register.update("create", r, 1) for r in recs], **ACTOR)
    r = recs[2]
    assert [x["juminhyo_code"] for x in store.find_by_my_number(r["my_number"])] == [r["juminhyo_code"]]
    # Full-width digits and a hyphen normalise to the same 個人番号.
    wide = r["my_number"][:4] + "-" + r["my_number"][4:].translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    assert len(store.find_by_my_number(wide)) == 1
    # 清音化: hiragana, voiced marks and spacing do not matter for the kana name.
    kana = r["name_kana"].replace(" ", "　")
    hira = "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in kana)
    found = store.find_by_name_and_birth_date(hira, r["birth_date"])
    assert r["juminhyo_code"] in [x["juminhyo_code"] for x in found]
    found = store.find_by_name_and_address(r["name_kana"], r["address"])
    assert [x["juminhyo_code"] for x in found] == [r["juminhyo_code"]]
    assert store.find_by_name_and_birth_date(r["name_kana"], "1800-01-01") == []
    many = store.get_current_many([x["juminhyo_code"] for x in recs] + ["00000000000"])
    assert set(many) == {x["juminhyo_code"] for x in recs}


def test_search_index_follows_changes(store, register):
    rec = register.resident()
    store.apply_batch([register.update("create", rec, 1)], **ACTOR)
    store.apply_batch([register.update("change", dict(rec, address="移転先1丁目", change_reason="転居"), 2)], **ACTOR)
    assert store.find_by_name_and_address(rec["name_kana"], rec["address"]) == []
    assert len(store.find_by_name_and_address(rec["name_kana"], "移転先1丁目")) == 1


def test_concurrent_writers_keep_sequences_and_chain_intact(store, register, engine, keystore, clock):
    stores = [ResidentStore.from_keystore(engine, keystore, clock) for _ in range(2)]
    batches = [[register.update("create", register.resident(), 1) for _ in range(20)] for _ in range(6)]
    errors: list[BaseException] = []

    def work(s: ResidentStore, mine: list) -> None:
        try:
            for b in mine:
                assert all(r.status == "applied" for r in s.apply_batch(b, **ACTOR))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(stores[i], batches[i::2])) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engine.connect() as conn:
        for link in ("prefecture", "fuhyo"):
            seqs = conn.execute(select(outbox.c.seq).where(outbox.c.link == link).order_by(outbox.c.seq)).scalars()
            assert list(seqs) == list(range(1, 121))
    report = verify(engine)
    assert report.ok and report.rows == 120
