"""The operator store: login with password + TOTP, replay, lockout, expiry, disable; all audited."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyotp
import pytest
from sqlalchemy import create_engine, select, update

from jukics.audit.chain import AuditLog, verify
from jukics.auth import operators as ops
from jukics.store import db
from jukics.store.crypto import FieldCipher, SearchHasher
from jukics.store.schema import audit_log, operators

PASSWORD = "Counter-Staff-2026"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 0, 0, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def store(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/ops.db")
    db.upgrade(engine)
    key = os.urandom(32)
    clock = Clock()
    audit = AuditLog(engine, SearchHasher(os.urandom(32)), clock=clock)
    s = ops.OperatorStore(engine, FieldCipher(key), audit, issuer="jukics 142140",
                          policy=ops.LoginPolicy(max_failures=3, lockout=dt.timedelta(minutes=15)), clock=clock)
    enrollment = s.add("op0001", PASSWORD, department="市民課", roles=["counter"],
                       account_expires_on=dt.date(2027, 3, 31), actor="admin1")
    yield s, clock, pyotp.TOTP(enrollment.totp_secret), engine
    engine.dispose()


def code(totp: pyotp.TOTP, clock: Clock) -> str:
    return totp.at(clock.now)


def events(engine) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        return [(r.action, r.outcome, r.code) for r in conn.execute(
            select(audit_log.c.action, audit_log.c.outcome, audit_log.c.code).order_by(audit_log.c.seq))]


def test_login_with_password_and_totp(store):
    s, clock, totp, engine = store
    r = s.login("op0001", PASSWORD, code(totp, clock), terminal="term-01")
    assert r == ops.LoginResult(True, None, "op0001", ("counter",))
    assert events(engine)[-1] == ("operator.login", "ok", None)
    assert s.list()[0]["last_login_at"] is not None and "password_hash" not in s.list()[0]
    with engine.connect() as conn:
        row = conn.execute(select(operators)).one()
    assert totp.secret.encode() not in bytes(row.totp_secret_ct)  # the enrolled secret is stored encrypted
    assert row.password_hash.startswith("$argon2id$")


def test_the_session_is_opened_in_the_logins_own_transaction(store):
    from jukics.auth.sessions import SessionStore
    from jukics.store.schema import terminal_sessions

    s, clock, totp, engine = store
    sessions = SessionStore(engine, idle=dt.timedelta(minutes=15), absolute=dt.timedelta(hours=8), clock=clock)

    def broken(conn, ok):
        sessions.insert(conn, "op0001", ok.roles, terminal="term-01")
        raise RuntimeError("disk full")

    before = events(engine)
    with pytest.raises(RuntimeError):
        s.login("op0001", PASSWORD, code(totp, clock), terminal="term-01", on_success=broken)
    with engine.connect() as conn:  # nothing half-written: no session, no login record, the step not used
        assert conn.execute(select(terminal_sessions)).all() == []
    assert events(engine) == before
    r = s.login("op0001", PASSWORD, code(totp, clock), terminal="term-01",
                on_success=lambda conn, ok: sessions.insert(conn, "op0001", ok.roles, terminal="term-01"))
    assert r.ok and r.session and sessions.check(r.session, terminal="term-01").user_id == "op0001"
    assert events(engine)[-1] == ("operator.login", "ok", None)


def test_a_legacy_scrypt_hash_is_replaced_on_the_next_good_login(store):
    from jukics.auth import credentials as cred

    s, clock, totp, engine = store
    with engine.begin() as conn:
        conn.execute(update(operators).values(password_hash=cred.hash_password_scrypt(PASSWORD, log2_n=10)))
    # a failed login changes nothing
    assert not s.login("op0001", "Wrong-Password-1", code(totp, clock), terminal="t").ok
    with engine.connect() as conn:
        assert conn.execute(select(operators.c.password_hash)).scalar_one().startswith("scrypt$")
    clock.now += dt.timedelta(seconds=31)
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").ok
    with engine.connect() as conn:
        rehashed = conn.execute(select(operators.c.password_hash)).scalar_one()
    assert rehashed.startswith("$argon2id$") and cred.verify_password(PASSWORD, rehashed) == cred.PasswordCheck(True)
    clock.now += dt.timedelta(seconds=31)
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").ok  # the new hash works


def test_the_same_code_is_refused_the_second_time(store):
    s, clock, totp, engine = store
    c = code(totp, clock)
    assert s.login("op0001", PASSWORD, c, terminal="t").ok
    clock.now += dt.timedelta(seconds=10)
    assert s.login("op0001", PASSWORD, c, terminal="t").code == ops.E_TOTP_REPLAY
    clock.now += dt.timedelta(seconds=30)
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").ok
    assert ("operator.login", "refused", ops.E_TOTP_REPLAY) in events(engine)


def test_unknown_user_and_wrong_secrets_look_the_same(store):
    s, clock, totp, _ = store
    assert s.login("nobody", PASSWORD, code(totp, clock), terminal="t").code == ops.E_LOGIN_FAILED
    assert s.login("op0001", "Wrong-Password-1", code(totp, clock), terminal="t").code == ops.E_LOGIN_FAILED
    assert s.login("op0001", PASSWORD, "000000" if code(totp, clock) != "000000" else "111111",
                   terminal="t").code == ops.E_LOGIN_FAILED


def test_brute_force_locks_the_account(store):
    s, clock, totp, engine = store
    for _ in range(2):
        assert s.login("op0001", "Wrong-Password-1", code(totp, clock), terminal="t").code == ops.E_LOGIN_FAILED
    assert s.login("op0001", "Wrong-Password-1", code(totp, clock), terminal="t").code == ops.E_ACCOUNT_LOCKED
    # the right password does not open a locked account
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").code == ops.E_ACCOUNT_LOCKED
    assert ("operator.locked", "refused", ops.E_ACCOUNT_LOCKED) in events(engine)
    clock.now += dt.timedelta(minutes=16)
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").ok
    assert verify(engine).ok


def test_expired_password_and_account_and_disabled(store):
    s, clock, totp, _ = store
    clock.now += dt.timedelta(days=91)
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").code == ops.E_PASSWORD_EXPIRED
    clock.now = dt.datetime(2027, 3, 31, 15, 0, tzinfo=dt.UTC)  # 2027-04-01 00:00 JST: the day after
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").code == ops.E_ACCOUNT_EXPIRED
    clock.now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    assert s.disable("op0001", actor="admin1") and not s.disable("op0001", actor="admin1")
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").code == ops.E_ACCOUNT_DISABLED


def test_add_refuses_bad_ids_weak_passwords_and_duplicates(store):
    s, _, _, _ = store
    with pytest.raises(ops.OperatorError) as exc:
        s.add("op0001", PASSWORD, department="市民課", roles=[], account_expires_on=dt.date(2027, 1, 1), actor="a")
    assert exc.value.code == ops.E_OPERATOR_EXISTS
    with pytest.raises(ops.OperatorError) as exc:
        s.add("Op 1", PASSWORD, department="市民課", roles=[], account_expires_on=dt.date(2027, 1, 1), actor="a")
    assert exc.value.code == ops.E_OPERATOR_ID
    from jukics.auth.credentials import E_PASSWORD_POLICY, CredentialError

    with pytest.raises(CredentialError) as cexc:
        s.add("op0002", "short", department="市民課", roles=[], account_expires_on=dt.date(2027, 1, 1), actor="a")
    assert cexc.value.code == E_PASSWORD_POLICY
    assert [o["user_id"] for o in s.list()] == ["op0001"]
    assert json.dumps(s.list(), ensure_ascii=False).count("argon2") == 0


def test_roles_and_totp_reset(store):
    s, clock, totp, engine = store
    assert s.set_roles("op0001", grant=["manager", "counter"], actor="admin1") == ["counter", "manager"]
    assert s.set_roles("op0001", revoke=["counter"], actor="admin1") == ["manager"]
    with pytest.raises(ops.OperatorError):
        s.set_roles("nobody", grant=["x"], actor="admin1")
    fresh = s.reset_totp("op0001", actor="admin1")
    assert s.login("op0001", PASSWORD, code(totp, clock), terminal="t").code == ops.E_LOGIN_FAILED  # old device
    assert s.login("op0001", PASSWORD, pyotp.TOTP(fresh.totp_secret).at(clock.now), terminal="t").roles == (
        "manager",)
    assert {"operator.roles", "operator.reset_totp"} <= {e[0] for e in events(engine)}


def test_operator_cli(dev_cli, capsys, monkeypatch):
    import io

    from jukics.cli.main import main as cli_main

    base = dev_cli().base
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    add = [*base, "operator", "add", "op0009", "--department", "市民課", "--role", "counter", "--expires",
           "2027-03-31", "--actor", "admin1"]
    assert cli_main(add) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.splitlines()[-1])["provisioning_uri"].startswith("otpauth://totp/")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli_main(add) == 2 and "E_OPERATOR_EXISTS" in capsys.readouterr().err
    assert cli_main([*base, "operator", "grant", "op0009", "--role", "manager", "--actor", "admin1"]) == 0
    assert cli_main([*base, "operator", "grant", "op0009", "--role", "manager", "--actor", "admin1"]) == 3
    assert cli_main([*base, "operator", "disable", "op0009", "--actor", "admin1"]) == 0
    assert cli_main([*base, "operator", "disable", "op0009", "--actor", "admin1"]) == 3
    capsys.readouterr()
    assert cli_main([*base, "operator", "list"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["roles"] == ["counter", "manager"] and entry["disabled"] is True
    assert cli_main([*base, "report", "access-review", "--json"]) == 0
    review = json.loads(capsys.readouterr().out)
    assert review["departments"]["市民課"][0]["flags"] == ["disabled", "never_used"]
    assert cli_main([*base, "report", "access-review"]) == 0 and "op0009" in capsys.readouterr().out


def test_another_second_factor_plugs_in(tmp_path):
    """A vendor adapter (say, palm-vein matching): its counter must grow, like a TOTP step."""
    from jukics.auth.credentials import TotpCheck

    class PalmVein:
        name = "palm-vein"

        def enroll(self, user_id: str, issuer: str) -> tuple[str, str]:
            return f"template-ref-{user_id}", f"register {user_id} at the reader"

        def verify(self, secret: str, response: str, *, last_counter: int | None, now: float) -> TotpCheck:
            ref, _, counter = response.partition(":")
            if ref != secret or not counter.isdigit():
                return TotpCheck(False)
            if last_counter is not None and int(counter) <= last_counter:
                return TotpCheck(False, step=int(counter), replay=True)
            return TotpCheck(True, step=int(counter))

    engine = create_engine(f"sqlite:///{tmp_path}/pv.db")
    db.upgrade(engine)
    clock = Clock()
    s = ops.OperatorStore(engine, FieldCipher(os.urandom(32)), AuditLog(engine, SearchHasher(os.urandom(32)),
                          clock=clock), issuer="jukics", clock=clock, factor=PalmVein())
    enrollment = s.add("op0100", PASSWORD, department="市民課", roles=["counter"],
                       account_expires_on=dt.date(2027, 3, 31), actor="admin1")
    assert enrollment.provisioning_uri == "register op0100 at the reader"
    assert s.login("op0100", PASSWORD, "template-ref-op0100:7", terminal="t").ok
    assert s.login("op0100", PASSWORD, "template-ref-op0100:7", terminal="t").code == ops.E_TOTP_REPLAY
    assert s.login("op0100", PASSWORD, "template-ref-op0100:8", terminal="t").ok
    assert s.login("op0100", PASSWORD, "someone-else:9", terminal="t").code == ops.E_LOGIN_FAILED
    engine.dispose()
