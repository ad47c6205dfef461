"""The audit hash chain: clean chains verify; edit, delete, reorder, truncation and re-signing are detected."""

from __future__ import annotations

import json
import threading

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlalchemy import select, text, update
from store_support import make_immutable_tables_writable

from jukics.audit.chain import AuditEvent, AuditLog, checkpoint_digest, row_hash, verify
from jukics.keystore.dev import DevKeyStore
from jukics.store.schema import audit_checkpoints, audit_head, audit_log


class SigningKeyStore(DevKeyStore):
    """Stands in for the TPM key store's checkpoint key (an EC P-256 key that never leaves it)."""

    def __init__(self, path, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        super().__init__(path)
        self.key = key or ec.generate_private_key(ec.SECP256R1())

    def sign_checkpoint(self, digest: bytes) -> bytes:
        return self.key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))

    def checkpoint_public_key(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def event(i: int, **kw) -> AuditEvent:
    base = {
        "actor": f"op-{i % 3}",
        "terminal": "counter-1",
        "action": "search",
        "purpose": "P01",
        "query": {"limit": 10},
        "targets": [f"{10000000000 + i}"],
        "result_count": i % 2,
    }
    return AuditEvent(**(base | kw))


@pytest.fixture
def filled(audit: AuditLog) -> AuditLog:
    audit.append_many([event(i) for i in range(1, 11)])
    return audit


def rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(audit_log).order_by(audit_log.c.seq))]


def rewrite_from(engine, seq: int, change: dict) -> None:
    """An attacker who knows the algorithm: edit one row and recompute every later hash and the head."""
    make_immutable_tables_writable(engine)
    all_rows = rows(engine)
    with engine.begin() as conn:
        prev = all_rows[seq - 2]["hash"] if seq > 1 else bytes(32)
        for row in all_rows[seq - 1 :]:
            if row["seq"] == seq:
                row.update(change)
            row["prev_hash"] = prev
            row["hash"] = row_hash(prev, row)
            prev = row["hash"]
            conn.execute(
                update(audit_log)
                .where(audit_log.c.seq == row["seq"])
                .values({k: v for k, v in row.items() if k != "seq"})
            )
        conn.execute(update(audit_head).values(hash=prev))


def test_clean_chain_verifies(filled, engine):
    report = verify(engine)
    assert report.ok, report.problems
    assert (report.rows, report.last_seq, report.head_seq) == (10, 10, 10)
    assert report.as_dict()["summary"].startswith("audit chain ok")


def test_empty_chain_verifies(engine):
    assert verify(engine).ok


def test_rows_hold_keyed_hashes_not_personal_values(audit, engine):
    audit.append(
        AuditEvent(
            actor="op-1",
            terminal="counter-1",
            action="search",
            purpose="P01",
            query={"my_number": "123456789018", "name_kana": "ヤマダ タロウ", "limit": 5, "nested": {"a": 1}},
            targets=["12345678901"],
            result_count=1,
        )
    )
    [row] = rows(engine)
    query = json.loads(row["query"])
    assert query["limit"] == 5
    assert all(query[k].startswith("h:") for k in ("my_number", "name_kana", "nested"))
    assert "123456789018" not in row["query"] and "ヤマダ" not in row["query"]
    assert json.loads(row["target_ids"]) == [audit.target_id("12345678901")]
    assert "12345678901" not in row["target_ids"]
    # The same query value hashes the same way, so an auditor can still find repeated searches.
    again = AuditEvent(actor="op-2", terminal="t", action="search", purpose="P01", query={"my_number": "123456789018"})
    audit.append(again)
    assert json.loads(rows(engine)[1]["query"])["my_number"] == query["my_number"]


def test_bad_outcome_is_refused(audit):
    with pytest.raises(ValueError):
        audit.append(event(1, outcome="maybe"))


def test_audit_rows_refuse_update_and_delete(filled, engine):
    for sql in ("UPDATE audit_log SET result_count = 5", "DELETE FROM audit_log WHERE seq = 3"):
        with pytest.raises(Exception, match="E_IMMUTABLE"), engine.begin() as conn:
            conn.execute(text(sql))
    assert verify(engine).ok


def test_edit_is_detected(filled, engine):
    make_immutable_tables_writable(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(result_count=99))
    report = verify(engine)
    assert not report.ok and report.first_bad_seq == 4
    assert any("edited" in p for p in report.problems)


def test_edit_with_recomputed_row_hash_is_detected(filled, engine):
    make_immutable_tables_writable(engine)
    row = rows(engine)[3]
    row["actor"] = "someone-else"
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(actor="someone-else",
                                                                          hash=row_hash(row["prev_hash"], row)))
    report = verify(engine)
    assert not report.ok and report.first_bad_seq == 5  # the next row no longer links to it


def test_delete_is_detected(filled, engine):
    make_immutable_tables_writable(engine)
    with engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 6))
    report = verify(engine)
    assert not report.ok and report.first_bad_seq == 6
    assert any("deleted" in p for p in report.problems)


def test_reorder_is_detected(filled, engine):
    make_immutable_tables_writable(engine)
    r3, r7 = rows(engine)[2], rows(engine)[6]
    with engine.begin() as conn:  # swap the two records' contents, seq numbers left in place
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values({k: v for k, v in r7.items() if k != "seq"}))
        conn.execute(update(audit_log).where(audit_log.c.seq == 7).values({k: v for k, v in r3.items() if k != "seq"}))
    report = verify(engine)
    assert not report.ok and report.first_bad_seq == 3


def test_renumbering_is_detected(filled, engine):
    make_immutable_tables_writable(engine)
    with engine.begin() as conn:  # move record 3 after record 4 by swapping their seq numbers
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(seq=-3))
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(seq=3))
        conn.execute(update(audit_log).where(audit_log.c.seq == -3).values(seq=4))
    report = verify(engine)
    assert not report.ok and report.first_bad_seq == 3


def test_truncation_is_detected_by_the_head(filled, engine):
    make_immutable_tables_writable(engine)
    with engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq > 8))
    report = verify(engine)
    assert not report.ok and report.first_bad_seq == 9
    assert any("truncated" in p for p in report.problems)


def test_truncation_with_rewritten_head_is_detected_by_a_checkpoint(filled, engine):
    filled.checkpoint()
    make_immutable_tables_writable(engine)
    with engine.begin() as conn:
        eight = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 8)).scalar_one()
        conn.execute(audit_log.delete().where(audit_log.c.seq > 8))
        conn.execute(update(audit_head).values(seq=8, hash=eight))
    report = verify(engine)
    assert not report.ok and report.first_bad_seq == 10
    assert any("checkpoint at seq 10" in p for p in report.problems)


def test_consistent_rewrite_is_detected_by_a_checkpoint(filled, engine):
    filled.checkpoint()
    rewrite_from(engine, 5, {"actor": "nobody"})
    report = verify(engine)
    assert not report.ok
    assert any("history rewritten" in p for p in report.problems)


def test_signed_checkpoint_verifies_and_resigning_is_detected(filled, engine, tmp_path):
    keystore = SigningKeyStore(tmp_path / "k")
    cp = filled.checkpoint(keystore)
    assert cp is not None and cp.signature and cp.key_id
    assert filled.checkpoint(keystore) == cp  # same head: the existing checkpoint
    public = keystore.checkpoint_public_key()
    report = verify(engine, public_key=public, require_signatures=True)
    assert report.ok and report.signed_checkpoints == 1

    # The attacker rewrites history and re-signs the checkpoint with a key of their own.
    rewrite_from(engine, 2, {"result_count": 7})
    new_hash = rows(engine)[-1]["hash"]
    attacker = SigningKeyStore(tmp_path / "a")
    digest = checkpoint_digest(cp.seq, new_hash, cp.ts)
    with engine.begin() as conn:
        conn.execute(
            update(audit_checkpoints)
            .where(audit_checkpoints.c.seq == cp.seq)
            .values(hash=new_hash, digest=digest, signature=attacker.sign_checkpoint(digest))
        )
    assert verify(engine).ok  # without the expected key the forgery is self-consistent...
    report = verify(engine, public_key=public)
    assert not report.ok  # ...with the key store's public key it is not
    assert any("signature does not verify" in p for p in report.problems)


def test_unsigned_checkpoints_fail_when_signatures_are_required(filled, engine, keystore):
    assert filled.checkpoint(keystore).signature is None  # the dev key store cannot sign
    assert verify(engine).ok
    report = verify(engine, require_signatures=True)
    assert not report.ok and any("not signed" in p for p in report.problems)


def test_checkpoint_of_empty_log_is_none(audit):
    assert audit.checkpoint() is None


def test_concurrent_appends_make_one_gapless_chain(engine, keystore, clock):
    logs = [AuditLog.from_keystore(engine, keystore, clock) for _ in range(3)]
    errors: list[BaseException] = []

    def work(log: AuditLog, n: int) -> None:
        try:
            for i in range(n):
                if i % 5 == 0:
                    log.append_many([event(i), event(i + 1)])
                else:
                    log.append(event(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lg, 25)) for lg in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = verify(engine)
    assert report.ok and report.rows == 3 * 30
