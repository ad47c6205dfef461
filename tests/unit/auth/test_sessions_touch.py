"""Terminal sessions write ``last_seen_at`` at most every TOUCH_SECONDS: a busy session costs no write
per request, and the idle timeout still ends a session on time (early by at most that, never late)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from jukics.auth.sessions import TOUCH_SECONDS, SessionError, SessionStore
from jukics.store import db
from jukics.store.schema import terminal_sessions

T1, T2 = "term-01.lab.jukics.example", "term-02.lab.jukics.example"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def env(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/s.db")
    db.upgrade(engine)
    clock = Clock()
    yield SessionStore(engine, idle=dt.timedelta(minutes=15), absolute=dt.timedelta(hours=8), clock=clock), clock
    engine.dispose()


def last_seen(store: SessionStore) -> str:
    with store.engine.connect() as conn:
        return conn.execute(select(terminal_sessions.c.last_seen_at)).scalar_one()


def test_uses_within_the_interval_write_nothing(env):
    store, clock = env
    token = store.open("clerk1", ("counter",), terminal=T1)
    opened = last_seen(store)
    for _ in range(3):
        clock.now += dt.timedelta(seconds=TOUCH_SECONDS / 4)
        assert store.check(token, terminal=T1).user_id == "clerk1"
    assert last_seen(store) == opened
    clock.now += dt.timedelta(seconds=TOUCH_SECONDS)
    store.check(token, terminal=T1)
    assert last_seen(store) > opened  # written again once the interval has passed


def test_idle_timeout_is_never_late(env):
    store, clock = env
    token = store.open("clerk1", ("counter",), terminal=T1)
    clock.now += dt.timedelta(seconds=TOUCH_SECONDS - 1)
    store.check(token, terminal=T1)  # not written: counts from the login
    clock.now += dt.timedelta(minutes=15) - dt.timedelta(seconds=TOUCH_SECONDS - 1)
    with pytest.raises(SessionError) as err:
        store.check(token, terminal=T1)
    assert err.value.code == "E_SESSION_EXPIRED"
    with pytest.raises(SessionError) as err:  # and the expired row is gone
        store.check(token, terminal=T1)
    assert err.value.code == "E_SESSION_REQUIRED"


def test_the_fast_path_still_refuses(env):
    store, clock = env
    token = store.open("clerk1", ("counter",), terminal=T1)
    clock.now += dt.timedelta(seconds=1)
    with pytest.raises(SessionError) as err:
        store.check(token, terminal=T2)
    assert err.value.code == "E_SESSION_TERMINAL"
    with pytest.raises(SessionError) as err:
        store.check("not-a-token", terminal=T1)
    assert err.value.code == "E_SESSION_REQUIRED"
    assert store.close(token)
    with pytest.raises(SessionError) as err:
        store.check(token, terminal=T1)
    assert err.value.code == "E_SESSION_REQUIRED"
