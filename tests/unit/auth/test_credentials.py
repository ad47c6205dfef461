"""Operator credentials: scrypt password hashes and TOTP with replay rejection."""

from __future__ import annotations

import pyotp
import pytest

from jukics.auth import credentials as c

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
T0 = 1_790_000_000.0  # a fixed clock: 2026-09-21


def test_a_password_verifies_and_a_wrong_one_does_not():
    encoded = c.hash_password("Correct-Horse-9", log2_n=10)
    assert encoded.startswith("scrypt$10$8$1$")
    assert c.verify_password("Correct-Horse-9", encoded).ok
    assert not c.verify_password("Correct-Horse-8", encoded).ok
    assert c.verify_password("Correct-Horse-9", encoded).needs_rehash  # below today's cost
    assert c.hash_password("Correct-Horse-9", log2_n=10) != encoded  # a fresh salt each time


def test_the_default_cost_needs_no_rehash():
    assert c.verify_password("Correct-Horse-9", c.hash_password("Correct-Horse-9")) == c.PasswordCheck(True, False)


@pytest.mark.parametrize("broken", ["", "scrypt$10$8$1$!!$!!", "bcrypt$10$8$1$AAAA$AAAA", "scrypt$10$8$1$AAAA",
                                    "scrypt$x$8$1$AAAA$AAAA"])
def test_a_malformed_hash_never_verifies(broken):
    assert not c.verify_password("anything", broken).ok


@pytest.mark.parametrize(("password", "ok"), [
    ("Short-1", False), ("alllowercaseletters", False), ("op0001-Secret-Pw", False),
    ("Long-Enough-Pass1", True), ("lower-and-digits-42", True)])
def test_password_policy(password, ok):
    if ok:
        c.check_password_policy(password, user_id="op0001")
    else:
        with pytest.raises(c.CredentialError) as exc:
            c.check_password_policy(password, user_id="op0001")
        assert exc.value.code == c.E_PASSWORD_POLICY


def code_at(t: float) -> str:
    return pyotp.TOTP(SECRET).at(t)


def test_the_current_code_and_one_step_of_drift_are_accepted():
    step = int(T0 // 30)
    for offset in (-30, 0, 30):
        check = c.verify_totp(SECRET, code_at(T0 + offset), last_step=None, now=T0)
        assert check.ok and check.step == step + offset // 30
    assert not c.verify_totp(SECRET, code_at(T0 + 90), last_step=None, now=T0).ok
    assert not c.verify_totp(SECRET, code_at(T0 - 90), last_step=None, now=T0).ok


def test_a_code_is_accepted_once():
    first = c.verify_totp(SECRET, code_at(T0), last_step=None, now=T0)
    assert first.ok
    again = c.verify_totp(SECRET, code_at(T0), last_step=first.step, now=T0 + 5)
    assert not again.ok and again.replay
    # the previous step's code (still inside the drift window) is a replay too
    older = c.verify_totp(SECRET, code_at(T0 - 30), last_step=first.step, now=T0 + 5)
    assert not older.ok and older.replay
    assert c.verify_totp(SECRET, code_at(T0 + 30), last_step=first.step, now=T0 + 30).ok


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12a456", "１２３４５６"])
def test_malformed_codes(code):
    assert c.verify_totp(SECRET, code, last_step=None, now=T0) == c.TotpCheck(False)


def test_enrollment_uri():
    secret = c.new_totp_secret()
    assert len(secret) == 32
    uri = c.provisioning_uri(secret, "op0001", "jukics 142140")
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri and "op0001" in uri
