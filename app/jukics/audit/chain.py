"""The audit log: one record per operation, in a SHA-256 hash chain (SPEC §4 "Audit log").

Every operation, refused ones included, appends one row: who (actor), from where (terminal), when,
what (action), why (purpose), the query conditions, the targets, the result count and the outcome.
Seeds: 「システムの操作履歴をもとに、不正な利用がないか随時確認を行っている。」 (seed 004) and
「毎日、操作履歴(ユーザーID、操作日時、処理事由等)を電子記録媒体に記録し」 (seed 002).

No personal data is stored: targets (住民票コード) and every query value whose key is not on the
:data:`NON_PERSONAL_QUERY_KEYS` allowlist are replaced by keyed hashes (HMAC with the audit key,
which differs from the search key, so the log cannot be joined to the database indexes).

Chain: row ``seq`` (1, 2, 3, ... without gaps) stores ``prev_hash`` (the previous row's hash, 32 zero
bytes before the first) and ``hash = SHA-256(prev_hash || canonical JSON of the row)``, where the
canonical JSON covers every column including ``seq``. The newest (seq, hash) is also kept in the
single-row ``audit_head`` table, updated in the same transaction, and periodically in
``audit_checkpoints`` (signed when the key store can sign). :func:`verify` re-walks the chain and
detects an edited row (hash mismatch), a deleted row (seq gap / prev_hash mismatch), reordered rows
(seq is hashed, so rows moved or renumbered break the chain), a truncated tail (the head or a
checkpoint names a seq beyond the last row), and a checkpoint signed by another key.

What a local verify cannot see: an attacker with write access who rewrites the tail, the head and
every unsigned checkpoint consistently. Signed checkpoints shipped off the box close that gap.

Concurrency: appends serialise on the database (SQLite's write lock via ``BEGIN IMMEDIATE``,
PostgreSQL's ``SELECT ... FOR UPDATE`` on ``audit_head``), so two gunicorn workers and the CLI can
append at the same time without forking the chain.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from jukics.keystore.base import KeyStore
from jukics.store.clock import Clock, iso_utc, utc_now
from jukics.store.crypto import SearchHasher
from jukics.store.db import write_transaction
from jukics.store.keyed_hash import PrecomputedSearchHasher
from jukics.store.normalise import normalise
from jukics.store.prebuilt_rows import PrebuiltRows
from jukics.store.schema import audit_checkpoints, audit_head, audit_log

log = logging.getLogger("jukics.audit")

OUTCOMES: Final = ("ok", "refused", "error")
CHECKPOINT_CONTEXT: Final = b"jukics audit checkpoint v1\n"
_INSERT_AUDIT: Final = PrebuiltRows(insert(audit_log))

#: Query keys whose values are stored in clear (they are not personal data). Every other value is
#: replaced by a keyed hash: fail closed, so a new search field is never logged in clear by accident.
NON_PERSONAL_QUERY_KEYS: Final = frozenset(
    {
        "kind",
        "change_reason",
        "changed_on",
        "request_id",
        "operator_id",
        "terminal_id",
        "update_seq",
        "purpose",
        "limit",
        "link",
        "years",
        "cutoff",
        "dry_run",
        "items",
        "batch_size",
        "search_keys",
        "reason",
        "history_versions",
        "deleted_residents",
        "client",
        # operators (jukics.auth.operators): staff ids and role names, readable for the access review
        "user_id",
        "roles",
        "grant",
        "revoke",
        "sessions_ended",
        # links (jukics.store.link_state): sequence numbers and dead-letter ids, no personal data
        "from_seq",
        "through_seq",
        "seq",
        "dead_letters",
        "peer",
        "message_type",
        # queries (jukics.links.routing) and 整合性確認 (jukics.links.consistency): counts and ids only
        "source",
        "asked",
        "scope",
        "check_id",
        "report_id",
        "checked",
        "missing_at_peer",
        "unknown_to_cs",
        "mismatched",
        # exports (jukics.exports): names, the media id and the ciphertext hash, never the data
        "recipient",
        "media_id",
        "witness",
        "sha256",
        "export_id",
        # reports (jukics.auth.reports)
        "seed",
        "period",
        # backups (jukics.backup.archive): the archive's file name and time, and whether escrow was used
        "backup",
        "created_at",
        "escrow",
    }
)


@dataclass(frozen=True)
class AuditEvent:
    """One operation. ``targets`` are raw identifiers (住民票コード); only their keyed hashes are stored.

    ``query`` holds the conditions as given; values of keys outside :data:`NON_PERSONAL_QUERY_KEYS`
    are stored as ``"h:<hex>"`` keyed hashes. ``ts`` defaults to the log's clock.
    """

    actor: str
    terminal: str
    action: str
    purpose: str
    query: Mapping[str, Any] = field(default_factory=dict)
    targets: Sequence[str] = ()
    result_count: int = 0
    outcome: str = "ok"
    code: str | None = None
    ts: datetime | None = None


# One encoder, built once (json.dumps builds a new one per call).
_CANONICAL_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))
_canonical: Final = _CANONICAL_ENCODER.encode
#: The columns after ``seq`` and ``ts`` that the row hash covers, in order.
_TAIL_COLUMNS: Final = ("actor", "terminal", "action", "purpose", "query", "target_ids", "result_count", "outcome",
                        "code")


def row_hash(prev_hash: bytes, row: Mapping[Any, Any]) -> bytes:
    """SHA-256(prev_hash || canonical JSON of the row's columns); used by append and verify alike.

    The canonical JSON is that of the list [seq, ts, actor, terminal, action, purpose, query,
    target_ids, result_count, outcome, code].
    """
    body = _canonical([row["seq"], row["ts"], *(row[c] for c in _TAIL_COLUMNS)])
    return hashlib.sha256(prev_hash + body.encode("utf-8")).digest()


def _scalar_json(value: Any) -> str:
    # What the encoder writes for None and int, without building a C encoder for them (it does for
    # every value that is not a str).
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    return _canonical(value)


def _tail_json(columns: Sequence[Any]) -> str:
    # The canonical JSON of a list is "[" + its items' JSON joined by "," + "]" (separators (",", ":")),
    # so the part after seq and ts can be encoded before the chain position is known.
    return ",".join(map(_scalar_json, columns))


def _chained_hash(prev_hash: bytes, seq: int, ts: str, tail_json: str) -> bytes:
    """``row_hash`` of a row whose columns after seq and ts encode to ``tail_json`` (same bytes)."""
    body = f"[{seq},{_canonical(ts)},{tail_json}]"
    return hashlib.sha256(prev_hash + body.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event with its stored columns computed (query sanitised, targets hashed, both as JSON).

    Built by :meth:`AuditLog.prepare` outside the write transaction, so appending it under the lock
    costs only the chain hash.
    """

    ts: str | None
    columns: tuple[Any, ...]  # values of _TAIL_COLUMNS, in order
    tail_json: str


def checkpoint_digest(seq: int, chain_hash: bytes, ts: str) -> bytes:
    return hashlib.sha256(CHECKPOINT_CONTEXT + f"{seq}\n{chain_hash.hex()}\n{ts}".encode()).digest()


class AuditLog:
    """Appends events to the chain. ``hasher`` should carry the audit HMAC key (``audit_hmac_key()``)."""

    def __init__(self, engine: Engine, hasher: SearchHasher, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.hasher = hasher
        self.clock = clock

    @classmethod
    def from_keystore(cls, engine: Engine, keystore: KeyStore, clock: Clock = utc_now) -> AuditLog:
        return cls(engine, PrecomputedSearchHasher(keystore.audit_hmac_key()), clock)

    def target_id(self, juminhyo_code: str) -> str:
        """The keyed hash stored for a 住民票コード (hex). Search the log for a resident with this."""
        return self.hasher.hexdigest("juminhyo_code", normalise("juminhyo_code", juminhyo_code))

    def _sanitise_query(self, query: Mapping[str, Any]) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for raw_key, value in query.items():
            key = str(raw_key)[:64]
            if key in NON_PERSONAL_QUERY_KEYS and (value is None or isinstance(value, str | int | float | bool)):
                clean[key] = value
            elif value is None:
                clean[key] = None
            else:
                text = value if isinstance(value, str) else _canonical(value)
                clean[key] = "h:" + self.hasher.hexdigest(key, normalise(key, text))
        return clean

    def prepare(
        self,
        event: AuditEvent | None = None,
        *,
        actor: str = "",
        terminal: str = "",
        action: str = "",
        purpose: str = "",
        query_json: str | None = None,
        target_ids_json: str | None = None,
        result_count: int = 0,
        outcome: str = "ok",
        code: str | None = None,
    ) -> PreparedEvent:
        """The stored form of ``event`` (or of the keyword columns), ready for :meth:`append_many`.

        ``query_json`` and ``target_ids_json`` are what :meth:`query_json` and
        :meth:`target_ids_json` return, for callers that reuse them across several events.
        """
        ts = None
        if event is not None:
            ts = iso_utc(event.ts) if event.ts is not None else None
            actor, terminal, action, purpose = event.actor, event.terminal, event.action, event.purpose
            query_json = self.query_json(event.query)
            target_ids_json = self.target_ids_json(event.targets)
            result_count, outcome, code = event.result_count, event.outcome, event.code
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome must be one of {OUTCOMES}")
        columns = (
            str(actor)[:128],
            str(terminal)[:128],
            str(action)[:64],
            str(purpose)[:64],
            query_json if query_json is not None else "{}",
            target_ids_json if target_ids_json is not None else "[]",
            int(result_count),
            outcome,
            code[:48] if code else None,
        )
        return PreparedEvent(ts, columns, _tail_json(columns))

    def query_json(self, query: Mapping[str, Any]) -> str:
        """The stored ``query`` column: sanitised (see :class:`AuditEvent`), canonical JSON."""
        return _canonical(self._sanitise_query(query))

    def target_ids_json(self, targets: Iterable[str]) -> str:
        """The stored ``target_ids`` column: the keyed hashes of ``targets``, canonical JSON."""
        hexes = [self.target_id(t) for t in targets]
        # = _canonical(hexes): hex digits need no escaping
        return '["' + '","'.join(hexes) + '"]' if hexes else "[]"

    def _row(self, event: AuditEvent | PreparedEvent, seq: int, prev: bytes, default_ts: str) -> dict[str, Any]:
        prepared = event if isinstance(event, PreparedEvent) else self.prepare(event)
        ts = prepared.ts if prepared.ts is not None else default_ts
        row: dict[str, Any] = dict(zip(_TAIL_COLUMNS, prepared.columns, strict=True))
        row["seq"] = seq
        row["ts"] = ts
        row["prev_hash"] = prev
        row["hash"] = _chained_hash(prev, seq, ts, prepared.tail_json)
        return row

    @staticmethod
    def lock_head(conn: Connection) -> tuple[int, bytes]:
        """Read (and on PostgreSQL lock) the chain head. Call first in a write transaction."""
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
        ).one()
        return int(head.seq), bytes(head.hash)

    def append(self, event: AuditEvent | PreparedEvent, conn: Connection | None = None) -> int:
        """Append one event; returns its seq. With ``conn``, inside the caller's (write) transaction."""
        return self.append_many([event], conn)[0]

    def append_many(
        self, events: Iterable[AuditEvent | PreparedEvent], conn: Connection | None = None
    ) -> list[int]:
        """Append events in order with one insert and one head update; returns their seqs.

        Each event becomes one row of the chain. With ``conn`` the rows join the caller's transaction
        (which must come from :func:`jukics.store.db.write_transaction` on SQLite, so it holds the
        write lock). Events prepared beforehand (:meth:`prepare`) cost only their chain hash here.
        """
        batch = [e if isinstance(e, PreparedEvent) else self.prepare(e) for e in events]
        if not batch:
            return []
        if conn is None:
            with write_transaction(self.engine) as own:
                return self._append(own, batch)
        return self._append(conn, batch)

    def _append(self, conn: Connection, events: list[PreparedEvent]) -> list[int]:
        seq, prev = self.lock_head(conn)
        now = iso_utc(self.clock())
        rows = []
        for event in events:
            seq += 1
            row = self._row(event, seq, prev, now)
            prev = row["hash"]
            rows.append(row)
        _INSERT_AUDIT.executemany(conn, rows)
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev, updated_at=now))
        return [r["seq"] for r in rows]

    def checkpoint(self, keystore: KeyStore | None = None) -> Checkpoint | None:
        """Record the current head as a checkpoint, signed when the key store can sign.

        Returns None when the log is empty; an existing checkpoint for the same head is returned as is.
        """
        with write_transaction(self.engine) as conn:
            seq, chain_hash = self.lock_head(conn)
            if seq == 0:
                return None
            existing = conn.execute(select(audit_checkpoints).where(audit_checkpoints.c.seq == seq)).first()
            if existing is not None:
                return Checkpoint.from_row(existing._mapping)
            ts = iso_utc(self.clock())
            digest = checkpoint_digest(seq, chain_hash, ts)
            signature = keystore.sign_checkpoint(digest) if keystore is not None else None
            public = keystore.checkpoint_public_key() if keystore is not None else None
            key_id = hashlib.sha256(public).hexdigest()[:16] if public else None
            cp = Checkpoint(seq=seq, hash=chain_hash, ts=ts, digest=digest, signature=signature, key_id=key_id)
            conn.execute(insert(audit_checkpoints).values(**cp.as_row()))
        log.info("audit checkpoint at seq %d (%s)", seq, "signed" if signature else "unsigned")
        return cp


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: bytes
    ts: str
    digest: bytes
    signature: bytes | None
    key_id: str | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Checkpoint:
        sig = row["signature"]
        return cls(
            seq=int(row["seq"]),
            hash=bytes(row["hash"]),
            ts=row["ts"],
            digest=bytes(row["digest"]),
            signature=bytes(sig) if sig is not None else None,
            key_id=row["key_id"],
        )

    def as_row(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "ts": self.ts,
            "digest": self.digest,
            "signature": self.signature,
            "key_id": self.key_id,
        }


@dataclass
class VerifyReport:
    """Result of :func:`verify`. ``problems`` are human-readable, each naming the seq it concerns."""

    ok: bool = True
    rows: int = 0
    last_seq: int = 0
    head_seq: int = 0
    checkpoints: int = 0
    signed_checkpoints: int = 0
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str) -> None:
        self.ok = False
        if seq is not None and (self.first_bad_seq is None or seq < self.first_bad_seq):
            self.first_bad_seq = seq
        if len(self.problems) < 100:
            self.problems.append(problem)

    @property
    def summary(self) -> str:
        if self.ok:
            return (
                f"audit chain ok: {self.rows} records, head seq {self.head_seq}, "
                f"{self.checkpoints} checkpoints ({self.signed_checkpoints} signed)"
            )
        return f"audit chain BROKEN (first bad seq {self.first_bad_seq}): " + "; ".join(self.problems[:5])

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "last_seq": self.last_seq,
            "head_seq": self.head_seq,
            "checkpoints": self.checkpoints,
            "signed_checkpoints": self.signed_checkpoints,
            "first_bad_seq": self.first_bad_seq,
            "problems": list(self.problems),
            "summary": self.summary,
        }


def _signature_valid(public_der: bytes, signature: bytes, digest: bytes) -> bool:
    key = load_der_public_key(public_der)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, digest)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def verify(
    engine: Engine,
    *,
    public_key: bytes | None = None,
    require_signatures: bool = False,
    batch_rows: int = 5000,
) -> VerifyReport:
    """Re-walk the whole chain; see the module docstring for what is detected.

    ``public_key`` (DER, from ``keystore.checkpoint_public_key()``) is the key checkpoints must be
    signed with; a checkpoint signed by any other key is reported. With ``require_signatures``, an
    unsigned checkpoint is reported too.
    """
    report = VerifyReport()
    with engine.connect() as conn:
        head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
        if head is None:
            report.fail(None, "audit_head row is missing")
            return report
        report.head_seq = int(head.seq)
        checkpoints = {
            int(r.seq): Checkpoint.from_row(r._mapping)
            for r in conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
        }
        seen_at: dict[int, bytes] = {}
        prev = bytes(head.base_hash)
        expected = int(head.base_seq) + 1
        last_seq = int(head.base_seq)
        stmt = select(audit_log).where(audit_log.c.seq > bindparam("after")).order_by(audit_log.c.seq).limit(batch_rows)
        after = -1
        while True:
            rows = conn.execute(stmt, {"after": after}).mappings().all()
            if not rows:
                break
            for row in rows:
                seq = int(row["seq"])
                after = seq
                report.rows += 1
                if seq != expected:
                    report.fail(min(seq, expected), f"seq {expected} expected, found {seq} (row deleted or moved)")
                if bytes(row["prev_hash"]) != prev:
                    report.fail(seq, f"seq {seq}: prev_hash does not match the previous record")
                stored = bytes(row["hash"])
                if row_hash(bytes(row["prev_hash"]), row) != stored:
                    report.fail(seq, f"seq {seq}: content does not match its hash (record edited)")
                if seq in checkpoints:
                    seen_at[seq] = stored
                prev = stored
                expected = seq + 1
                last_seq = seq
        report.last_seq = last_seq

    if report.head_seq > last_seq:
        report.fail(last_seq + 1, f"truncated: head is at seq {report.head_seq}, the log ends at {last_seq}")
    elif report.head_seq < last_seq:
        report.fail(report.head_seq + 1, f"records after the head: head at {report.head_seq}, log ends at {last_seq}")
    elif last_seq > int(head.base_seq) and bytes(head.hash) != prev:
        report.fail(last_seq, f"seq {last_seq}: head hash does not match the last record")

    for seq, cp in checkpoints.items():
        report.checkpoints += 1
        if seq not in seen_at:
            report.fail(seq, f"checkpoint at seq {seq} names a record that is missing (truncated or deleted)")
        elif seen_at[seq] != cp.hash:
            report.fail(seq, f"checkpoint at seq {seq}: chain hash differs (history rewritten)")
        if checkpoint_digest(cp.seq, cp.hash, cp.ts) != cp.digest:
            report.fail(seq, f"checkpoint at seq {seq}: digest does not match its content")
        if cp.signature is not None:
            report.signed_checkpoints += 1
            if public_key is not None and not _signature_valid(public_key, cp.signature, cp.digest):
                report.fail(seq, f"checkpoint at seq {seq}: signature does not verify with the key store's key")
        elif require_signatures:
            report.fail(seq, f"checkpoint at seq {seq} is not signed")
    return report
