"""The operator store: one identity per person, password + TOTP login with lockout and expiry.

Every attempt, refused ones included, is a record in the audit chain (``operator.login``, outcome
``ok`` or ``refused`` with the code); a lockout is its own record (``operator.locked``). A refusal
says why only where that does not help a guesser: an unknown user and a wrong password or code get
the same ``E_LOGIN_FAILED``; locked, disabled and expired accounts are named, since the person must
go to the administrator anyway. A TOTP code is accepted at most once (the last accepted time step
is kept, and raised with a conditional update, so two logins racing with the same code cannot both
pass). Role checks (the duties table) and the terminal API build on :class:`LoginResult`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from jukics import metrics
from jukics.audit.chain import AuditEvent, AuditLog
from jukics.auth import credentials as cred
from jukics.store.clock import JST, Clock, iso_utc, parse_iso_utc, utc_now
from jukics.store.crypto import FieldCipher
from jukics.store.db import write_transaction
from jukics.store.schema import operators, terminal_sessions

E_LOGIN_FAILED = "E_LOGIN_FAILED"
E_ACCOUNT_LOCKED = "E_ACCOUNT_LOCKED"
E_ACCOUNT_DISABLED = "E_ACCOUNT_DISABLED"
E_ACCOUNT_EXPIRED = "E_ACCOUNT_EXPIRED"
E_PASSWORD_EXPIRED = "E_PASSWORD_EXPIRED"  # noqa: S105 - an error code, not a password
E_TOTP_REPLAY = "E_TOTP_REPLAY"
E_OPERATOR_EXISTS = "E_OPERATOR_EXISTS"
E_OPERATOR_ID = "E_OPERATOR_ID"
E_OPERATOR_UNKNOWN = "E_OPERATOR_UNKNOWN"

USER_ID = re.compile(r"^[a-z][a-z0-9._-]{2,31}$")


class OperatorError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5
    lockout: dt.timedelta = dt.timedelta(minutes=15)
    password_max_age: dt.timedelta = dt.timedelta(days=90)


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    code: str | None = None
    user_id: str | None = None
    roles: tuple[str, ...] = ()
    session: str | None = None  # what ``on_success`` returned (the terminal API: the session token)


@dataclass(frozen=True)
class Enrollment:
    user_id: str
    totp_secret: str  # shown once, with the provisioning URI and its QR code
    provisioning_uri: str


class OperatorStore:
    def __init__(self, engine: Engine, cipher: FieldCipher, audit: AuditLog, *, issuer: str,
                 policy: LoginPolicy | None = None, clock: Clock = utc_now,
                 factor: cred.SecondFactor | None = None) -> None:
        self.engine = engine
        self.cipher = cipher
        self.audit = audit
        self.issuer = issuer
        self.policy = policy or LoginPolicy()
        self.clock = clock
        self.factor = factor or cred.TotpFactor()

    def add(self, user_id: str, password: str, *, department: str, roles: Sequence[str],
            account_expires_on: dt.date, actor: str) -> Enrollment:
        if not USER_ID.match(user_id):
            raise OperatorError(E_OPERATOR_ID, "a user id is 3-32 of a-z 0-9 . _ -, starting with a letter")
        cred.check_password_policy(password, user_id=user_id)
        secret, shown = self.factor.enroll(user_id, self.issuer)
        now = iso_utc(self.clock())
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(operators.insert().values(
                    user_id=user_id, department=department, roles=json.dumps(sorted(set(roles))),
                    password_hash=cred.hash_password(password), password_changed_at=now,
                    totp_secret_ct=self.cipher.encrypt(f"operator-{user_id}", "totp", secret), totp_last_step=None,
                    failed_logins=0, locked_until=None, account_expires_on=account_expires_on.isoformat(),
                    disabled_at=None, last_login_at=None, created_at=now))
                self.audit.append(AuditEvent(actor=actor, terminal="cli", action="operator.add", purpose="admin",
                                             query={"user_id": user_id, "roles": ",".join(sorted(set(roles)))}),
                                  conn)
        except IntegrityError:
            raise OperatorError(E_OPERATOR_EXISTS, f"operator {user_id} exists") from None
        return Enrollment(user_id, secret, shown)

    @staticmethod
    def _end_sessions(conn: Connection, user_id: str) -> int:
        """End the operator's open terminal sessions in the change's own transaction: a session carries
        the roles of its login, so a disable, a role change or a new TOTP secret must not leave one
        running on the old grant."""
        return conn.execute(delete(terminal_sessions).where(terminal_sessions.c.user_id == user_id)).rowcount

    def disable(self, user_id: str, *, actor: str) -> bool:
        with write_transaction(self.engine) as conn:
            done = conn.execute(update(operators).where(operators.c.user_id == user_id,
                                                        operators.c.disabled_at.is_(None))
                                .values(disabled_at=iso_utc(self.clock()))).rowcount == 1
            if done:
                ended = self._end_sessions(conn, user_id)
                self.audit.append(AuditEvent(actor=actor, terminal="cli", action="operator.disable", purpose="admin",
                                             query={"user_id": user_id, "sessions_ended": ended}), conn)
        return done

    def set_roles(self, user_id: str, *, grant: Sequence[str] = (), revoke: Sequence[str] = (),
                  actor: str) -> list[str]:
        """Grant and/or revoke roles; returns the roles after. Audited with the change."""
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(operators.c.roles).where(operators.c.user_id == user_id)).first()
            if row is None:
                raise OperatorError(E_OPERATOR_UNKNOWN, f"no operator {user_id}")
            roles = sorted((set(json.loads(row.roles)) | set(grant)) - set(revoke))
            conn.execute(update(operators).where(operators.c.user_id == user_id).values(roles=json.dumps(roles)))
            # the next login picks up the new roles; the old grant does not live on in a session
            ended = self._end_sessions(conn, user_id) if roles != sorted(json.loads(row.roles)) else 0
            self.audit.append(AuditEvent(actor=actor, terminal="cli", action="operator.roles", purpose="admin",
                                         query={"user_id": user_id, "grant": ",".join(grant),
                                                "revoke": ",".join(revoke), "sessions_ended": ended}), conn)
        return roles

    def reset_totp(self, user_id: str, *, actor: str) -> Enrollment:
        """A new TOTP secret (a lost phone): the old codes stop working at once."""
        secret, shown = self.factor.enroll(user_id, self.issuer)
        with write_transaction(self.engine) as conn:
            done = conn.execute(update(operators).where(operators.c.user_id == user_id).values(
                totp_secret_ct=self.cipher.encrypt(f"operator-{user_id}", "totp", secret),
                totp_last_step=None)).rowcount == 1
            if not done:
                raise OperatorError(E_OPERATOR_UNKNOWN, f"no operator {user_id}")
            ended = self._end_sessions(conn, user_id)  # a lost phone may mean a stolen session too
            self.audit.append(AuditEvent(actor=actor, terminal="cli", action="operator.reset_totp", purpose="admin",
                                         query={"user_id": user_id, "sessions_ended": ended}), conn)
        return Enrollment(user_id, secret, shown)

    def login(self, user_id: str, password: str, code: str, *, terminal: str,
              on_success: Callable[[Connection, LoginResult], str] | None = None) -> LoginResult:
        """Check password and TOTP and record the attempt. ``on_success`` runs inside the good login's
        own transaction (the terminal API opens its session there): one commit, and a session exists
        exactly when its login record does."""
        now = self.clock()
        result, recorded = self._login(user_id, password, code, now, terminal, on_success)
        if not recorded:  # refusals that wrote nothing else: the audit record on its own
            self.audit.append(self._event(user_id, terminal, result))
        metrics.LOGINS.labels("ok" if result.ok else metrics.code_label(result.code)).inc()
        return result

    @staticmethod
    def _event(user_id: str, terminal: str, result: LoginResult) -> AuditEvent:
        # who tried is recorded as given (truncated), also when no such operator exists
        return AuditEvent(actor=user_id[:32] or "unknown", terminal=terminal[:128], action="operator.login",
                          purpose="login", outcome="ok" if result.ok else "refused", code=result.code)

    def _login(self, user_id: str, password: str, code: str, now: dt.datetime, terminal: str,
               on_success: Callable[[Connection, LoginResult], str] | None = None) -> tuple[LoginResult, bool]:
        """The result, and whether its audit record was written (in the same transaction as the state)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(operators).where(operators.c.user_id == user_id)).first()
        if row is None:
            cred.verify_password(password, _DUMMY_HASH)  # the same work as for a real account
            return LoginResult(False, E_LOGIN_FAILED), False
        if row.disabled_at is not None:
            return LoginResult(False, E_ACCOUNT_DISABLED, user_id), False
        if dt.date.fromisoformat(row.account_expires_on) < now.astimezone(JST).date():
            return LoginResult(False, E_ACCOUNT_EXPIRED, user_id), False
        if row.locked_until is not None and parse_iso_utc(row.locked_until) > now:
            return LoginResult(False, E_ACCOUNT_LOCKED, user_id), False
        password_check = cred.verify_password(password, row.password_hash)
        password_ok = password_check.ok
        secret = self.cipher.decrypt(f"operator-{user_id}", "totp", bytes(row.totp_secret_ct))
        totp = self.factor.verify(secret, code, last_counter=row.totp_last_step, now=now.timestamp())
        if not (password_ok and totp.ok):
            return self._failed(user_id, now, E_TOTP_REPLAY if password_ok and totp.replay else E_LOGIN_FAILED,
                                terminal), True
        if parse_iso_utc(row.password_changed_at) + self.policy.password_max_age < now:
            result = LoginResult(False, E_PASSWORD_EXPIRED, user_id)
        else:
            result = LoginResult(True, None, user_id, tuple(json.loads(row.roles)))
        # one write transaction (one commit, one fsync) for the state and the audit record: the
        # second commit was most of the non-KDF cost of a login (bench/login.py)
        with write_transaction(self.engine) as conn:
            # the step only moves forward: a second login with the same code finds nothing to update
            moved = conn.execute(update(operators).where(
                operators.c.user_id == user_id,
                or_(operators.c.totp_last_step.is_(None), operators.c.totp_last_step < totp.step))
                .values(totp_last_step=totp.step, failed_logins=0, locked_until=None,
                        last_login_at=iso_utc(now))).rowcount
            if moved == 1:
                if password_check.needs_rehash:
                    # an older KDF or a lower cost: the new hash, in the same transaction
                    conn.execute(update(operators).where(operators.c.user_id == user_id)
                                 .values(password_hash=cred.hash_password(password)))
                self.audit.append(self._event(user_id, terminal, result), conn)
                if result.ok and on_success is not None:
                    result = dataclasses.replace(result, session=on_success(conn, result))
        if moved != 1:
            return self._failed(user_id, now, E_TOTP_REPLAY, terminal), True
        return result, True

    def _failed(self, user_id: str, now: dt.datetime, code: str, terminal: str) -> LoginResult:
        with write_transaction(self.engine) as conn:
            failures = conn.execute(select(operators.c.failed_logins).where(
                operators.c.user_id == user_id)).scalar_one() + 1
            locked = failures >= self.policy.max_failures
            conn.execute(update(operators).where(operators.c.user_id == user_id).values(
                failed_logins=0 if locked else failures,
                locked_until=iso_utc(now + self.policy.lockout) if locked else None))
            result = LoginResult(False, E_ACCOUNT_LOCKED if locked else code, user_id)
            self.audit.append(self._event(user_id, terminal, result), conn)
            if locked:
                self.audit.append(AuditEvent(actor=user_id, terminal="auth", action="operator.locked",
                                             purpose="login", outcome="refused", code=E_ACCOUNT_LOCKED), conn)
        if locked:  # counted once committed
            metrics.LOCKOUTS.inc()
        return result

    def list(self) -> list[dict[str, object]]:
        """For `jukics operator list` and the access review: no secrets, no hashes."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(operators).order_by(operators.c.user_id)).all()
        return [{"user_id": r.user_id, "department": r.department, "roles": json.loads(r.roles),
                 "account_expires_on": r.account_expires_on, "disabled": r.disabled_at is not None,
                 "locked_until": r.locked_until, "last_login_at": r.last_login_at,
                 "password_changed_at": r.password_changed_at} for r in rows]


# A real hash of a random password, so an unknown user id costs the same KDF work as a known one.
_DUMMY_HASH = cred.hash_password("x" * 16 + "A1!")
