"""F9 送付先情報 and F10 card lifecycle events: 既存住基 → CS → 個人番号カード管理システム, and the
card system's 突合結果 back to 既存住基 (SPEC §2).

- 送付先情報 (``type = "sofusaki"``, link ``sofusaki``): the 既存住基's object of 69 items, passed on
  **unedited**: the CS checks only its shape (an object of scalar items, bounded size), keeps it as
  canonical JSON under the data key, and sends exactly that object. Its payload is erased one
  business day after the card system acknowledged it (:meth:`CardRelay.purge_sent`, run by
  ``jukics purge``; business days from :mod:`jukics.domain.business_days`); it is never backed up.
- card events (``type = "card_event"``, link ``card``): 交付 / 廃止 / 回収 / 一時停止解除 / 返還 of
  a resident's card, checked strictly (:data:`CARD_EVENT_ITEMS`). The card system answers each with
  its 突合結果 (the ack's ``data``), which is stored for 既存住基 in the same transaction as the
  acknowledgement (nothing lost between the two) and fetched by it over its intake connection
  (``GET /v1/kizon/notices``, then ``POST /v1/kizon/notices/ack``). The event's payload is erased at
  the acknowledgement.

Each item is keyed by its 依頼管理番号 (``request_id``): the same item again is a duplicate, a
different item under a used id is refused (E_REQUEST_ID_REUSED). Every item, refused ones included,
is an event in the audit chain; payloads never are.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update

from jukics.audit.chain import AuditEvent, AuditLog
from jukics.domain.business_days import BusinessCalendar
from jukics.domain.errors import ERROR_CODES
from jukics.domain.fields import CARD_EVENT_ITEMS, CARD_EVENT_KINDS
from jukics.store.clock import JST, Clock, iso_utc, utc_now
from jukics.store.crypto import FieldCipher
from jukics.store.db import write_transaction
from jukics.store.link_state import pending_rows
from jukics.store.repository import OutboxMessage
from jukics.store.schema import card_messages, kizon_notices, outbox, outbox_head

SOFUSAKI_LINK: Final = "sofusaki"
CARD_LINK: Final = "card"
LINKS: Final = (SOFUSAKI_LINK, CARD_LINK)
TYPES: Final = {"sofusaki": SOFUSAKI_LINK, "card_event": CARD_LINK}
OUTBOX_KIND: Final = {SOFUSAKI_LINK: "sofusaki", CARD_LINK: "card"}
SOFUSAKI_MAX_ITEMS: Final = 100
SOFUSAKI_MAX_BYTES: Final = 32 * 1024
KEEP_BUSINESS_DAYS: Final = 1  # 「送付先情報は送付後1開庁日を経過したら削除」
NOTICE_CARD_MATCH: Final = "card_match"  # F10 突合結果
MAX_ITEMS: Final = 1000
_REQUEST_ID: Final = re.compile(r"[\x21-\x7e]{1,64}")
_CARD_ID: Final = re.compile(r"[A-Z0-9]{1,32}")
_ENCODE: Final = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


class ItemRefused(Exception):
    def __init__(self, code: str, field: str | None = None) -> None:
        assert code in ERROR_CODES, code
        self.code = code
        self.field = field
        super().__init__(code)

    def as_dict(self) -> dict[str, Any]:
        out = {"code": self.code, "message": ERROR_CODES[self.code]}
        if self.field:
            out["field"] = self.field
        return out


def _check_sofusaki(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or not payload or len(payload) > SOFUSAKI_MAX_ITEMS:
        raise ItemRefused("E_SOFUSAKI_SHAPE", "payload")
    if not all(isinstance(k, str) and k and (v is None or isinstance(v, str)) for k, v in payload.items()):
        raise ItemRefused("E_SOFUSAKI_SHAPE", "payload")
    return payload


def _canonical(payload: Mapping[str, Any]) -> str:
    try:
        text = _ENCODE(payload)
        text.encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        raise ItemRefused("E_SOFUSAKI_SHAPE", "payload") from None
    return text


class CardRelay:
    def __init__(self, engine: Engine, cipher: FieldCipher, audit: AuditLog, calendar: BusinessCalendar, *,
                 is_valid_code: Callable[[str], bool], clock: Clock = utc_now) -> None:
        self.engine = engine
        self.cipher = cipher
        self.audit = audit
        self.calendar = calendar
        self.is_valid_code = is_valid_code
        self.clock = clock

    # ---- intake (既存住基 → CS) ------------------------------------------------------------
    def _check_event(self, payload: Any, today: dt.date) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise ItemRefused("E_TYPE", "payload")
        extra = set(payload) - set(CARD_EVENT_ITEMS)
        if extra:
            raise ItemRefused("E_FIELD_NOT_ALLOWED", sorted(extra)[0][:64])
        for item in CARD_EVENT_ITEMS:
            if not isinstance(payload.get(item), str) or not payload[item]:
                raise ItemRefused("E_MISSING_FIELD", item)
        code = payload["juminhyo_code"]
        if not (len(code) == 11 and code.isascii() and code.isdigit()):
            raise ItemRefused("E_JUMINHYO_CODE_FORMAT", "juminhyo_code")
        if not self.is_valid_code(code):
            raise ItemRefused("E_JUMINHYO_CODE_CHECK_DIGIT", "juminhyo_code")
        if payload["kind"] not in CARD_EVENT_KINDS:
            raise ItemRefused("E_CARD_EVENT_KIND", "kind")
        try:
            day = dt.date.fromisoformat(payload["event_on"])
        except ValueError:
            raise ItemRefused("E_DATE_INVALID", "event_on") from None
        if len(payload["event_on"]) != 10:
            raise ItemRefused("E_DATE_INVALID", "event_on")
        if day > today:
            raise ItemRefused("E_DATE_FUTURE", "event_on")
        if not _CARD_ID.fullmatch(payload["card_id"]):
            raise ItemRefused("E_CARD_ID_INVALID", "card_id")
        return payload

    def _parse(self, item: Any, today: dt.date) -> tuple[str, str, str | None, str]:
        """(request_id, type, kind, canonical payload JSON) or ItemRefused."""
        if not isinstance(item, dict) or set(item) - {"request_id", "type", "payload"}:
            raise ItemRefused("E_TYPE")
        request_id = item.get("request_id")
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            raise ItemRefused("E_META_INVALID", "request_id")
        mtype = item.get("type")
        if mtype not in TYPES:
            raise ItemRefused("E_CARD_TYPE", "type")
        if mtype == "sofusaki":
            text = _canonical(_check_sofusaki(item.get("payload")))
            if len(text.encode()) > SOFUSAKI_MAX_BYTES:
                raise ItemRefused("E_SOFUSAKI_SHAPE", "payload")
            return request_id, mtype, None, text
        payload = self._check_event(item.get("payload"), today)
        return request_id, mtype, payload["kind"], _canonical(payload)

    def submit(self, items: Sequence[Any], *, client: str) -> dict[str, Any]:
        """Store and queue a batch; one result per item, in order. All accepted items in one transaction."""
        now = self.clock()
        today = now.astimezone(JST).date()
        results: list[dict[str, Any]] = [{} for _ in items]
        events: list[AuditEvent] = []
        parsed: list[tuple[int, str, str, str | None, str]] = []
        for i, item in enumerate(items):
            try:
                request_id, mtype, kind, text = self._parse(item, today)
            except ItemRefused as exc:
                rid = item.get("request_id") if isinstance(item, dict) else None
                results[i] = {"index": i, "request_id": rid if isinstance(rid, str) else None, "status": "refused",
                              **exc.as_dict()}
                events.append(AuditEvent(actor=client, terminal=client, action="card.intake", purpose="card",
                                         query={"kind": "refused"}, outcome="refused", code=exc.code))
                continue
            parsed.append((i, request_id, mtype, kind, text))
        stamp = iso_utc(now)
        with write_transaction(self.engine) as conn:
            ids = [p[1] for p in parsed]
            known = {r.request_id: bytes(r.digest) for r in conn.execute(
                select(card_messages.c.request_id, card_messages.c.digest)
                .where(card_messages.c.request_id.in_(ids)))} if ids else {}
            heads = {r.link: int(r.last_seq) for r in conn.execute(
                select(outbox_head.c.link, outbox_head.c.last_seq).where(outbox_head.c.link.in_(LINKS))
                .with_for_update())}
            touched: set[str] = set()
            for i, request_id, mtype, kind, text in parsed:
                digest = hashlib.sha256(text.encode()).digest()
                if request_id in known:
                    same = known[request_id] == digest
                    code = None if same else "E_REQUEST_ID_REUSED"
                    results[i] = {"index": i, "request_id": request_id, "status": "duplicate" if same else "refused"}
                    if code:
                        results[i].update({"code": code, "message": ERROR_CODES[code]})
                    events.append(AuditEvent(actor=client, terminal=client, action="card.intake", purpose="card",
                                             query={"request_id": request_id, "kind": kind or mtype},
                                             outcome="ok" if same else "refused", code=code))
                    continue
                row_id = int(conn.execute(insert(card_messages).values(
                    request_id=request_id, type=mtype, kind=kind, digest=digest, received_at=stamp,
                    payload_ct=b"")).inserted_primary_key[0])
                conn.execute(update(card_messages).where(card_messages.c.id == row_id).values(
                    payload_ct=self.cipher.encrypt(f"card-{row_id}", "payload", text)))
                link = TYPES[mtype]
                heads[link] += 1
                touched.add(link)
                conn.execute(insert(outbox).values(link=link, seq=heads[link], version_id=row_id,
                                                   kind=OUTBOX_KIND[link], created_at=stamp))
                known[request_id] = digest
                results[i] = {"index": i, "request_id": request_id, "status": "applied",
                              "sha256": digest.hex()}
                events.append(AuditEvent(actor=client, terminal=client, action="card.intake", purpose="card",
                                         query={"request_id": request_id, "kind": kind or mtype, "link": link,
                                                "seq": heads[link]}))
            for link in touched:
                conn.execute(update(outbox_head).where(outbox_head.c.link == link).values(last_seq=heads[link]))
            self.audit.append_many(events, conn)
        counts = {s: sum(1 for r in results if r["status"] == s) for s in ("applied", "duplicate", "refused")}
        return {"results": results, **counts}

    # ---- the delivery worker's source (links sofusaki and card) ---------------------------
    def outbox_pending(self, link: str, *, limit: int = 100) -> list[OutboxMessage]:
        if link not in LINKS:
            raise KeyError(f"unknown link {link!r}")
        rows = pending_rows(self.engine, link, card_messages, card_messages.c.payload_ct, limit)
        return [OutboxMessage(link=link, seq=int(r.seq), message_id=f"{link}-{int(r.seq)}", kind=r.kind,
                              created_at=r.created_at,
                              payload=json.loads(self.cipher.decrypt(f"card-{r.id}", "payload", bytes(r.ct))))
                for r in rows]

    def on_settled(self, conn: Connection, link: str, settled: Sequence[tuple[int, int]],
                   replies: Mapping[int, Mapping[str, Any]], now: str) -> None:
        """In the acknowledgement's transaction: 送付先 sent (deletion date set); events erased and
        their 突合結果 stored for 既存住基. ``settled``: (seq, card_messages id) acknowledged."""
        if not settled:
            return
        ids = [row_id for _, row_id in settled]
        if link == SOFUSAKI_LINK:
            sent_day = dt.datetime.fromisoformat(now.replace("Z", "+00:00")).astimezone(JST).date()
            delete_on = self.calendar.add_business_days(sent_day, KEEP_BUSINESS_DAYS).isoformat()
            conn.execute(update(card_messages).where(card_messages.c.id.in_(ids), card_messages.c.sent_at.is_(None))
                         .values(sent_at=now, delete_on=delete_on))
            return
        rows = {r.id: r for r in conn.execute(select(card_messages).where(card_messages.c.id.in_(ids)))}
        notices = []
        for seq, row_id in settled:
            row = rows.get(row_id)
            if row is None or row.payload_ct is None:
                continue
            event = json.loads(self.cipher.decrypt(f"card-{row_id}", "payload", bytes(row.payload_ct)))
            result = dict(replies.get(seq) or {"matched": None, "note": "the card system gave no 突合結果"})
            body = _ENCODE({"request_id": row.request_id, "juminhyo_code": event["juminhyo_code"],
                            "kind": event["kind"], "card_id": event["card_id"], "result": result})
            notices.append({"kind": NOTICE_CARD_MATCH, "ref": row.request_id, "created_at": now,
                            "payload_ct": self.cipher.encrypt(f"notice-{NOTICE_CARD_MATCH}-{row.request_id}",
                                                              "payload", body)})
        if notices:
            conn.execute(insert(kizon_notices), notices)
        conn.execute(update(card_messages).where(card_messages.c.id.in_(ids))
                     .values(sent_at=now, payload_ct=None, deleted_at=now))

    # ---- 送付先 deletion -------------------------------------------------------------------
    def purge_sent(self, *, dry_run: bool = False, actor: str = "purge") -> int:
        """Erase the payload of every 送付先情報 whose deletion day has come (JST). Returns how many."""
        now = self.clock()
        today = now.astimezone(JST).date().isoformat()
        due = and_(card_messages.c.type == "sofusaki", card_messages.c.payload_ct.is_not(None),
                   card_messages.c.delete_on.is_not(None), card_messages.c.delete_on <= today)
        with write_transaction(self.engine) as conn:
            ids = [int(i) for i in conn.execute(select(card_messages.c.id).where(due)).scalars()]
            if ids and not dry_run:
                conn.execute(update(card_messages).where(card_messages.c.id.in_(ids))
                             .values(payload_ct=None, deleted_at=iso_utc(now)))
            if ids:
                self.audit.append(AuditEvent(actor=actor, terminal="cs", action="sofusaki.delete", purpose="retention",
                                             query={"cutoff": today, "dry_run": dry_run}, result_count=len(ids)),
                                  conn)
        return len(ids)

    def status(self) -> dict[str, int]:
        """Counts only: waiting to be sent, sent and awaiting deletion, erased; notices for 既存住基."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(card_messages.c.type, card_messages.c.sent_at.is_not(None),
                                       card_messages.c.payload_ct.is_not(None))).all()
            notices = len(conn.execute(select(kizon_notices.c.id)).all())
        out = {"sofusaki_waiting": 0, "sofusaki_sent_kept": 0, "sofusaki_deleted": 0, "card_events_waiting": 0,
               "card_events_done": 0, "kizon_notices": notices}
        for mtype, sent, has_payload in rows:
            if mtype == "sofusaki":
                key = "sofusaki_waiting" if not sent else ("sofusaki_sent_kept" if has_payload else "sofusaki_deleted")
            else:
                key = "card_events_done" if sent else "card_events_waiting"
            out[key] += 1
        return out

    # ---- what 既存住基 fetches ---------------------------------------------------------------
    def notices(self, *, after: int = 0, limit: int = 500, client: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(kizon_notices).where(kizon_notices.c.id > after)
                                .order_by(kizon_notices.c.id).limit(limit)).all()
        out = [{"id": int(r.id), "kind": r.kind, "ref": r.ref, "created_at": r.created_at,
                "payload": json.loads(self.cipher.decrypt(f"notice-{r.kind}-{r.ref}", "payload", bytes(r.payload_ct)))}
               for r in rows]
        self.audit.append(AuditEvent(actor=client, terminal=client, action="kizon.notices", purpose="card",
                                     query={"from_seq": after}, result_count=len(out)))
        return out

    def ack_notices(self, through: int, *, client: str) -> int:
        """既存住基 has stored the notices up to ``through``: delete them (they hold personal data)."""
        with write_transaction(self.engine) as conn:
            removed = int(conn.execute(delete(kizon_notices).where(kizon_notices.c.id <= through)).rowcount or 0)
            self.audit.append(AuditEvent(actor=client, terminal=client, action="kizon.notices_ack", purpose="card",
                                         query={"through_seq": through}, result_count=removed), conn)
        return removed
