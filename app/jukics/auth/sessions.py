"""Terminal sessions: an opaque random token per login, bound to the terminal that logged in.

Only SHA-256(token) is stored, so a copy of the database holds no usable session. A token is
refused from any other terminal certificate identity (a token copied to another PC is useless),
after ``idle`` without use, and after ``absolute`` whatever the use. Rows are shared by all gunicorn
workers through the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from jukics.store.clock import Clock, iso_utc, parse_iso_utc, utc_now
from jukics.store.db import write_transaction
from jukics.store.schema import terminal_sessions

E_SESSION_REQUIRED = "E_SESSION_REQUIRED"
E_SESSION_EXPIRED = "E_SESSION_EXPIRED"
E_SESSION_TERMINAL = "E_SESSION_TERMINAL"

#: ``last_seen_at`` is written at most this often. The idle timeout can then end a session up to
#: this much early, never late.
TOUCH_SECONDS = 30


@dataclass(frozen=True)
class Session:
    user_id: str
    terminal: str
    roles: tuple[str, ...]


class SessionError(Exception):
    def __init__(self, code: str, user_id: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.user_id = user_id


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SessionStore:
    def __init__(self, engine: Engine, *, idle: dt.timedelta, absolute: dt.timedelta,
                 clock: Clock = utc_now) -> None:
        self.engine = engine
        self.idle = idle
        self.absolute = absolute
        self.clock = clock

    def open(self, user_id: str, roles: tuple[str, ...], *, terminal: str) -> str:
        with write_transaction(self.engine) as conn:
            return self.insert(conn, user_id, roles, terminal=terminal)

    def insert(self, conn: Connection, user_id: str, roles: tuple[str, ...], *, terminal: str) -> str:
        """A new session in the caller's transaction (the login's: ``OperatorStore.login(on_success=...)``)."""
        token = secrets.token_urlsafe(32)
        now = iso_utc(self.clock())
        conn.execute(terminal_sessions.insert().values(
            token_hash=_digest(token), user_id=user_id, terminal=terminal, roles=json.dumps(list(roles)),
            created_at=now, last_seen_at=now))
        return token

    def check(self, token: str | None, *, terminal: str) -> Session:
        if not token:
            raise SessionError(E_SESSION_REQUIRED)
        now = self.clock()
        h = _digest(token)
        # Read first without the write lock: a session used within TOUCH_SECONDS needs no write, so a
        # search costs one commit (its audit record) instead of two.
        with self.engine.connect() as conn:
            row = conn.execute(select(terminal_sessions).where(terminal_sessions.c.token_hash == h)).first()
        if row is not None and secrets.compare_digest(row.terminal, terminal) and not self._expired(row, now) \
                and now - parse_iso_utc(row.last_seen_at) < dt.timedelta(seconds=TOUCH_SECONDS):
            return Session(row.user_id, row.terminal, tuple(json.loads(row.roles)))
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(terminal_sessions).where(terminal_sessions.c.token_hash == h)).first()
            if row is None:
                raise SessionError(E_SESSION_REQUIRED)
            if not secrets.compare_digest(row.terminal, terminal):
                raise SessionError(E_SESSION_TERMINAL, row.user_id)
            expired = self._expired(row, now)
            if expired:
                conn.execute(delete(terminal_sessions).where(terminal_sessions.c.token_hash == h))
            else:
                conn.execute(update(terminal_sessions).where(terminal_sessions.c.token_hash == h)
                             .values(last_seen_at=iso_utc(now)))
        if expired:  # raised after the commit: raising inside the transaction rolled the delete back
            raise SessionError(E_SESSION_EXPIRED, row.user_id)
        return Session(row.user_id, row.terminal, tuple(json.loads(row.roles)))

    def _expired(self, row: Any, now: dt.datetime) -> bool:
        return (parse_iso_utc(row.last_seen_at) + self.idle <= now
                or parse_iso_utc(row.created_at) + self.absolute <= now)

    def close(self, token: str) -> bool:
        with write_transaction(self.engine) as conn:
            return conn.execute(delete(terminal_sessions).where(
                terminal_sessions.c.token_hash == _digest(token))).rowcount == 1
