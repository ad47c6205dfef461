"""F1 intake: a batch of 本人確認情報 updates from 既存住基, validated and applied item by item.

Flow for one batch (the HTTP resource only parses the envelope):

1. ``parse_item``: item-only checks (shape, allowlist, identifiers, dates, text). A failure refuses
   the item with its stable code.
2. Idempotency before anything else: an item whose 依頼管理番号 was already applied is a
   ``duplicate`` when it is the same request (same fingerprint), else ``E_REQUEST_ID_REUSED``;
   a retried batch therefore creates nothing twice, whatever has happened since.
3. ``check_sequence`` against the resident's last 更新順番号 (a re-send of the latest update is a
   duplicate; a gap or an older number is ``E_OUT_OF_ORDER``: never applied out of order).
4. ``apply_to_current``: the 異動事由 logic checks against the stored record, with the batch's own
   earlier items applied in memory (a 出生 then a 転居 of the same person in one batch work).
5. The store applies the valid updates in one transaction per batch (history, current, outbox for
   F2 and 附票, audit); it repeats the idempotency and sequence checks under its write lock.

Refusals of steps 1-4, and the duplicates found in step 2-3, are appended to the audit chain as
well: every item, refused ones included, leaves one audit record.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jukics import metrics
from jukics.audit.chain import AuditEvent, AuditLog
from jukics.domain.errors import DomainError
from jukics.domain.validate import (
    ParsedItem,
    Update,
    Validators,
    apply_to_current,
    check_sequence,
    is_meta_text,
    parse_item,
)
from jukics.store.repository import E_REQUEST_ID_REUSED, STORE_ERROR_CODES, ResidentStore


@dataclass(frozen=True)
class IntakeUpdate:
    """An Update plus the fingerprint of the request it came from (for idempotency on 依頼管理番号)."""

    kind: str
    juminhyo_code: str
    #: the stored 住民票コード the update applies to (the old one for 住民票コードの変更)
    lookup_code: str
    record: dict[str, object]
    meta: Mapping[str, object]
    request_fingerprint: str
    #: ``store.request_digest(request_fingerprint)``, computed once for intake's own duplicate check
    request_digest: bytes | None = None


_FINGERPRINT_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def request_fingerprint(item: Mapping[str, Any]) -> str:
    """The item's canonical JSON: the same request re-sent gives the same fingerprint.

    It holds personal data, so it never leaves memory: the store keeps only a keyed digest of it.
    """
    return _FINGERPRINT_ENCODER.encode(item)  # = json.dumps(item, ...same options), without a new encoder


def _refused(index: int, request_id: object, code: str, message: str, field: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "status": "refused", "code": code, "message": message}
    if is_meta_text(request_id):  # a malformed one is not echoed: it could be any text, even unencodable
        out["request_id"] = request_id
    if field is not None:
        out["field"] = field
    return out


class Intake:
    """The F1 intake service the HTTP resource calls (see the module docstring)."""

    def __init__(
        self,
        store: ResidentStore,
        audit: AuditLog,
        validators: Validators,
        today: Callable[[], dt.date],
        *,
        terminal: str = "intake",
    ) -> None:
        self.store = store
        self.audit = audit
        self.validators = validators
        self.today = today
        self.terminal = terminal

    def refuse_request(self, *, client: str | None, code: str) -> None:
        metrics.INTAKE_REQUEST_REFUSALS.labels(metrics.code_label(code)).inc()
        if code == "E_CLIENT_NOT_ALLOWED":  # a verified certificate that is not an allowed client
            metrics.TLS_AUTH_FAILURES.labels(self.terminal, metrics.peer_label(client)).inc()
        self.audit.append(
            AuditEvent(actor=client or "(unauthenticated)", terminal=self.terminal, action="intake.batch",
                       purpose="F1", outcome="refused", code=code)
        )

    def submit(self, items: Sequence[Any], *, client: str) -> dict[str, Any]:
        today = self.today()
        results: dict[int, dict[str, Any]] = {}
        refusals: list[AuditEvent] = []  # and duplicates: every item leaves one audit record

        def refuse(index: int, item: Any, code: str, message: str, field: str | None) -> None:
            rid = item.get("request_id") if isinstance(item, Mapping) else None
            results[index] = _refused(index, rid, code, message, field)
            target = item.get("juminhyo_code") if isinstance(item, Mapping) else None
            refusals.append(
                # A request id that is not well-formed is not logged: it could be anything (a huge
                # string, personal data, text that is not even encodable), and the code says why.
                AuditEvent(actor=client, terminal=self.terminal, action="intake.item", purpose="F1",
                           query={"request_id": rid if is_meta_text(rid) else None},
                           targets=[target] if isinstance(target, str) and target.isdigit() else [],
                           outcome="refused", code=code)
            )

        def duplicate(index: int, p: ParsedItem) -> None:
            rid = p.meta.request_id
            results[index] = {"index": index, "request_id": rid, "status": "duplicate", "message": "already applied"}
            code = str(p.values["juminhyo_code"])
            refusals.append(  # the same record the store writes for a duplicate it finds itself
                AuditEvent(actor=client, terminal=self.terminal, action=f"intake.{p.reason.kind}", purpose="F1",
                           query={"request_id": rid, "update_seq": p.meta.update_seq,
                                  "operator_id": p.meta.operator_id, "terminal_id": p.meta.terminal_id,
                                  "change_reason": p.reason.code},
                           targets=[code] if p.lookup_code == code else [code, p.lookup_code],
                           result_count=0, outcome="ok", code="I_DUPLICATE")
            )

        parsed: list[tuple[int, ParsedItem, str]] = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, Mapping):
                    raise DomainError("E_TYPE")
                parsed.append((index, parse_item(item, validators=self.validators, today=today),
                               request_fingerprint(item)))
            except DomainError as exc:
                refuse(index, item, exc.code, exc.message, exc.field)

        applied_before = self.store.applied_requests([p.meta.request_id for _, p, _ in parsed])
        current = self.store.get_current_many({p.lookup_code for _, p, _ in parsed})
        to_store: list[tuple[int, IntakeUpdate]] = []
        seen: dict[str, bytes] = {}
        for index, p, fingerprint in parsed:
            rid = p.meta.request_id
            digest = self.store.request_digest(fingerprint)
            earlier = applied_before.get(rid) or seen.get(rid)
            if earlier is not None:
                if earlier == digest:
                    duplicate(index, p)
                else:
                    refuse(index, {"request_id": rid, "juminhyo_code": p.lookup_code}, E_REQUEST_ID_REUSED,
                           STORE_ERROR_CODES[E_REQUEST_ID_REUSED], "request_id")
                continue
            stored = current.get(p.lookup_code)
            try:
                last_seq = stored.get("update_seq") if stored else None
                last_rid = stored.get("request_id") if stored else None
                if check_sequence(last_seq, p.meta.update_seq, last_request_id=last_rid,
                                  new_request_id=rid) == "duplicate":
                    duplicate(index, p)
                    continue
                update: Update = apply_to_current(p, current=stored)
            except DomainError as exc:
                refuse(index, {"request_id": rid, "juminhyo_code": p.lookup_code}, exc.code, exc.message, exc.field)
                continue
            seen[rid] = digest
            # The batch's later items see this one applied (the store re-checks under its lock).
            current[update.juminhyo_code] = dict(update.record)
            if update.lookup_code != update.juminhyo_code:
                current.pop(update.lookup_code, None)
            to_store.append((index, IntakeUpdate(
                kind=update.kind, juminhyo_code=update.juminhyo_code, lookup_code=update.lookup_code,
                record=dict(update.record),
                meta={"request_id": rid, "operator_id": p.meta.operator_id, "terminal_id": p.meta.terminal_id,
                      "update_seq": p.meta.update_seq},
                request_fingerprint=fingerprint,
                request_digest=digest,
            )))

        if refusals:
            self.audit.append_many(refusals)
        if to_store:
            stored_results = self.store.apply_batch([u for _, u in to_store], actor=client, terminal=self.terminal)
            for (index, _), r in zip(to_store, stored_results, strict=True):
                out: dict[str, Any] = {"index": index}
                if r.request_id:
                    out["request_id"] = r.request_id
                out["status"] = r.status
                if r.code is not None:
                    out["code"] = r.code
                if r.version is not None:
                    out["version"] = r.version
                if r.message:
                    out["message"] = r.message
                results[index] = out
        ordered = [results[i] for i in range(len(items))]
        counts = {s: sum(1 for r in ordered if r["status"] == s) for s in ("applied", "duplicate", "refused", "error")}
        _count(ordered, counts)
        return {"results": ordered, **counts}



def _count(results: Sequence[Mapping[str, Any]], counts: Mapping[str, int]) -> None:
    """The process counters (jukics.metrics): items by result, refusals by code. Codes only, no data."""
    for status, n in counts.items():
        if n:
            metrics.INTAKE_ITEMS.labels(status).inc(n)
    by_code: dict[str, int] = {}
    for r in results:
        if r["status"] == "refused":
            code = metrics.code_label(r.get("code"))
            by_code[code] = by_code.get(code, 0) + 1
    for code, n in by_code.items():
        metrics.INTAKE_REFUSALS.labels(code).inc(n)
