"""The delivery side of the outbox: settle a delivered batch, the dead-letter store, link status.

The intake writes the outbox (:mod:`jukics.store.repository`); the delivery worker reads it and, once
a peer has answered, *settles* the batch here in one write transaction: the acknowledged sequence
moves on, NACKed messages move to ``dead_letters`` (a pointer to the version, never a copy of the
record), the link's counters and status change, and one audit record says what was provided to whom.
A crash before the settle re-sends the batch (the peer dedupes on sender + sequence); a crash after it
sends nothing twice. So delivery is at-least-once and, with the peer's dedupe, exactly-once in effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Engine, Row, Table, delete, func, insert, select, update

from jukics.audit.chain import AuditEvent, AuditLog
from jukics.store.clock import Clock, iso_utc, utc_now
from jukics.store.db import write_transaction
from jukics.store.schema import dead_letters, link_status, outbox, outbox_head

E_NO_DEAD_LETTER = "E_NO_DEAD_LETTER"


SettleHook = Callable[[Connection, str, Sequence[tuple[int, int]], Mapping[int, Mapping[str, Any]], str], None]


def pending_rows(engine: Engine, link: str, table: Table, ciphertext: Column, limit: int) -> Sequence[Row]:
    """Unacknowledged outbox rows of ``link`` whose payload lives in ``table`` (``outbox.version_id``
    names its row): seq, kind, created_at, the row's id and its ``ciphertext``, in sequence order.
    For the links whose messages are not resident versions (card, tokurei)."""
    with engine.connect() as conn:
        acked = conn.execute(select(outbox_head.c.acked_seq).where(outbox_head.c.link == link)).scalar_one()
        return conn.execute(
            select(outbox.c.seq, outbox.c.kind, outbox.c.created_at, table.c.id, ciphertext.label("ct"))
            .select_from(outbox.join(table, table.c.id == outbox.c.version_id))
            .where(outbox.c.link == link, outbox.c.seq > acked).order_by(outbox.c.seq).limit(limit)).all()


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    code: str
    detail: str


@dataclass(frozen=True)
class LinkCounts:
    link: str
    last_seq: int
    acked_seq: int
    pending: int
    oldest_created_at: str | None
    dead_letters: int


class LinkState:
    """Settling, dead letters and status of the outbox links, on one engine."""

    def __init__(self, engine: Engine, audit: AuditLog, clock: Clock = utc_now, *, actor: str = "links") -> None:
        self.engine = engine
        self.audit = audit
        self.clock = clock
        self.actor = actor
        #: link -> called in the acknowledgement's transaction with (conn, link, [(seq, version_id)]
        #: acknowledged and not dead, {seq: the peer's data}, now): the card links mark their rows sent.
        self.settle_hooks: dict[str, SettleHook] = {}

    def links(self) -> list[str]:
        with self.engine.connect() as conn:
            return [str(r) for r in conn.execute(select(outbox_head.c.link).order_by(outbox_head.c.link)).scalars()]

    # ---- after a peer answered -----------------------------------------------------------------
    def settle(self, link: str, through_seq: int, *, delivered: int, duplicates: int,
               dead: Sequence[DeadLetter], peer: str, replies: Mapping[int, Mapping[str, Any]] | None = None) -> int:
        """Acknowledge ``link`` through ``through_seq``, moving ``dead`` to the dead-letter store.

        Idempotent: settling a sequence that is already acknowledged changes nothing (a worker that
        restarted after the peer answered but before it settled simply re-sends; the peer says
        "duplicate"). Returns the number of outbox messages removed.
        """
        now = iso_utc(self.clock())
        with write_transaction(self.engine) as conn:
            acked, last = conn.execute(
                select(outbox_head.c.acked_seq, outbox_head.c.last_seq).where(outbox_head.c.link == link)
            ).one()
            if through_seq > last:
                raise ValueError(f"cannot settle seq {through_seq} of {link}: the last message is {last}")
            if through_seq <= acked:
                return 0
            fresh_dead = [d for d in dead if acked < d.seq <= through_seq]
            if fresh_dead:
                by_seq = {d.seq: d for d in fresh_dead}
                rows = conn.execute(
                    select(outbox.c.seq, outbox.c.version_id, outbox.c.kind, outbox.c.created_at)
                    .where(outbox.c.link == link, outbox.c.seq.in_(list(by_seq)))
                ).all()
                conn.execute(insert(dead_letters), [
                    {"link": link, "seq": r.seq, "version_id": r.version_id, "kind": r.kind,
                     "created_at": r.created_at, "dead_at": now, "code": by_seq[r.seq].code[:48],
                     "detail": by_seq[r.seq].detail[:500]}
                    for r in rows
                ])
            hook = self.settle_hooks.get(link)
            if hook is not None:
                dead_seqs = {d.seq for d in fresh_dead}
                settled = [(int(r.seq), int(r.version_id)) for r in conn.execute(
                    select(outbox.c.seq, outbox.c.version_id).where(
                        outbox.c.link == link, outbox.c.seq > acked, outbox.c.seq <= through_seq)
                    .order_by(outbox.c.seq)) if int(r.seq) not in dead_seqs]
                hook(conn, link, settled, replies or {}, now)
            conn.execute(update(outbox_head).where(outbox_head.c.link == link).values(acked_seq=through_seq))
            removed = conn.execute(delete(outbox).where(outbox.c.link == link, outbox.c.seq <= through_seq)).rowcount
            conn.execute(
                update(link_status).where(link_status.c.link == link).values(
                    last_attempt_at=now, last_success_at=now, consecutive_failures=0, last_error=None,
                    delivered_total=link_status.c.delivered_total + delivered,
                    duplicates_total=link_status.c.duplicates_total + duplicates,
                    nacked_total=link_status.c.nacked_total + len(fresh_dead),
                )
            )
            events = [AuditEvent(
                actor=self.actor, terminal=peer, action="link.deliver", purpose="relay",
                query={"link": link, "from_seq": acked + 1, "through_seq": through_seq},
                result_count=delivered + duplicates, outcome="ok",
            )]
            events += [AuditEvent(
                actor=self.actor, terminal=peer, action="link.nack", purpose="relay",
                query={"link": link, "seq": d.seq}, result_count=0, outcome="refused", code=d.code[:48],
            ) for d in fresh_dead]
            self.audit.append_many(events, conn)
            return int(removed or 0)

    def failed(self, link: str, error: str, *, auth: bool = False, peer: str = "", code: str | None = None) -> None:
        """Record a failed attempt (nothing was delivered). An authentication failure is also audited."""
        now = iso_utc(self.clock())
        with write_transaction(self.engine) as conn:
            values: dict[str, Any] = {
                "last_attempt_at": now,
                "consecutive_failures": link_status.c.consecutive_failures + 1,
                "last_error": error[:200],
            }
            if auth:
                values["auth_failures_total"] = link_status.c.auth_failures_total + 1
            conn.execute(update(link_status).where(link_status.c.link == link).values(**values))
            if auth:
                # 「認証できない相手先への情報の提供はなされない」: the refusal itself is on record.
                self.audit.append(AuditEvent(
                    actor=self.actor, terminal=peer, action="link.auth_failed", purpose="relay",
                    query={"link": link, "reason": error[:120]}, result_count=0, outcome="refused",
                    code=code or "E_LINK_AUTH",
                ), conn)

    def refuse_unlawful(self, link: str, message_type: str, seqs: Sequence[int], peer: str) -> None:
        """The legal-basis table does not allow (link, type): every pending message is a dead letter."""
        if not seqs:
            return
        detail = f"({link}, {message_type}) is not allowed by links.legal_basis"
        self.settle(link, max(seqs), delivered=0, duplicates=0,
                    dead=[DeadLetter(s, "E_LEGAL_BASIS", detail) for s in seqs], peer=peer)

    # ---- operators -----------------------------------------------------------------------------
    def counts(self) -> list[LinkCounts]:
        with self.engine.connect() as conn:
            heads = conn.execute(select(outbox_head.c.link, outbox_head.c.last_seq, outbox_head.c.acked_seq)).all()
            oldest = dict(conn.execute(
                select(outbox.c.link, func.min(outbox.c.created_at)).group_by(outbox.c.link)).all())
            dead = dict(conn.execute(
                select(dead_letters.c.link, func.count()).group_by(dead_letters.c.link)).all())
        return [LinkCounts(str(h.link), int(h.last_seq), int(h.acked_seq), int(h.last_seq) - int(h.acked_seq),
                           oldest.get(h.link), int(dead.get(h.link, 0))) for h in heads]

    def status(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = {r.link: r._asdict() for r in conn.execute(select(link_status)).all()}
        out = []
        for c in self.counts():
            row = dict(rows.get(c.link, {}))
            row.pop("link", None)
            out.append({"link": c.link, "last_seq": c.last_seq, "acked_seq": c.acked_seq, "pending": c.pending,
                        "oldest_pending_created_at": c.oldest_created_at, "dead_letters": c.dead_letters, **row})
        return out

    def dead_letter_list(self, link: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(dead_letters.c.id, dead_letters.c.link, dead_letters.c.seq, dead_letters.c.kind,
                   dead_letters.c.created_at, dead_letters.c.dead_at, dead_letters.c.code,
                   dead_letters.c.detail).order_by(dead_letters.c.id).limit(limit)
        if link:
            q = q.where(dead_letters.c.link == link)
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(q).all()]

    def requeue(self, ids: Sequence[int], *, actor: str, reason: str) -> list[Mapping[str, int]]:
        """Put dead letters back at the end of their link's outbox (new sequence numbers), audited.

        All or nothing: an unknown id refuses the whole request (E_NO_DEAD_LETTER) and changes nothing.
        """
        now = iso_utc(self.clock())
        moved: list[Mapping[str, int]] = []
        with write_transaction(self.engine) as conn:
            rows = conn.execute(select(dead_letters).where(dead_letters.c.id.in_(list(ids)))
                                .order_by(dead_letters.c.id)).all()
            missing = sorted(set(ids) - {r.id for r in rows})
            if missing:
                raise LookupError(f"{E_NO_DEAD_LETTER}: no dead letter with id {', '.join(map(str, missing))}")
            heads = {r.link: int(r.last_seq) for r in conn.execute(select(outbox_head.c.link, outbox_head.c.last_seq))}
            for r in rows:
                heads[r.link] += 1
                conn.execute(insert(outbox).values(link=r.link, seq=heads[r.link], version_id=r.version_id,
                                                   kind=r.kind, created_at=now))
                moved.append({"id": int(r.id), "old_seq": int(r.seq), "new_seq": heads[r.link]})
            for link in {r.link for r in rows}:
                conn.execute(update(outbox_head).where(outbox_head.c.link == link).values(last_seq=heads[link]))
            conn.execute(delete(dead_letters).where(dead_letters.c.id.in_(list(ids))))
            self.audit.append(AuditEvent(
                actor=actor, terminal="cli", action="link.requeue", purpose=reason[:64] or "requeue",
                query={"dead_letters": [m["id"] for m in moved]}, result_count=len(moved), outcome="ok",
            ), conn)
        return moved
