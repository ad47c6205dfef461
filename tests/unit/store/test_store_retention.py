"""Retention: history and 消除者 records are purged once 150 full years have passed (injected clock)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from store_support import FakeClock

from jukics.audit.chain import verify
from jukics.store.clock import JST, iso_utc
from jukics.store.retention import add_years, purge, retention_cutoff, retention_end
from jukics.store.schema import audit_log, purge_log

ACTOR = {"actor": "kizon", "terminal": "kizon-01"}


def jst(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=JST)


def test_rule_examples():
    # D = 2026-04-01: kept through 2176-04-01 (JST), purged from 2176-04-02 00:00 JST.
    assert retention_end(date(2026, 4, 1)) == date(2176, 4, 1)
    assert retention_cutoff(jst(2176, 4, 1, 23, 59)) == jst(2026, 4, 1)
    assert retention_cutoff(jst(2176, 4, 2)) == jst(2026, 4, 2)
    # 2月29日: no 2174-02-29, so the period ends 2174-02-28 (民法第143条ただし書).
    assert retention_end(date(2024, 2, 29)) == date(2174, 2, 28)
    assert add_years(date(2024, 2, 29), -1) == date(2023, 2, 28)


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2300, 12, 31), timezones=st.just(UTC)),
    st.integers(min_value=-3, max_value=3),
    st.integers(min_value=0, max_value=86399),
)
def test_cutoff_matches_the_rule(relevant, day_offset, second):
    """``relevant < cutoff(now)`` exactly when today (JST) is after the last day of the period."""
    d = relevant.astimezone(JST).date()
    today = retention_end(d) + timedelta(days=day_offset)
    now = datetime.combine(today, time(0), JST) + timedelta(seconds=second)
    purged = iso_utc(relevant) < iso_utc(retention_cutoff(now))
    assert purged == (today > retention_end(d))


def _setup(store, register, clock):
    """A resident changed once (version 1 becomes history) and a resident deleted, both on 2026-04-01 JST."""
    clock.now = jst(2026, 4, 1, 12)
    kept, dead = register.resident(), register.resident()
    store.apply_batch([register.update("create", kept, 1), register.update("create", dead, 1)], **ACTOR)
    store.apply_batch(
        [
            register.update("change", dict(kept, address="転居先1丁目", change_reason="転居"), 2),
            register.update("delete", dict(dead, change_reason="死亡"), 2),
        ],
        **ACTOR,
    )
    return kept, dead


@pytest.mark.parametrize(
    ("when", "purged"),
    [
        (add_years(date(2026, 4, 1), 149), False),
        (add_years(date(2026, 4, 1), 149) + timedelta(days=364), False),  # 149 years 364 days
        (date(2176, 4, 1), False),  # the last day of the 150-year period
        (date(2176, 4, 2), True),  # 150 full years have passed
        (date(2180, 1, 1), True),
    ],
)
def test_purge_boundary(store, register, clock, engine, when, purged):
    kept, dead = _setup(store, register, clock)
    clock.now = datetime.combine(when, time(23, 59) if not purged else time(0), JST)
    report = purge(engine, clock, audit=store.audit)
    assert (report.history_versions, report.deleted_residents) == ((2, 1) if purged else (0, 0))
    # History of the living resident: version 1 is gone (or kept); the current version always stays.
    assert len(store.get_history(kept["juminhyo_code"])) == (0 if purged else 1)
    assert store.get_current(kept["juminhyo_code"])["address"] == "転居先1丁目"
    # The 消除者 (個人番号 included) is kept 150 years, then gone completely.
    gone = store.get_current(dead["juminhyo_code"]) is None
    assert gone == purged
    assert (store.find_by_my_number(dead["my_number"]) == []) == purged
    assert store.stats()["versions"] == (1 if purged else 4)


def test_every_purge_is_logged_in_purge_log_and_audit_chain(store, register, clock, engine):
    _setup(store, register, clock)
    clock.now = jst(2200, 1, 1)
    dry = purge(engine, clock, audit=store.audit, dry_run=True)
    assert (dry.history_versions, dry.deleted_residents, dry.dry_run) == (2, 1, True)
    assert store.stats()["versions"] == 4  # a dry run deletes nothing
    real = purge(engine, clock, audit=store.audit)
    again = purge(engine, clock, audit=store.audit)
    assert (real.history_versions, real.deleted_residents) == (2, 1)
    assert (again.history_versions, again.deleted_residents) == (0, 0)
    with engine.connect() as conn:
        logged = conn.execute(select(purge_log).order_by(purge_log.c.id)).all()
        actions = conn.execute(
            select(audit_log.c.action, audit_log.c.query).where(audit_log.c.action == "retention.purge")
        ).all()
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == 4 + 3
    assert [(r.dry_run, r.history_versions, r.deleted_residents) for r in logged] == [
        (True, 2, 1),
        (False, 2, 1),
        (False, 0, 0),
    ]
    assert logged[0].cutoff == iso_utc(retention_cutoff(jst(2200, 1, 1)))
    assert len(actions) == 3 and '"deleted_residents":1' in actions[0].query
    assert verify(engine).ok


def test_purge_refuses_nonsense_years(engine):
    with pytest.raises(ValueError):
        purge(engine, FakeClock(), years=0)
