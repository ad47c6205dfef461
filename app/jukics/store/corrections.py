"""Dual control (二者確認) of corrections (職権修正) and deletions (職権消除) asked from a terminal.

A request stays ``pending`` until a *different* operator decides; the terminal API only lets a
holder of ``correction_approve`` (the 本人確認情報管理責任者 role) decide, and this module refuses
self-approval whatever the roles. Approval applies the change through the intake path (the same
validation, 異動事由 logic, history, outbox F2 and audit as a 既存住基 update, with 依頼管理番号
``corr-<id>`` so a retried approval never applies twice). The before/after is kept encrypted; the
requester, approver and times in clear (they are not resident data).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update

from jukics import metrics
from jukics.audit.chain import AuditEvent, AuditLog
from jukics.domain.reasons import CORRECTABLE_FIELDS
from jukics.store.clock import Clock, iso_utc, utc_now
from jukics.store.db import write_transaction
from jukics.store.schema import correction_requests

E_CORRECTION_FIELDS = "E_CORRECTION_FIELDS"
E_CORRECTION_UNKNOWN = "E_CORRECTION_UNKNOWN"
E_CORRECTION_STATE = "E_CORRECTION_STATE"
E_SELF_APPROVAL = "E_SELF_APPROVAL"
E_UNKNOWN_RESIDENT = "E_UNKNOWN_RESIDENT"
KINDS = ("correction", "deletion")
_REASON = {"correction": "shokken_shusei", "deletion": "shokken_shojo"}


class CorrectionError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Decision:
    id: str
    status: str
    result_code: str | None


class Corrections:
    def __init__(self, engine: Engine, store: Any, intake: Any, audit: AuditLog, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.store = store  # ResidentStore: current record, code hash, field cipher
        self.intake = intake  # Intake: the normal apply path
        self.audit = audit
        self.clock = clock

    def _audit(self, action: str, actor: str, terminal: str, code: str | None, *, rid: str | None,
               outcome: str = "ok", err: str | None = None, conn: Any = None) -> None:
        self.audit.append(AuditEvent(actor=actor, terminal=terminal, action=action, purpose="correction",
                                     query={"request_id": rid}, targets=[code] if code else [], outcome=outcome,
                                     code=err), conn)

    def request(self, *, kind: str, juminhyo_code: str, changes: Mapping[str, Any], reason: str,
                requester: str, terminal: str) -> str:
        try:
            if kind not in KINDS:
                raise CorrectionError(E_CORRECTION_FIELDS, "kind is correction or deletion")
            if not isinstance(reason, str) or not reason.strip() or len(reason) > 256:
                raise CorrectionError(E_CORRECTION_FIELDS, "a reason of 1-256 characters is required")
            if kind == "correction":
                bad = sorted(set(changes) - CORRECTABLE_FIELDS)
                if not changes or bad:
                    raise CorrectionError(E_CORRECTION_FIELDS, "correctable fields only: "
                                                               + (", ".join(bad) or "none given"))
            elif changes:
                raise CorrectionError(E_CORRECTION_FIELDS, "a deletion changes no field")
            current = self.store.get_current(juminhyo_code)
            if current is None or current.get("record_status") != "current":
                raise CorrectionError(E_UNKNOWN_RESIDENT, "no current resident with this 住民票コード")
        except CorrectionError as exc:
            self._audit(f"{kind if kind in KINDS else 'correction'}.request", requester, terminal, None, rid=None,
                        outcome="refused", err=exc.code)
            metrics.CORRECTIONS.labels(step="refused").inc()
            raise
        rid = secrets.token_hex(8)
        before = {k: current.get(k) for k in changes}
        blob = json.dumps({"juminhyo_code": juminhyo_code, "before": before, "after": dict(changes)},
                          ensure_ascii=False, default=str)
        with write_transaction(self.engine) as conn:
            conn.execute(correction_requests.insert().values(
                id=rid, kind=kind, code_hash=self.store.code_hash(juminhyo_code),
                changes_ct=self.store.cipher.encrypt(f"correction-{rid}", "changes", blob), reason=reason.strip(),
                status="pending", requested_by=requester, requested_at=iso_utc(self.clock())))
            self._audit(f"{kind}.request", requester, terminal, juminhyo_code, rid=rid, conn=conn)
        metrics.CORRECTIONS.labels(step="requested").inc()
        return rid

    def get(self, rid: str) -> dict[str, Any] | None:
        """The request with its before/after (for the approver's screen)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(correction_requests).where(correction_requests.c.id == rid)).first()
        if row is None:
            return None
        changes = json.loads(self.store.cipher.decrypt(f"correction-{rid}", "changes", bytes(row.changes_ct)))
        return {"id": row.id, "kind": row.kind, "status": row.status, "reason": row.reason, **changes,
                "requested_by": row.requested_by, "requested_at": row.requested_at, "decided_by": row.decided_by,
                "decided_at": row.decided_at, "result_code": row.result_code}

    def decide(self, rid: str, *, approver: str, approve: bool, terminal: str) -> Decision:
        step = "approve" if approve else "reject"
        req = self.get(rid)
        err = None
        if req is None:
            err = CorrectionError(E_CORRECTION_UNKNOWN, "no such request")
        elif req["requested_by"] == approver:
            err = CorrectionError(E_SELF_APPROVAL, "a different person must decide (二者確認)")
        elif req["status"] == "applying" and approve:
            pass  # approved, but the apply did not finish (a crash between the two steps): finish it below
        elif req["status"] != "pending":
            err = CorrectionError(E_CORRECTION_STATE, f"the request is {req['status']}")
        if err is not None:
            self._audit(f"correction.{step}", approver, terminal, req["juminhyo_code"] if req else None,
                        rid=rid if req else None, outcome="refused", err=err.code)
            metrics.CORRECTIONS.labels(step="refused").inc()
            raise err
        assert req is not None
        if req["status"] == "applying":
            # The decision was taken and audited; only the apply is repeated. It is idempotent (request
            # id corr-<id>: intake answers "duplicate" if it had already applied), under the first
            # approver's name, so a crash never leaves a request stuck half-done.
            self._audit(f"{req['kind']}.resume", approver, terminal, req["juminhyo_code"], rid=rid)
            return self._finish(req, req["decided_by"] or approver, rid)
        now = iso_utc(self.clock())
        with write_transaction(self.engine) as conn:
            # only one decision wins: two approvers racing find one pending row between them
            won = conn.execute(update(correction_requests).where(
                correction_requests.c.id == rid, correction_requests.c.status == "pending").values(
                status="applying" if approve else "rejected", decided_by=approver, decided_at=now)).rowcount == 1
            if won:
                self._audit(f"{req['kind']}.{step}", approver, terminal, req["juminhyo_code"], rid=rid, conn=conn)
        if not won:
            raise CorrectionError(E_CORRECTION_STATE, "decided by someone else meanwhile")
        if not approve:
            metrics.CORRECTIONS.labels(step="rejected").inc()
            return Decision(rid, "rejected", None)
        return self._finish(req, approver, rid)

    def _finish(self, req: Mapping[str, Any], approver: str, rid: str) -> Decision:
        status, code = self._apply(req, approver, rid)
        with write_transaction(self.engine) as conn:
            conn.execute(update(correction_requests).where(correction_requests.c.id == rid)
                         .values(status=status, result_code=code))
        metrics.CORRECTIONS.labels(step="approved" if status == "applied" else "refused").inc()
        return Decision(rid, status, code)

    def _apply(self, req: Mapping[str, Any], approver: str, rid: str) -> tuple[str, str | None]:
        current = self.store.get_current(req["juminhyo_code"]) or {}
        history = self.store.get_history(req["juminhyo_code"], include_current=True)
        seq = int(current.get("update_seq") or len(history)) + 1
        today = self.clock().date().isoformat()
        item = {"juminhyo_code": req["juminhyo_code"], "change_reason": _REASON[req["kind"]], "changed_on": today,
                "notified_on": today, **req["after"], "request_id": f"corr-{rid}", "operator_id": approver,
                "terminal_id": "terminal", "update_seq": seq}
        answer = self.intake.submit([item], client=f"terminal:{approver}")
        if answer.get("applied") == 1 or answer.get("duplicate") == 1:
            return "applied", None
        results = answer.get("results") or [{}]
        return "failed", str(results[0].get("code") or "E_INTERNAL")
