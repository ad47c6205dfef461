"""F6 特例転入 at the 転入地 CS (SPEC §2): 転出証明書情報 in, 転入通知情報 out with the F2 update.

1. The 転出地 CS sends the 転出証明書情報 through the 都道府県サーバ, which delivers it to this CS's
   peer-facing listener (``POST /v1/links/tokurei/messages``, :mod:`jukics.api.peer_app`). Each
   message is checked (exactly :data:`fields.TENSHUTSU_CERT_ITEMS`, valid identifiers, addressed to
   this municipality), deduplicated on (sender, link, seq), stored encrypted, and handed to 既存住基
   as a notice (``GET /v1/kizon/notices``, kind ``tenshutsu_cert``).
2. 既存住基 registers the 特例転入 as an ordinary F1 update with 異動事由 ``tokurei_tennyu``. In the
   same intake transaction (:meth:`TokureiInbox.on_applied`, called by the store) the resident's
   unclaimed certificate is claimed and the 転入通知情報 (:data:`fields.TENNYU_NOTICE_ITEMS`) is
   queued on the ``tokurei`` link next to the F2 update: both go, or neither.
3. A certificate nobody claims is erased after ``[tokurei] unclaimed_days`` (``jukics purge``),
   with its notice if 既存住基 has not fetched it yet.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update

from jukics.audit.chain import AuditEvent, AuditLog
from jukics.domain.fields import TENNYU_NOTICE_ITEMS, TENSHUTSU_CERT_ITEMS
from jukics.domain.identifiers import is_valid_municipality_code, is_valid_my_number
from jukics.links import protocol as p
from jukics.store.clock import JST, Clock, iso_utc, utc_now
from jukics.store.crypto import FieldCipher
from jukics.store.db import write_transaction
from jukics.store.link_state import pending_rows
from jukics.store.repository import OutboxMessage
from jukics.store.schema import inbound_seen, kizon_notices, outbox, outbox_head, tenshutsu_certs

LINK: Final = "tokurei"
TENSHUTSU_CERT: Final = p.TENSHUTSU_CERT  # message type in
TENNYU_NOTICE: Final = p.TENNYU_NOTICE  # message type out
NOTICE_KIND: Final = "tenshutsu_cert"  # what 既存住基 fetches
REASON: Final = "tokurei_tennyu"
E_NOT_FOR_US: Final = "E_NOT_FOR_US"  # addressed to another municipality
E_ITEM_INVALID: Final = "E_ITEM_INVALID"  # an identifier or date that does not check
_CERT_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ENCODE: Final = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


class TokureiInbox:
    def __init__(self, engine: Engine, cipher: FieldCipher, audit: AuditLog, *, municipality_code: str,
                 code_hash: Callable[[str], bytes], is_valid_code: Callable[[str], bool], unclaimed_days: int,
                 clock: Clock = utc_now) -> None:
        self.engine = engine
        self.cipher = cipher
        self.audit = audit
        self.municipality_code = municipality_code
        self.code_hash = code_hash
        self.is_valid_code = is_valid_code
        self.unclaimed_days = unclaimed_days
        self.clock = clock

    # ---- 1. 転出証明書情報 in (the peer-facing listener) ----------------------------------------
    def _check(self, e: p.Envelope, today: dt.date) -> tuple[str, str] | None:
        if e.type != TENSHUTSU_CERT:
            return p.E_UNKNOWN_TYPE, f"{e.type!r} on {LINK!r} (expected {TENSHUTSU_CERT!r})"
        extra, missing = set(e.payload) - set(TENSHUTSU_CERT_ITEMS), set(TENSHUTSU_CERT_ITEMS) - set(e.payload)
        if extra:
            return p.E_FIELD_NOT_ALLOWED, f"not allowed: {', '.join(sorted(extra))[:200]}"
        if missing:
            return p.E_FIELD_MISSING, f"missing: {', '.join(sorted(missing))}"
        v = e.payload
        if not all(isinstance(v[k], str) for k in TENSHUTSU_CERT_ITEMS):
            return E_ITEM_INVALID, "every item is a string"
        if v["to_municipality_code"] != self.municipality_code:
            return E_NOT_FOR_US, "the certificate is addressed to another municipality"
        if not _CERT_ID.fullmatch(v["cert_id"]):
            return E_ITEM_INVALID, "cert_id"
        if not (len(v["juminhyo_code"]) == 11 and v["juminhyo_code"].isdigit() and self.is_valid_code(
                v["juminhyo_code"])):
            return E_ITEM_INVALID, "juminhyo_code"
        if not is_valid_my_number(v["my_number"]):
            return E_ITEM_INVALID, "my_number"
        if not is_valid_municipality_code(v["from_municipality_code"]):
            return E_ITEM_INVALID, "from_municipality_code"
        for key in ("birth_date", "planned_move_on"):
            try:
                dt.date.fromisoformat(v[key])
            except ValueError:
                return E_ITEM_INVALID, key
        return None

    def receive(self, sender: str, envelopes: Sequence[p.Envelope]) -> list[p.Result]:
        """Handle one delivered batch, in order, in one transaction; one result per message."""
        now = self.clock()
        stamp, today = iso_utc(now), now.astimezone(JST).date()
        expires = (today + dt.timedelta(days=self.unclaimed_days)).isoformat()
        results: list[p.Result] = []
        events: list[AuditEvent] = []
        with write_transaction(self.engine) as conn:
            for e in envelopes:
                old = conn.execute(select(inbound_seen.c.status, inbound_seen.c.code).where(
                    inbound_seen.c.sender == sender, inbound_seen.c.link == LINK, inbound_seen.c.seq == e.seq)).first()
                if old is not None:
                    results.append(p.Result(e.seq, p.STATUS_DUPLICATE, old.code))
                    continue
                problem = self._check(e, today)
                if problem is None and conn.execute(select(tenshutsu_certs.c.id).where(
                        tenshutsu_certs.c.cert_id == e.payload["cert_id"])).first() is not None:
                    status, code = p.STATUS_DUPLICATE, None  # the same certificate under a new seq: once
                elif problem is None:
                    self._store(conn, sender, e, stamp, expires)
                    status, code = p.STATUS_ACK, None
                else:
                    status, code = p.STATUS_NACK, problem[0]
                conn.execute(insert(inbound_seen).values(sender=sender, link=LINK, seq=e.seq,
                                                         status=status, code=code, seen_at=stamp))
                results.append(p.Result(e.seq, status, code, problem[1] if problem else None))
                events.append(AuditEvent(
                    actor=sender, terminal=sender, action="tokurei.received", purpose="F6",
                    query={"link": LINK, "seq": e.seq, "message_type": e.type},
                    targets=[e.payload["juminhyo_code"]] if status == p.STATUS_ACK else [],
                    result_count=1 if status == p.STATUS_ACK else 0,
                    outcome="refused" if status == p.STATUS_NACK else "ok", code=code))
            self.audit.append_many(events, conn)
        return results

    def _store(self, conn: Connection, sender: str, e: p.Envelope, stamp: str, expires: str) -> None:
        v = e.payload
        row_id = int(conn.execute(insert(tenshutsu_certs).values(
            cert_id=v["cert_id"], sender=sender, from_municipality=v["from_municipality_code"],
            code_hash=self.code_hash(v["juminhyo_code"]), received_at=stamp, expires_on=expires,
            payload_ct=b"")).inserted_primary_key[0])
        text = _ENCODE({k: v[k] for k in TENSHUTSU_CERT_ITEMS})
        conn.execute(update(tenshutsu_certs).where(tenshutsu_certs.c.id == row_id).values(
            payload_ct=self.cipher.encrypt(f"tenshutsu-{row_id}", "payload", text)))
        conn.execute(insert(kizon_notices).values(
            kind=NOTICE_KIND, ref=v["cert_id"], created_at=stamp,
            payload_ct=self.cipher.encrypt(f"notice-{NOTICE_KIND}-{v['cert_id']}", "payload", text)))

    # ---- 2. the 特例転入, in the intake transaction ---------------------------------------------
    def on_applied(self, conn: Connection, applied: Sequence[Mapping[str, Any]], now: str) -> None:
        """Claim the certificates of these 特例転入 and queue their 転入通知情報 (same transaction).

        ``applied``: {"code", "code_hash", "changed_on", "address"} per applied ``tokurei_tennyu``.
        """
        heads = None
        events = []
        for item in applied:
            row = conn.execute(select(tenshutsu_certs.c.id, tenshutsu_certs.c.cert_id,
                                      tenshutsu_certs.c.from_municipality).where(
                tenshutsu_certs.c.code_hash == item["code_hash"], tenshutsu_certs.c.claimed_at.is_(None),
                tenshutsu_certs.c.deleted_at.is_(None)).order_by(tenshutsu_certs.c.id.desc())).first()
            if row is None:
                # Registered without a certificate here: the F2 update goes, no 転入通知 (nobody to tell).
                events.append(AuditEvent(actor="intake", terminal="cs", action="tokurei.unmatched", purpose="F6",
                                         targets=[item["code"]], outcome="refused", code="E_NO_CERTIFICATE"))
                continue
            notice = {"cert_id": row.cert_id, "juminhyo_code": item["code"],
                      "from_municipality_code": row.from_municipality, "to_municipality_code": self.municipality_code,
                      "moved_in_on": item["changed_on"], "address": item["address"]}
            assert set(notice) == set(TENNYU_NOTICE_ITEMS)
            if heads is None:
                heads = int(conn.execute(select(outbox_head.c.last_seq).where(outbox_head.c.link == LINK))
                            .scalar_one())
            heads += 1
            conn.execute(update(tenshutsu_certs).where(tenshutsu_certs.c.id == row.id).values(
                claimed_at=now, notice_ct=self.cipher.encrypt(f"tennyu-{row.id}", "notice", _ENCODE(notice))))
            conn.execute(insert(outbox).values(link=LINK, seq=heads, version_id=row.id, kind="tennyu",
                                               created_at=now))
            events.append(AuditEvent(actor="intake", terminal="cs", action="tokurei.claimed", purpose="F6",
                                     query={"link": LINK, "seq": heads}, targets=[item["code"]], result_count=1))
        if heads is not None:
            conn.execute(update(outbox_head).where(outbox_head.c.link == LINK).values(last_seq=heads))
        if events:
            self.audit.append_many(events, conn)

    # ---- the delivery worker's source (link tokurei) ----------------------------------------
    def outbox_pending(self, link: str, *, limit: int = 100) -> list[OutboxMessage]:
        if link != LINK:
            raise KeyError(f"unknown link {link!r}")
        rows = pending_rows(self.engine, LINK, tenshutsu_certs, tenshutsu_certs.c.notice_ct, limit)
        return [OutboxMessage(link=LINK, seq=int(r.seq), message_id=f"{LINK}-{int(r.seq)}", kind=r.kind,
                              created_at=r.created_at,
                              payload=json.loads(self.cipher.decrypt(f"tennyu-{r.id}", "notice", bytes(r.ct))))
                for r in rows]

    def on_settled(self, conn: Connection, link: str, settled: Sequence[tuple[int, int]],
                   replies: Mapping[int, Mapping[str, Any]], now: str) -> None:
        """The 転入通知情報 reached the prefecture: the certificate has done its work, erase it."""
        ids = [row_id for _, row_id in settled]
        if ids:
            conn.execute(update(tenshutsu_certs).where(tenshutsu_certs.c.id.in_(ids))
                         .values(payload_ct=None, notice_ct=None, deleted_at=now))

    # ---- 3. unclaimed certificates ------------------------------------------------------------
    def purge_unclaimed(self, *, dry_run: bool = False, actor: str = "purge") -> int:
        now = self.clock()
        today = now.astimezone(JST).date().isoformat()
        due = and_(tenshutsu_certs.c.claimed_at.is_(None), tenshutsu_certs.c.deleted_at.is_(None),
                   tenshutsu_certs.c.expires_on <= today)
        with write_transaction(self.engine) as conn:
            rows = conn.execute(select(tenshutsu_certs.c.id, tenshutsu_certs.c.cert_id).where(due)).all()
            if rows and not dry_run:
                conn.execute(update(tenshutsu_certs).where(tenshutsu_certs.c.id.in_([r.id for r in rows]))
                             .values(payload_ct=None, deleted_at=iso_utc(now)))
                conn.execute(delete(kizon_notices).where(kizon_notices.c.kind == NOTICE_KIND,
                                                         kizon_notices.c.ref.in_([r.cert_id for r in rows])))
            if rows:
                self.audit.append(AuditEvent(actor=actor, terminal="cs", action="tokurei.unclaimed_delete",
                                             purpose="retention", query={"cutoff": today, "dry_run": dry_run},
                                             result_count=len(rows)), conn)
        return len(rows)

    def status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(tenshutsu_certs.c.claimed_at.is_not(None),
                                       tenshutsu_certs.c.deleted_at.is_not(None))).all()
        return {"waiting": sum(1 for c, d in rows if not c and not d),
                "claimed_unsent": sum(1 for c, d in rows if c and not d),
                "done": sum(1 for c, d in rows if c and d),
                "unclaimed_deleted": sum(1 for c, d in rows if not c and d)}
