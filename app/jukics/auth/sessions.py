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

from sqlalchemy import Engine, delete, select, update

from jukics.store.clock import Clock, iso_utc, parse_iso_utc, utc_now
from jukics.store.db import write_transaction
from jukics.store.schema import terminal_sessions

E_SESSION_REQUIRED = "E_SESSION_REQUIRED"
E_SESSION_EXPIRED = "E_SESSION_EXPIRED"
E_SESSION_TERMINAL = "E_SESSION_TERMINAL"


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
        token = secrets.token_urlsafe(32)
        now = iso_utc(self.clock())
        with write_transaction(self.engine) as conn:
            conn.execute(terminal_sessions.insert().values(
                token_hash=_digest(token), user_id=user_id, terminal=terminal, roles=json.dumps(list(roles)),
                created_at=now, last_seen_at=now))
        return token

    def check(self, token: str | None, *, terminal: str) -> Session:
        if not token:
            raise SessionError(E_SESSION_REQUIRED)
        now = self.clock()
        h = _digest(token)
        expired = False
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(terminal_sessions).where(terminal_sessions.c.token_hash == h)).first()
            if row is None:
                raise SessionError(E_SESSION_REQUIRED)
            if not secrets.compare_digest(row.terminal, terminal):
                raise SessionError(E_SESSION_TERMINAL, row.user_id)
            if (parse_iso_utc(row.last_seen_at) + self.idle <= now
                    or parse_iso_utc(row.created_at) + self.absolute <= now):
                conn.execute(delete(terminal_sessions).where(terminal_sessions.c.token_hash == h))
                expired = True  # refused after the commit: raising here would roll the delete back
            else:
                conn.execute(update(terminal_sessions).where(terminal_sessions.c.token_hash == h)
                             .values(last_seen_at=iso_utc(now)))
        if expired:
            raise SessionError(E_SESSION_EXPIRED, row.user_id)
        return Session(row.user_id, row.terminal, tuple(json.loads(row.roles)))

    def close(self, token: str) -> bool:
        with write_transaction(self.engine) as conn:
            return conn.execute(delete(terminal_sessions).where(
                terminal_sessions.c.token_hash == _digest(token))).rowcount == 1
