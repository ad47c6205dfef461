"""ResidentStore: the 本人確認情報ファイル (current + history), the outbox, idempotency, audit.

``apply_batch`` semantics (SPEC §3, §6 "nothing lost or half-written"):

1. **Prepare** (no lock held): each item is checked for shape, its record is serialised and
   encrypted, its search hashes computed, and its audit record prepared (query and targets hashed
   and encoded; only the chain hash is left for the lock). An item that fails here is refused
   (``E_BAD_UPDATE``) and contributes nothing.
2. **Decide and write** in ONE write transaction: the state of every resident, request id and
   個人番号 of the batch is read with one bulk SELECT each, then the items are decided in order
   against that state (updated in memory as items apply, so two updates of one resident in one batch
   are sequenced correctly), and everything is written with one ``executemany`` per table: new
   versions, the current index, applied request ids, the outbox messages for both links and one audit
   record per item (refused ones included).
3. If anything fails while writing, the whole transaction rolls back: no item of the batch is
   written, every item reports ``E_STORE_ERROR`` (retry the batch), and the failure is appended to
   the audit chain in a separate transaction. Items never leave partial rows.

Per item, in order (first match wins). The 更新順番号 rule is the one of
:func:`jukics.domain.validate.check_sequence`: per 住民票コード, the first update carries 1 and each
next one the stored value + 1, across 消除 and a later 転入 too.

- request id (依頼管理番号) already applied with the same content: ``duplicate`` with the original
  version; nothing is written (a retried batch creates nothing twice, even when later updates of the
  resident were applied since). Same id, other content: refused ``E_REQUEST_ID_REUSED``.
- 更新順番号 equal to the stored one (under another request id): refused ``E_SEQ_CONFLICT``.
- 更新順番号 lower than the stored one, more than stored + 1, or not 1 for a 住民票コード without a
  record: refused ``E_OUT_OF_ORDER`` (the message says which). Out-of-order updates are refused,
  never applied out of order; the sender re-sends in order.
- kind/state: ``create`` of a resident with a current (non-消除) record ``E_ALREADY_RESIDENT``;
  ``change``/``delete`` of an unknown resident ``E_UNKNOWN_RESIDENT``; ``delete`` of a 消除者
  ``E_ALREADY_DELETED``; ``change`` of a 消除者 ``E_RESIDENT_DELETED``; a 住民票コードの変更 (the
  update's ``lookup_code`` differs from its ``juminhyo_code``) to a code that has a record
  ``E_CODE_ALREADY_USED``.
- a 個人番号 that belongs to another living resident: ``E_MY_NUMBER_IN_USE``.
- otherwise ``applied``: a new version (the old one stays untouched as history), the current index
  moved to it, an F2 message (exactly :data:`jukics.domain.fields.F2_ITEMS`) for the link
  ``prefecture`` and a 附票 message (:data:`~jukics.domain.fields.FUHYO_ITEMS`, never 個人番号) for
  the link ``fuhyo``, each with the next per-link sequence number, encrypted. A 住民票コードの変更
  moves the current index from the old code to the new one; the versions under the old code stay
  in the new code's history.

The rules that depend on the 異動事由 (転居 changes only the address, 更新禁止フラグ, 出生 over a
消除者, ...) belong to validation (:mod:`jukics.domain.validate`), which runs before the store against
:meth:`ResidentStore.get_current_many`. They stay race-free although validation reads outside the
store's transaction: any write to a resident raises its 更新順番号, so an item validated against a
record that changed in the meantime is refused here with ``E_SEQ_CONFLICT``/``E_OUT_OF_ORDER``.

Records come back as plain dicts keyed by :mod:`jukics.domain.fields` names (JSON types: dates as ISO
strings) plus ``record_status`` (``current``, ``deleted`` (消除) or ``history``) and ``timestamp``.
Messages (``ItemResult.message``, logs) never contain personal data.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from jukics.audit.chain import AuditEvent, AuditLog, PreparedEvent
from jukics.domain import fields
from jukics.keystore.base import KeyStore
from jukics.store.bulk import Prebuilt
from jukics.store.clock import Clock, iso_utc, utc_now
from jukics.store.crypto import FieldCipher, SearchHasher
from jukics.store.db import write_transaction
from jukics.store.keyed_hash import PrecomputedSearchHasher
from jukics.store.normalise import normalise
from jukics.store.prebuilt_rows import PrebuiltRows
from jukics.store.schema import (
    applied_requests,
    outbox,
    outbox_head,
    resident_versions,
    residents_current,
)

log = logging.getLogger("jukics.store")

KINDS: Final = ("create", "change", "delete")
META_FIELDS: Final = ("request_id", "operator_id", "terminal_id", "update_seq")
#: Link name -> items of its message. 附票 never carries 個人番号 (seed 004).
LINK_ITEMS: Final[dict[str, tuple[str, ...]]] = {"prefecture": fields.F2_ITEMS, "fuhyo": fields.FUHYO_ITEMS}
_CHUNK: Final = 500  # IN-list size per SELECT (well under SQLite's variable limit)
_CODE_HASH_MEMO: Final = 20_000  # at most this many 住民票コード hashes remembered (about 2 batches)
_DERIVED: Final = frozenset({"timestamp", "record_status"})

# Stable codes. Those shared with validation are the codes of jukics.domain.errors.ERROR_CODES, so
# the API reports one code whichever layer refused; the last three are the store's own.
E_OUT_OF_ORDER: Final = "E_OUT_OF_ORDER"
E_SEQ_CONFLICT: Final = "E_SEQ_CONFLICT"
E_ALREADY_RESIDENT: Final = "E_ALREADY_RESIDENT"
E_UNKNOWN_RESIDENT: Final = "E_UNKNOWN_RESIDENT"
E_ALREADY_DELETED: Final = "E_ALREADY_DELETED"
E_RESIDENT_DELETED: Final = "E_RESIDENT_DELETED"
E_MY_NUMBER_IN_USE: Final = "E_MY_NUMBER_IN_USE"
E_CODE_ALREADY_USED: Final = "E_CODE_ALREADY_USED"
E_BAD_UPDATE: Final = "E_BAD_UPDATE"
E_REQUEST_ID_REUSED: Final = "E_REQUEST_ID_REUSED"
E_STORE_ERROR: Final = "E_STORE_ERROR"

#: Codes the store itself defines (the others are registered in jukics.domain.errors).
STORE_ERROR_CODES: Final[dict[str, str]] = {
    E_BAD_UPDATE: "the update does not have the shape the store needs (kind, 住民票コード, record, meta)",
    E_REQUEST_ID_REUSED: "this 依頼管理番号 was already applied with different content",
    E_STORE_ERROR: "the batch could not be stored and was rolled back; nothing was written, retry it",
}

# refusal reason -> (code, value-free message)
_REFUSALS: Final[dict[str, tuple[str, str]]] = {
    "request_reused": (E_REQUEST_ID_REUSED, STORE_ERROR_CODES[E_REQUEST_ID_REUSED]),
    "seq_conflict": (E_SEQ_CONFLICT, "更新順番号 equals the stored record's, under another 依頼管理番号"),
    "seq_lower": (E_OUT_OF_ORDER, "更新順番号 is lower than the stored record's (stale update)"),
    "seq_gap": (E_OUT_OF_ORDER, "更新順番号 skips ahead of the stored record; send the missing updates first"),
    "seq_first": (E_OUT_OF_ORDER, "the first update of a 住民票コード must carry 更新順番号 1"),
    "code_used": (E_CODE_ALREADY_USED, "the new 住民票コード already has a record"),
    "resident": (E_ALREADY_RESIDENT, "a create for a resident who already has a current record"),
    "unknown": (E_UNKNOWN_RESIDENT, "no record for this 住民票コード"),
    "already_deleted": (E_ALREADY_DELETED, "消除 of a record that is already 消除"),
    "resident_deleted": (E_RESIDENT_DELETED, "a change for a 消除者 record"),
    "my_number": (E_MY_NUMBER_IN_USE, "this 個人番号 belongs to another current resident"),
}
_MAX_SEQ: Final = 2**63 - 1


@dataclass(frozen=True)
class ItemResult:
    """Outcome of one update. ``status``: applied | duplicate | refused | error."""

    index: int
    request_id: str | None
    status: str
    code: str | None = None
    version: int | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "request_id": self.request_id,
            "status": self.status,
            "code": self.code,
            "version": self.version,
            "message": self.message,
        }


@dataclass(frozen=True)
class OutboxMessage:
    """One message for a peer link; ``payload`` has exactly the link's items."""

    link: str
    seq: int
    message_id: str
    kind: str
    created_at: str
    payload: dict[str, Any]


@dataclass
class _Prepared:
    index: int
    kind: str
    code: str
    code_hash: bytes
    lookup_code: str
    lookup_hash: bytes
    request_id: str
    operator_id: str
    terminal_id: str
    update_seq: int
    digest: bytes
    record_ct: bytes
    hashes: dict[str, bytes | None]
    change_reason: str | None
    changed_on: str | None
    #: the audit record's query and targets (JSON), computed before the write lock is taken
    audit_query: str
    audit_targets: str
    #: the audit record if the item applies (the usual outcome), also prepared beforehand
    applied_event: PreparedEvent


@dataclass
class _State:
    version_id: int
    version: int
    update_seq: int
    status: str
    my_number_hash: bytes | None


def _attribute(obj: Any, name: str) -> Any:
    return getattr(obj, name, None)


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _json_default(value: Any) -> Any:
    if isinstance(value, _dt.date | _dt.datetime):
        return value.isoformat()
    raise TypeError("value is not JSON serialisable")


# Built once: json.dumps would build a new encoder for every record. _dumps is canonical (sorted
# keys, for digests); a stored record needs no key order (it is decoded into a dict), so it skips
# the sort.
_dumps: Final = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=_json_default
).encode
_record_json: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class _BadUpdate(Exception):
    pass


cur = residents_current.c
ver = resident_versions.c

_CURRENT_STATE = select(
    cur.code_hash,
    cur.version_id,
    cur.version,
    cur.update_seq,
    cur.status,
    cur.my_number_hash,
).where(cur.code_hash.in_(bindparam("hashes", expanding=True)))
_APPLIED = select(applied_requests).where(
    applied_requests.c.request_id.in_(bindparam("ids", expanding=True))
)
_OWNERS = select(cur.code_hash, cur.my_number_hash).where(
    cur.my_number_hash.in_(bindparam("hashes", expanding=True)), cur.status == "current"
)
_MAX_VERSION_ID = select(func.max(ver.id))
_CURRENT_COLUMNS: Final = (
    "version_id",
    "version",
    "update_seq",
    "status",
    "my_number_hash",
    "name_seion_hash",
    "birth_date_hash",
    "address_hash",
    "updated_at",
    "deleted_at",
)
_UPDATE_CURRENT = Prebuilt(
    update(residents_current)
    .where(cur.code_hash == bindparam("k_code_hash"))
    .values({name: bindparam("k_" + name) for name in _CURRENT_COLUMNS})
)
_INSERT_VERSIONS = PrebuiltRows(insert(resident_versions))
_INSERT_CURRENT = PrebuiltRows(insert(residents_current))
_INSERT_APPLIED = PrebuiltRows(insert(applied_requests))
_INSERT_OUTBOX = PrebuiltRows(insert(outbox))
_KNOWN_FIELDS: Final = frozenset(fields.LABELS)
_READ_COLUMNS = (cur.code_hash, cur.status, ver.update_seq, ver.recorded_at, ver.record_ct)
_JOINED = residents_current.join(resident_versions, ver.id == cur.version_id)
_BY_CODE_HASH = select(*_READ_COLUMNS).select_from(_JOINED).where(cur.code_hash == bindparam("h"))
_BY_CODE_HASHES = (
    select(*_READ_COLUMNS).select_from(_JOINED).where(cur.code_hash.in_(bindparam("hashes", expanding=True)))
)
_CURRENT_PAGE = (
    select(*_READ_COLUMNS).select_from(_JOINED).where(cur.code_hash > bindparam("after"))
    .order_by(cur.code_hash).limit(bindparam("limit"))
)
_BY_MY_NUMBER = select(*_READ_COLUMNS).select_from(_JOINED).where(cur.my_number_hash == bindparam("h"))
_BY_NAME_AND_BIRTH = (
    select(*_READ_COLUMNS)
    .select_from(_JOINED)
    .where(cur.name_seion_hash == bindparam("n"), cur.birth_date_hash == bindparam("b"))
)
_BY_NAME_AND_ADDRESS = (
    select(*_READ_COLUMNS)
    .select_from(_JOINED)
    .where(cur.name_seion_hash == bindparam("n"), cur.address_hash == bindparam("a"))
)
_BY_BIRTH_AND_ADDRESS = (
    select(*_READ_COLUMNS)
    .select_from(_JOINED)
    .where(cur.birth_date_hash == bindparam("b"), cur.address_hash == bindparam("a"))
)
_PENDING = (
    select(outbox.c.seq, outbox.c.kind, outbox.c.created_at, ver.code_hash, ver.update_seq, ver.record_ct)
    .select_from(outbox.join(resident_versions, ver.id == outbox.c.version_id))
    .where(outbox.c.link == bindparam("link"), outbox.c.seq > bindparam("after"))
    .order_by(outbox.c.seq)
    .limit(bindparam("limit"))
)
_CURRENT_POINTER = select(cur.version_id).where(cur.code_hash == bindparam("h"))
_VERSION_BY_ID = select(
    ver.id, ver.prev_id, ver.code_hash, ver.update_seq, ver.recorded_at, ver.record_ct, ver.status
).where(ver.id == bindparam("id"))


class ResidentStore:
    """The resident store. Build it with :meth:`from_keystore` in the service.

    ``cipher`` encrypts records and messages, ``hasher`` makes the search hashes, ``clock`` returns
    aware datetimes (injected in tests). ``audit`` is the audit chain the store appends to; when
    omitted, one is built from ``hasher``; the service passes one keyed with the audit HMAC key.
    """

    def __init__(
        self,
        engine: Engine,
        cipher: FieldCipher,
        hasher: SearchHasher,
        clock: Clock = utc_now,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        self.engine = engine
        self.cipher = cipher
        self.hasher = hasher
        self.clock = clock
        self.audit = audit if audit is not None else AuditLog(engine, hasher, clock)
        # 住民票コード -> its search hash, shared by the reads and the write of one intake batch
        # (each code is hashed once per batch, not three times); emptied after every batch.
        self._code_hashes: dict[str, bytes] = {}
        #: 異動事由 whose applied updates are passed to ``on_special`` inside the intake transaction
        #: (with code, code_hash, changed_on and the new address); the F6 特例転入 uses it.
        self.special_reasons: frozenset[str] = frozenset()
        self.on_special: Callable[[Connection, list[dict[str, Any]], str], None] | None = None

    @classmethod
    def from_keystore(cls, engine: Engine, keystore: KeyStore, clock: Clock = utc_now) -> ResidentStore:
        return cls(
            engine,
            FieldCipher(keystore.data_key()),
            PrecomputedSearchHasher(keystore.hmac_key()),
            clock,
            audit=AuditLog.from_keystore(engine, keystore, clock),
        )

    # ---- hashing -------------------------------------------------------------------------------

    def request_digest(self, fingerprint: str) -> bytes:
        """Keyed digest of a request's canonical form (what ``applied_requests`` returns)."""
        return self.hasher.digest("request", fingerprint)

    def applied_requests(self, request_ids: Iterable[str]) -> dict[str, bytes]:
        """依頼管理番号 already applied -> the keyed digest of the request that applied it."""
        out: dict[str, bytes] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(set(request_ids))):
                for r in conn.execute(_APPLIED, {"ids": list(chunk)}):
                    out[r.request_id] = bytes(r.digest)
        return out

    def code_hash(self, juminhyo_code: str) -> bytes:
        found = self._code_hashes.get(juminhyo_code)
        if found is None:
            found = self.hasher.digest("juminhyo_code", normalise("juminhyo_code", juminhyo_code))
            if len(self._code_hashes) < _CODE_HASH_MEMO:
                self._code_hashes[juminhyo_code] = found
        return found

    def _hash(self, name: str, value: Any) -> bytes | None:
        if value is None or value == "":
            return None
        return self.hasher.digest(name, normalise(name, value))

    def _search_hashes(self, record: Mapping[str, Any]) -> dict[str, bytes | None]:
        # Always derived here from the かな氏名 (the same function as search), so the index does not
        # depend on whether the caller filled in 清音化かな氏名.
        kana = record.get("name_kana") or record.get("name_kana_seion")
        return {
            "my_number_hash": self._hash("my_number", record.get("my_number")),
            "name_seion_hash": self._hash("name_kana_seion", kana),
            "birth_date_hash": self._hash("birth_date", record.get("birth_date")),
            "address_hash": self._hash("address", record.get("address")),
        }

    # ---- intake --------------------------------------------------------------------------------

    def _prepare(self, index: int, update_: Any, actor: str, terminal: str) -> _Prepared:
        attr: Callable[[str], Any] = (
            update_.get if isinstance(update_, Mapping) else functools.partial(_attribute, update_)
        )
        kind = attr("kind")
        if kind not in KINDS:
            raise _BadUpdate("kind must be create, change or delete")
        record = attr("record")
        if not isinstance(record, Mapping):
            raise _BadUpdate("record must be an object")
        meta = attr("meta") or {}
        code = attr("juminhyo_code") or record.get("juminhyo_code")
        if not isinstance(code, str) or not code:
            raise _BadUpdate("juminhyo_code is missing")
        if record.get("juminhyo_code") not in (None, code):
            raise _BadUpdate("record.juminhyo_code differs from the update's juminhyo_code")
        lookup = attr("lookup_code") or code
        if not isinstance(lookup, str):
            raise _BadUpdate("lookup_code must be a 住民票コード")
        unknown = record.keys() - _KNOWN_FIELDS
        if unknown:
            raise _BadUpdate(f"{len(unknown)} unknown field name(s) in the record")
        values: dict[str, Any] = {}
        for name in META_FIELDS:
            value = _get(meta, name)
            values[name] = value if value is not None else record.get(name)
        for name in ("request_id", "operator_id", "terminal_id"):
            if not isinstance(values[name], str) or not values[name]:
                raise _BadUpdate(f"{name} ({fields.LABELS[name]}) is missing")
        if len(values["request_id"]) > 64:
            raise _BadUpdate("request_id is longer than 64 characters")
        seq = values["update_seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= _MAX_SEQ:
            raise _BadUpdate("update_seq (更新順番号) must be an integer from 1 to 2^63-1")

        content = {k: v for k, v in record.items() if k not in META_FIELDS and k not in _DERIVED}
        content["juminhyo_code"] = code
        fingerprint = attr("request_fingerprint")
        digest = attr("request_digest")
        try:
            # Intake passes the canonical form of the request as received (and its digest, which it
            # computed for its own duplicate check), so a retried request is recognised whatever was
            # applied since; other callers are fingerprinted by content.
            if not isinstance(digest, bytes):
                digest = (
                    self.request_digest(fingerprint)
                    if isinstance(fingerprint, str)
                    else self.hasher.digest("request-content", _dumps([kind, seq, content]))
                )
            stored = dict(content, **values)
            code_hash = self.code_hash(code)
            lookup_hash = code_hash if lookup == code else self.code_hash(lookup)
            record_ct = self.cipher.encrypt(code_hash.hex(), "record", _record_json(stored), version=seq)
            change_reason = None if content.get("change_reason") is None else str(content["change_reason"])[:32]
            audit_query = self.audit.query_json(
                {
                    "request_id": values["request_id"],
                    "update_seq": seq,
                    "operator_id": values["operator_id"],
                    "terminal_id": values["terminal_id"],
                    "change_reason": change_reason,
                }
            )
            audit_targets = self.audit.target_ids_json([code] if lookup == code else [code, lookup])
            prepared = _Prepared(
                index=index,
                kind=kind,
                code=code,
                code_hash=code_hash,
                lookup_code=lookup,
                lookup_hash=lookup_hash,
                request_id=values["request_id"],
                operator_id=values["operator_id"],
                terminal_id=values["terminal_id"],
                update_seq=seq,
                digest=digest,
                record_ct=record_ct,
                hashes=self._search_hashes(content),
                change_reason=change_reason,
                changed_on=None if content.get("changed_on") is None else str(content["changed_on"])[:10],
                audit_query=audit_query,
                audit_targets=audit_targets,
                applied_event=self.audit.prepare(
                    actor=actor, terminal=terminal, action=f"intake.{kind}", purpose="F1", query_json=audit_query,
                    target_ids_json=audit_targets, result_count=1, outcome="ok",
                ),
            )
        except (TypeError, ValueError):
            raise _BadUpdate("the record holds a value that cannot be stored (not JSON data)") from None
        return prepared

    def apply_batch(self, updates: Sequence[Any], *, actor: str, terminal: str) -> list[ItemResult]:
        """Apply a batch of updates (create/change/delete) in order; one result per item, same order.

        Each update has ``kind``, ``juminhyo_code``, ``record`` (the full new record, keyed by field
        names) and ``meta`` (``request_id``, ``operator_id``, ``terminal_id``, ``update_seq``), as
        attributes or mapping keys. ``actor``/``terminal`` identify the caller for the audit chain
        (e.g. the 既存住基 client certificate and its host). See the module docstring for semantics.
        """
        results: dict[int, ItemResult] = {}
        prepared: list[_Prepared] = []
        refused_events: dict[int, AuditEvent] = {}
        for index, update_ in enumerate(updates):
            try:
                prepared.append(self._prepare(index, update_, actor, terminal))
            except _BadUpdate as exc:
                request_id = _get(_get(update_, "meta") or {}, "request_id")
                rid = request_id if isinstance(request_id, str) else None
                results[index] = ItemResult(index, rid, "refused", E_BAD_UPDATE, None, str(exc))
                code = _get(update_, "juminhyo_code")
                refused_events[index] = AuditEvent(
                    actor=actor,
                    terminal=terminal,
                    action=f"intake.{_get(update_, 'kind') if _get(update_, 'kind') in KINDS else 'invalid'}",
                    purpose="F1",
                    query={"request_id": rid},
                    targets=[code] if isinstance(code, str) and code else [],
                    outcome="refused",
                    code=E_BAD_UPDATE,
                )
        try:
            with write_transaction(self.engine) as conn:
                decided, events = self._decide_and_write(conn, prepared, actor, terminal, refused_events)
            results.update(decided)
        except Exception as exc:  # any failure: the transaction rolled back; report, audit, go on
            log.error("intake batch of %d rolled back (%s); nothing written", len(updates), type(exc).__name__)
            for p in prepared:
                results[p.index] = ItemResult(
                    p.index, p.request_id, "error", E_STORE_ERROR, None, STORE_ERROR_CODES[E_STORE_ERROR]
                )
            events = [refused_events[i] for i in sorted(refused_events)] + [
                self._event(p, actor, terminal, "error", E_STORE_ERROR, 0) for p in prepared
            ]
            try:
                self.audit.append_many(events)
            except Exception as audit_exc:
                log.critical("audit append failed after a rolled-back batch (%s)", type(audit_exc).__name__)
        finally:
            self._code_hashes.clear()
        out = [results[i] for i in range(len(updates))]
        counts = {s: sum(1 for r in out if r.status == s) for s in ("applied", "duplicate", "refused", "error")}
        log.info("intake batch: %s", " ".join(f"{k}={v}" for k, v in counts.items()))
        return out

    def _event(
        self, p: _Prepared, actor: str, terminal: str, outcome: str, code: str | None, count: int
    ) -> PreparedEvent:
        # query: request_id, update_seq, operator_id, terminal_id, change_reason; targets: the
        # 住民票コード (and the old one for 住民票コードの変更). Both prepared in _prepare.
        return self.audit.prepare(
            actor=actor, terminal=terminal, action=f"intake.{p.kind}", purpose="F1", query_json=p.audit_query,
            target_ids_json=p.audit_targets, result_count=count, outcome=outcome, code=code,
        )

    def _load_states(self, conn: Connection, prepared: list[_Prepared]) -> dict[bytes, _State]:
        states: dict[bytes, _State] = {}
        hashes = list({p.code_hash for p in prepared} | {p.lookup_hash for p in prepared})
        for chunk in _chunks(hashes):
            for r in conn.execute(_CURRENT_STATE, {"hashes": list(chunk)}):
                states[bytes(r.code_hash)] = _State(
                    version_id=int(r.version_id),
                    version=int(r.version),
                    update_seq=int(r.update_seq),
                    status=r.status,
                    my_number_hash=bytes(r.my_number_hash) if r.my_number_hash is not None else None,
                )
        return states

    def _decide_and_write(
        self,
        conn: Connection,
        prepared: list[_Prepared],
        actor: str,
        terminal: str,
        refused_events: dict[int, AuditEvent],
    ) -> tuple[dict[int, ItemResult], list[AuditEvent | PreparedEvent]]:
        AuditLog.lock_head(conn)  # PostgreSQL: serialise writers first, before reading any state
        now = iso_utc(self.clock())
        states: dict[bytes, _State | None] = dict(self._load_states(conn, prepared))
        in_db = set(states)  # current rows that exist before this batch (update/delete vs insert)
        applied: dict[str, tuple[bytes, int]] = {}
        for chunk in _chunks(list({p.request_id for p in prepared})):
            for r in conn.execute(_APPLIED, {"ids": list(chunk)}):
                applied[r.request_id] = (bytes(r.digest), int(r.version))
        owners: dict[bytes, set[bytes]] = {}
        numbers = list({h for p in prepared if (h := p.hashes["my_number_hash"]) is not None})
        for chunk in _chunks(numbers):
            for r in conn.execute(_OWNERS, {"hashes": list(chunk)}):
                owners.setdefault(bytes(r.my_number_hash), set()).add(bytes(r.code_hash))
        next_id = (conn.execute(_MAX_VERSION_ID).scalar() or 0) + 1
        special: list[_Prepared] = []
        heads = {r.link: int(r.last_seq) for r in conn.execute(select(outbox_head.c.link, outbox_head.c.last_seq))}

        results: dict[int, ItemResult] = {}
        events: dict[int, AuditEvent | PreparedEvent] = dict(refused_events)
        version_rows: list[dict[str, Any]] = []
        current_rows: dict[bytes, dict[str, Any] | None] = {}  # None: remove the row (code changed)
        applied_rows: list[dict[str, Any]] = []
        outbox_rows: list[dict[str, Any]] = []

        for p in prepared:
            state = states.get(p.lookup_hash)
            reason = self._refusal(p, state, states, applied, owners)
            if reason == "duplicate":
                version = applied[p.request_id][1]
                results[p.index] = ItemResult(p.index, p.request_id, "duplicate", None, version, "already applied")
                events[p.index] = self._event(p, actor, terminal, "ok", "I_DUPLICATE", 0)
                continue
            if reason is not None:
                code, message = _REFUSALS[reason]
                results[p.index] = ItemResult(p.index, p.request_id, "refused", code, None, message)
                events[p.index] = self._event(p, actor, terminal, "refused", code, 0)
                continue

            version = state.version + 1 if state else 1
            status = "deleted" if p.kind == "delete" else "current"
            version_rows.append(
                {
                    "id": next_id,
                    "code_hash": p.code_hash,
                    "version": version,
                    "prev_id": state.version_id if state else None,
                    "kind": p.kind,
                    "status": status,
                    "update_seq": p.update_seq,
                    "change_reason": p.change_reason,
                    "changed_on": p.changed_on,
                    "recorded_at": now,
                    "record_ct": p.record_ct,
                }
            )
            if p.lookup_hash != p.code_hash:  # 住民票コードの変更: the index moves to the new code
                current_rows[p.lookup_hash] = None
                states[p.lookup_hash] = None
            current_rows[p.code_hash] = {
                "code_hash": p.code_hash,
                "version_id": next_id,
                "version": version,
                "update_seq": p.update_seq,
                "status": status,
                "updated_at": now,
                "deleted_at": now if status == "deleted" else None,
                **p.hashes,
            }
            applied_rows.append(
                {
                    "request_id": p.request_id,
                    "code_hash": p.code_hash,
                    "version": version,
                    "update_seq": p.update_seq,
                    "digest": p.digest,
                    "applied_at": now,
                }
            )
            for link in LINK_ITEMS:
                heads[link] += 1
                outbox_rows.append(
                    {"link": link, "seq": heads[link], "version_id": next_id, "kind": p.kind, "created_at": now}
                )
            # The in-memory state moves on, so later items of this batch see this one.
            if state is not None and state.my_number_hash is not None:
                owners.get(state.my_number_hash, set()).discard(p.lookup_hash)
            new_number = p.hashes["my_number_hash"]
            if status == "current" and new_number is not None:
                owners.setdefault(new_number, set()).add(p.code_hash)
            states[p.code_hash] = _State(
                version_id=next_id,
                version=version,
                update_seq=p.update_seq,
                status=status,
                my_number_hash=new_number,
            )
            applied[p.request_id] = (p.digest, version)
            next_id += 1
            results[p.index] = ItemResult(p.index, p.request_id, "applied", None, version, "")
            events[p.index] = p.applied_event
            if p.change_reason in self.special_reasons:
                special.append(p)

        if version_rows:
            _INSERT_VERSIONS.executemany(conn, version_rows)
            removed = [h for h, row in current_rows.items() if row is None and h in in_db]
            inserts = [row for h, row in current_rows.items() if row is not None and h not in in_db]
            updates = [{"k_" + k: v for k, v in row.items()} for h, row in current_rows.items()
                       if row is not None and h in in_db]
            for chunk in _chunks(removed):
                conn.execute(residents_current.delete().where(cur.code_hash.in_(list(chunk))))
            _INSERT_CURRENT.executemany(conn, inserts)
            _UPDATE_CURRENT.executemany(conn, updates)
            _INSERT_APPLIED.executemany(conn, applied_rows)
            _INSERT_OUTBOX.executemany(conn, outbox_rows)
            for link in {row["link"] for row in outbox_rows}:
                conn.execute(update(outbox_head).where(outbox_head.c.link == link).values(last_seq=heads[link]))
        if special and self.on_special is not None:
            # e.g. F6: a 特例転入 claims its 転出証明書情報 and queues the 転入通知情報, in this transaction
            self.on_special(conn, [self._special_item(p) for p in special], now)
        ordered = [events[i] for i in sorted(events)]
        self.audit.append_many(ordered, conn)
        return results, ordered

    @staticmethod
    def _refusal(
        p: _Prepared,
        state: _State | None,
        states: Mapping[bytes, _State | None],
        applied: Mapping[str, tuple[bytes, int]],
        owners: Mapping[bytes, set[bytes]],
    ) -> str | None:
        """None to apply, "duplicate", or a key of _REFUSALS. The order is the module docstring's."""
        if p.request_id in applied:
            return "duplicate" if applied[p.request_id][0] == p.digest else "request_reused"
        if state is None:
            if p.update_seq != 1:
                return "seq_first"
        elif p.update_seq == state.update_seq:
            return "seq_conflict"
        elif p.update_seq < state.update_seq:
            return "seq_lower"
        elif p.update_seq > state.update_seq + 1:
            return "seq_gap"
        if p.kind == "create":
            if state is not None and state.status == "current":
                return "resident"
        elif state is None:
            return "unknown"
        elif state.status == "deleted":
            return "already_deleted" if p.kind == "delete" else "resident_deleted"
        if p.lookup_hash != p.code_hash and states.get(p.code_hash) is not None:
            return "code_used"
        number = p.hashes["my_number_hash"]
        if p.kind != "delete" and number is not None and owners.get(number, set()) - {p.lookup_hash}:
            return "my_number"
        return None

    def _special_item(self, p: _Prepared) -> dict[str, Any]:
        record = json.loads(self.cipher.decrypt(p.code_hash.hex(), "record", p.record_ct, version=p.update_seq))
        return {"code": p.code, "code_hash": p.code_hash, "change_reason": p.change_reason,
                "changed_on": p.changed_on, "address": record.get("address")}

    # ---- reads ---------------------------------------------------------------------------------

    def _decode(self, code_hash: bytes, update_seq: int, record_ct: bytes, status: str, recorded_at: str) -> dict:
        record = json.loads(self.cipher.decrypt(code_hash.hex(), "record", record_ct, version=int(update_seq)))
        record["record_status"] = status
        record["timestamp"] = recorded_at
        return record

    def _decode_row(self, row: Any) -> dict:
        return self._decode(bytes(row.code_hash), row.update_seq, bytes(row.record_ct), row.status, row.recorded_at)

    def get_current(self, juminhyo_code: str) -> dict | None:
        """The newest version of a resident's record (also for a 消除者: ``record_status == 'deleted'``)."""
        with self.engine.connect() as conn:
            row = conn.execute(_BY_CODE_HASH, {"h": self.code_hash(juminhyo_code)}).first()
        return self._decode_row(row) if row is not None else None

    def current_record(self, juminhyo_code: str) -> dict | None:
        """Alias of :meth:`get_current`, the name :mod:`jukics.domain.validate` uses."""
        return self.get_current(juminhyo_code)

    def get_current_many(self, juminhyo_codes: Iterable[str]) -> dict[str, dict]:
        """{住民票コード: record} for those of ``juminhyo_codes`` that have a record (one query per 500)."""
        self._code_hashes.clear()  # a new batch starts: remember its codes' hashes only
        by_hash = {self.code_hash(c): c for c in juminhyo_codes}
        found: dict[str, dict] = {}
        keys = list(by_hash)
        with self.engine.connect() as conn:
            for chunk in _chunks(keys):
                for row in conn.execute(_BY_CODE_HASHES, {"hashes": list(chunk)}):
                    found[by_hash[bytes(row.code_hash)]] = self._decode_row(row)
        return found

    def get_history(self, juminhyo_code: str, *, include_current: bool = False) -> list[dict]:
        """Earlier versions, oldest first, each with ``record_status == 'history'`` (plus the current one)."""
        code_hash = self.code_hash(juminhyo_code)
        versions: list[dict] = []
        with self.engine.connect() as conn:
            pointer = conn.execute(_CURRENT_POINTER, {"h": code_hash}).scalar()
            first = True
            while pointer is not None:
                row = conn.execute(_VERSION_BY_ID, {"id": pointer}).first()
                if row is None:
                    break  # older versions were purged (retention)
                status = row.status if first else "history"
                if include_current or not first:
                    blob = bytes(row.record_ct)
                    versions.append(self._decode(bytes(row.code_hash), row.update_seq, blob, status, row.recorded_at))
                pointer = row.prev_id
                first = False
        versions.reverse()
        return versions

    def _find(self, stmt: Any, params: dict[str, Any]) -> list[dict]:
        if any(v is None for v in params.values()):
            return []
        with self.engine.connect() as conn:
            return [self._decode_row(row) for row in conn.execute(stmt, params)]

    def find_by_my_number(self, my_number: str) -> list[dict]:
        """Records (current and 消除) whose 個人番号 matches, via its keyed hash."""
        return self._find(_BY_MY_NUMBER, {"h": self._hash("my_number", my_number)})

    def find_by_name_and_birth_date(self, name_kana: str, birth_date: str) -> list[dict]:
        """Search by かな氏名 (清音化 applied here) + 生年月日, via keyed hashes."""
        return self._find(
            _BY_NAME_AND_BIRTH,
            {"n": self._hash("name_kana_seion", name_kana), "b": self._hash("birth_date", birth_date)},
        )

    def find_by_name_and_address(self, name_kana: str, address: str) -> list[dict]:
        """Search by かな氏名 (清音化 applied here) + 住所, via keyed hashes."""
        return self._find(
            _BY_NAME_AND_ADDRESS,
            {"n": self._hash("name_kana_seion", name_kana), "a": self._hash("address", address)},
        )

    def find_by_birth_date_and_address(self, birth_date: str, address: str) -> list[dict]:
        """Search by 生年月日 + 住所 (the "2 of 4" reading of the search rule), via keyed hashes."""
        return self._find(
            _BY_BIRTH_AND_ADDRESS,
            {"b": self._hash("birth_date", birth_date), "a": self._hash("address", address)},
        )

    def iter_current(self, items: Sequence[str], *, batch: int = 2000) -> Iterator[dict[str, Any]]:
        """Every resident's newest record (消除者 included), projected on ``items``, in batches.

        For the 整合性確認 (F4): the whole file, read in keyset pages of ``batch`` residents (one
        short read transaction each, so intake is never held up), in code-hash order.
        """
        after = b""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(_CURRENT_PAGE, {"after": after, "limit": batch}).all()
            for row in rows:
                record = json.loads(self.cipher.decrypt(bytes(row.code_hash).hex(), "record", bytes(row.record_ct),
                                                        version=int(row.update_seq)))
                yield {item: record.get(item) for item in items}
            if len(rows) < batch:
                return
            after = bytes(rows[-1].code_hash)

    def stats(self) -> dict[str, int]:
        """Aggregate counts only (「個人に着目した分析・統計は行わず」)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(cur.status, func.count()).group_by(cur.status)).all()
            by_status = {str(status): int(count) for status, count in rows}
            versions = conn.execute(select(func.count()).select_from(resident_versions)).scalar() or 0
        return {
            "residents": int(by_status.get("current", 0)),
            "deleted": int(by_status.get("deleted", 0)),
            "versions": int(versions),
        }

    # ---- outbox (read by the link worker) ------------------------------------------------------

    def outbox_pending(self, link: str, *, limit: int = 100) -> list[OutboxMessage]:
        """Messages of ``link`` after the acknowledged sequence, in order: exactly the link's items
        (:data:`LINK_ITEMS`), projected from the version each message points to."""
        items = LINK_ITEMS.get(link)
        if items is None:
            raise KeyError(f"unknown link {link!r}")
        with self.engine.connect() as conn:
            acked = conn.execute(select(outbox_head.c.acked_seq).where(outbox_head.c.link == link)).scalar_one()
            rows = conn.execute(_PENDING, {"link": link, "after": acked, "limit": limit}).all()
        messages = []
        for r in rows:
            record = json.loads(
                self.cipher.decrypt(bytes(r.code_hash).hex(), "record", bytes(r.record_ct), version=int(r.update_seq))
            )
            messages.append(
                OutboxMessage(
                    link=link,
                    seq=int(r.seq),
                    message_id=f"{link}-{int(r.seq)}",
                    kind=r.kind,
                    created_at=r.created_at,
                    payload={item: record.get(item) for item in items},
                )
            )
        return messages

    def outbox_counts(self) -> dict[str, int]:
        """Messages waiting per link (last written minus acknowledged sequence)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(outbox_head.c.link, outbox_head.c.last_seq, outbox_head.c.acked_seq)).all()
        return {str(r.link): int(r.last_seq) - int(r.acked_seq) for r in rows}

    def outbox_ack(self, link: str, seq: int) -> int:
        """Mark ``link`` delivered up to ``seq`` and delete those messages (they hold personal data).

        Returns the number of messages deleted. Acknowledging backwards is a no-op.
        """
        with write_transaction(self.engine) as conn:
            acked = conn.execute(
                select(outbox_head.c.acked_seq).where(outbox_head.c.link == link).with_for_update()
            ).scalar()
            if acked is None:
                raise KeyError(f"unknown link {link!r}")
            last = conn.execute(select(outbox_head.c.last_seq).where(outbox_head.c.link == link)).scalar_one()
            if seq > last:
                raise ValueError(f"cannot acknowledge seq {seq} of {link}: the last message is {last}")
            if seq <= acked:
                return 0
            conn.execute(update(outbox_head).where(outbox_head.c.link == link).values(acked_seq=seq))
            result = conn.execute(outbox.delete().where(outbox.c.link == link, outbox.c.seq <= seq))
            return int(result.rowcount or 0)
