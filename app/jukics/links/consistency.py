"""F4 整合性確認: compare the whole 本人確認情報 file with the 都道府県サーバ's copy, keep the report.

The CS sends every resident's 住民票コード and the digest of the record's F2 items
(:func:`protocol.record_digest`, the same 8 items the prefecture received), in parts of
:data:`PART_SIZE`, all under one ``check_id``; the last part says ``last`` and the peer then also
names the residents it holds that the CS did not send. Digests only: the file itself is not sent
again. The difference lists name residents, so they are stored encrypted under the data key
(``consistency_reports.detail_ct``); the counts are in clear. A run and every read of a report are
events in the audit chain.

Differences (as the peer reports them):
  missing_at_peer    the CS holds the resident, the peer does not (an F2 update did not arrive)
  unknown_to_cs      the peer holds a resident this CS did not send (``unknown_to_sender``)
  mismatched         both hold the resident, with different items
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, insert, select, update

from jukics.audit.chain import AuditEvent, AuditLog
from jukics.domain.fields import F2_ITEMS
from jukics.links import protocol as p
from jukics.links.queries import PeerQueries, PeerQueryError
from jukics.links.transport import LinkAuthError
from jukics.store.clock import Clock, iso_utc, utc_now
from jukics.store.crypto import FieldCipher
from jukics.store.db import write_transaction
from jukics.store.schema import consistency_reports

PART_SIZE: Final = 5000
LISTS: Final = ("missing_at_peer", "unknown_to_cs", "mismatched")
E_NO_REPORT: Final = "E_NO_REPORT"


@dataclass(frozen=True)
class ConsistencyReport:
    id: int
    link: str
    peer: str
    started_at: str
    finished_at: str | None
    status: str  # running | ok | differs | failed
    checked: int
    counts: dict[str, int]
    error: str | None
    detail: dict[str, list[str]] | None  # None unless asked for (and decrypted)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "link": self.link, "peer": self.peer, "started_at": self.started_at,
                               "finished_at": self.finished_at, "status": self.status, "checked": self.checked,
                               **self.counts, "error": self.error}
        if self.detail is not None:
            out["detail"] = self.detail
        return out


class ConsistencyCheck:
    def __init__(self, engine: Engine, store: Any, audit: AuditLog, cipher: FieldCipher,
                 clock: Clock = utc_now) -> None:
        self.engine = engine
        self.store = store
        self.audit = audit
        self.cipher = cipher
        self.clock = clock

    def run(self, link: str, queries: PeerQueries, *, actor: str, part_size: int = PART_SIZE,
            progress: Callable[[int], None] | None = None) -> ConsistencyReport:
        """Check the whole file against ``link``'s peer; the report is stored whatever the outcome."""
        started = iso_utc(self.clock())
        with write_transaction(self.engine) as conn:
            report_id = int(conn.execute(insert(consistency_reports).values(
                link=link, peer=queries.peer_name, started_at=started, status="running", checked=0,
                missing_at_peer=0, unknown_to_cs=0, mismatched=0)).inserted_primary_key[0])
        check_id = f"check-{uuid.uuid4().hex}"
        found: dict[str, list[str]] = {k: [] for k in LISTS}
        checked, error = 0, None
        try:
            part: list[dict[str, str]] = []
            records = self.store.iter_current(F2_ITEMS)
            done = False
            while not done:
                record = next(records, None)
                if record is not None:
                    part.append({"juminhyo_code": str(record["juminhyo_code"]),
                                 "digest": p.record_digest(record, F2_ITEMS)})
                done = record is None
                if len(part) >= part_size or done:
                    answer = queries.consistency(link, check_id=check_id, as_of=started, records=part, last=done)
                    checked += len(part)
                    found["missing_at_peer"] += answer["missing_at_peer"]
                    found["mismatched"] += answer["mismatched"]
                    found["unknown_to_cs"] += answer["unknown_to_sender"]
                    part = []
                    if progress is not None:
                        progress(checked)
        except LinkAuthError as exc:
            error = f"{exc.code}: {exc.reason}"
        except PeerQueryError as exc:
            error = f"{exc.code}: {exc.message}"
        finally:
            queries.close()
        counts = {k: len(set(v)) for k, v in found.items()}
        status = "failed" if error else ("differs" if any(counts.values()) else "ok")
        detail = {k: sorted(set(v)) for k, v in found.items()}
        blob = self.cipher.encrypt(f"consistency-{report_id}", "detail", json.dumps(detail, ensure_ascii=False))
        with write_transaction(self.engine) as conn:
            conn.execute(update(consistency_reports).where(consistency_reports.c.id == report_id).values(
                finished_at=iso_utc(self.clock()), status=status, checked=checked, error=error[:200] if error else None,
                detail_ct=None if error else blob, **counts))
            self.audit.append(AuditEvent(
                actor=actor, terminal=queries.peer_name, action="consistency.run", purpose="consistency",
                query={"link": link, "report_id": report_id, "check_id": check_id, **counts},
                result_count=checked, outcome="error" if error else "ok",
                code=error.split(":", 1)[0] if error else None), conn)
        return self.report(report_id, actor=None)

    def reports(self, limit: int = 20) -> list[ConsistencyReport]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(consistency_reports).order_by(consistency_reports.c.id.desc())
                                .limit(limit)).all()
        return [self._report(r, with_detail=False) for r in rows]

    def report(self, report_id: int | None = None, *, actor: str | None) -> ConsistencyReport:
        """One report (the newest when ``report_id`` is None) with its difference lists.

        Reading the lists (they name residents) is audited when ``actor`` is given.
        """
        stmt = select(consistency_reports)
        stmt = (stmt.where(consistency_reports.c.id == report_id) if report_id is not None
                else stmt.order_by(consistency_reports.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise LookupError(f"{E_NO_REPORT}: " + (f"no report {report_id}" if report_id is not None
                                                     else "no 整合性確認 has been run"))
        report = self._report(row, with_detail=True)
        if actor is not None:
            self.audit.append(AuditEvent(actor=actor, terminal="cli", action="consistency.report",
                                         purpose="consistency", query={"report_id": report.id},
                                         result_count=sum(report.counts.values())))
        return report

    def _report(self, row: Any, *, with_detail: bool) -> ConsistencyReport:
        detail = None
        if with_detail and row.detail_ct is not None:
            detail = json.loads(self.cipher.decrypt(f"consistency-{row.id}", "detail", bytes(row.detail_ct)))
        return ConsistencyReport(int(row.id), row.link, row.peer, row.started_at, row.finished_at, row.status,
                                 int(row.checked), {k: int(getattr(row, k)) for k in LISTS}, row.error, detail)
