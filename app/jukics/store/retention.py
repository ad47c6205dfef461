"""Retention: purge history and 消除者 records once 150 years have passed (SPEC §3).

Source (seed 002, 新潟県): 「住民票の記載の修正前の本人確認情報(履歴情報)及び消除者の本人確認情報は、
住民基本台帳法施行令第34条第3項(保存)に定める期間(150年間)保管する」 and 「システム上、…(150年間)を
経過した…履歴情報及び消除者の本人確認情報を消去する仕組みとする」. Deceased people's 個人番号 are kept
for the same period (「死亡による削除後…(150年間)保管する」): they are 消除者 records like any other.

Relevant date ``D`` (the day, in Japan time, of):
- a history version: the moment it was superseded (the ``recorded_at`` of the next version);
- a 消除者 record: the moment the deletion was stored (``deleted_at``).
The store's own time is used, which is never earlier than the 異動年月日 it records, so the period
never ends early.

Boundary rule (民法第140条 初日不算入, 第143条 暦による計算): the period starts the day after ``D`` and
ends at the end of the day corresponding to ``D`` in year ``D.year + 150`` (2月29日 → 2月28日 when that
year has none). A record is purged from the next day on, i.e. once 150 full years have elapsed:
``D = 2026-04-01`` is kept through 2176-04-01 and purged from 2176-04-02 00:00 JST.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import aliased

from jukics.audit.chain import AuditEvent, AuditLog
from jukics.store.clock import JST, Clock, iso_utc
from jukics.store.db import write_transaction
from jukics.store.schema import purge_log, resident_versions, residents_current

log = logging.getLogger("jukics.store.retention")

RETENTION_YEARS: Final = 150  # 住民基本台帳法施行令第34条第3項
_CHUNK: Final = 500


@dataclass(frozen=True)
class PurgeReport:
    """What one purge run did (counts only, never personal data)."""

    ran_at: str
    cutoff: str
    years: int
    dry_run: bool
    history_versions: int
    deleted_residents: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_years(day: date, years: int) -> date:
    """``day`` moved by whole years; 2月29日 becomes 2月28日 in a year without it (民法第143条ただし書)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def retention_end(day: date, years: int = RETENTION_YEARS) -> date:
    """The last day a record with relevant date ``day`` must still be kept."""
    return add_years(day, years)


def retention_cutoff(now: datetime, years: int = RETENTION_YEARS) -> datetime:
    """The instant (UTC) before which a relevant date means "purge now".

    A record is purged iff its relevant timestamp < cutoff, which is equivalent to
    ``today(JST) > retention_end(D)``: the cutoff is the start (00:00 JST) of the day after the
    latest ``D`` whose period has ended.
    """
    last_ended = now.astimezone(JST).date() - timedelta(days=1)
    latest = add_years(last_ended, -years)
    # add_years(-years) may land one day early around 2月29日; step forward while still expired.
    while retention_end(latest + timedelta(days=1), years) <= last_ended:
        latest += timedelta(days=1)
    return datetime.combine(latest + timedelta(days=1), time(0), JST).astimezone(UTC)


def _chunks(items: Sequence[Any]) -> Sequence[Sequence[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def purge(
    engine: Engine,
    clock: Clock,
    years: int = RETENTION_YEARS,
    *,
    audit: AuditLog | None = None,
    dry_run: bool = False,
    actor: str = "jukics-purge",
    terminal: str | None = None,
) -> PurgeReport:
    """Delete history versions and 消除者 records whose retention period has ended.

    One transaction: the deletions, a ``purge_log`` row and (with ``audit``) an audit record.
    ``dry_run`` counts without deleting (and is logged as such). Run daily by ``jukics purge``
    (systemd timer); running it twice is harmless.
    """
    if years < 1:
        raise ValueError("years must be at least 1")
    now = clock()
    cutoff = iso_utc(retention_cutoff(now, years))
    ran_at = iso_utc(now)
    newer = aliased(resident_versions)
    v = resident_versions.c
    c = residents_current.c
    with write_transaction(engine) as conn:
        AuditLog.lock_head(conn)  # PostgreSQL: serialise with intake (same lock, same order)
        history_ids = list(
            conn.execute(
                select(v.id).select_from(resident_versions.join(newer, newer.c.prev_id == v.id)).where(
                    newer.c.recorded_at < cutoff
                )
            ).scalars()
        )
        deleted = conn.execute(
            select(c.code_hash, c.version_id).where(c.deleted_at.isnot(None), c.deleted_at < cutoff)
        ).all()
        if not dry_run:
            for chunk in _chunks(history_ids):
                conn.execute(delete(resident_versions).where(v.id.in_(chunk)))
            for chunk in _chunks(deleted):
                conn.execute(delete(residents_current).where(c.code_hash.in_([bytes(r.code_hash) for r in chunk])))
                conn.execute(delete(resident_versions).where(v.id.in_([int(r.version_id) for r in chunk])))
        report = PurgeReport(
            ran_at=ran_at,
            cutoff=cutoff,
            years=years,
            dry_run=dry_run,
            history_versions=len(history_ids),
            deleted_residents=len(deleted),
        )
        conn.execute(insert(purge_log).values(**report.as_dict()))
        if audit is not None:
            audit.append(
                AuditEvent(
                    actor=actor,
                    terminal=terminal or socket.gethostname(),
                    action="retention.purge",
                    purpose="住基法施行令第34条第3項",
                    query={
                        "years": years,
                        "cutoff": cutoff,
                        "dry_run": dry_run,
                        "history_versions": report.history_versions,
                        "deleted_residents": report.deleted_residents,
                    },
                    result_count=report.history_versions + report.deleted_residents,
                    ts=now,
                ),
                conn,
            )
    log.info(
        "purge%s: cutoff %s, %d history versions, %d 消除者 records",
        " (dry run)" if dry_run else "",
        cutoff,
        report.history_versions,
        report.deleted_residents,
    )
    return report
