"""Operator credentials: Argon2id password hashes (scrypt ones of the earlier scheme still verify) and TOTP
with replay rejection."""

from __future__ import annotations

import pyotp
import pytest

from jukics.auth import credentials as c

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
T0 = 1_790_000_000.0  # a fixed clock: 2026-09-21


def test_a_password_verifies_and_a_wrong_one_does_not():
    encoded = c.hash_password("Correct-Horse-9", memory_kib=1024, iterations=1)
    assert encoded.startswith(f"$argon2id$v=19$m=1024,t=1,p={c.ARGON2_LANES}$")  # the PHC string argon2 tools read
    assert c.verify_password("Correct-Horse-9", encoded).ok
    assert not c.verify_password("Correct-Horse-8", encoded).ok
    assert c.verify_password("Correct-Horse-9", encoded).needs_rehash  # below today's cost
    assert c.hash_password("Correct-Horse-9", memory_kib=1024, iterations=1) != encoded  # a fresh salt each time


def test_the_default_cost_needs_no_rehash():
    encoded = c.hash_password("Correct-Horse-9")
    assert f"m={c.ARGON2_MEMORY_KIB},t={c.ARGON2_ITERATIONS},p={c.ARGON2_LANES}$" in encoded
    assert c.verify_password("Correct-Horse-9", encoded) == c.PasswordCheck(True, False)


def test_the_default_cost_is_owasps_argon2id_floor_on_two_lanes():
    # m=19 MiB, t=2 (OWASP's first Argon2id setting); the two lanes split the same memory and work
    assert (c.ARGON2_MEMORY_KIB, c.ARGON2_ITERATIONS, c.ARGON2_LANES) == (19456, 2, 2)


def test_a_single_lane_hash_of_the_same_cost_verifies_and_is_rehashed_to_two_lanes():
    one_lane = c.hash_password("Correct-Horse-9", lanes=1)
    assert f"m={c.ARGON2_MEMORY_KIB},t={c.ARGON2_ITERATIONS},p=1$" in one_lane
    assert c.verify_password("Correct-Horse-9", one_lane) == c.PasswordCheck(True, True)


def test_a_stronger_hash_is_kept():
    stronger = c.hash_password("Correct-Horse-9", memory_kib=c.ARGON2_MEMORY_KIB * 2, iterations=3)
    assert c.verify_password("Correct-Horse-9", stronger) == c.PasswordCheck(True, False)


def test_an_earlier_scrypt_hash_verifies_and_always_wants_a_rehash():
    legacy = c.hash_password_scrypt("Correct-Horse-9", log2_n=10)
    assert legacy.startswith("scrypt$10$8$1$")
    assert c.verify_password("Correct-Horse-9", legacy) == c.PasswordCheck(True, True)
    assert not c.verify_password("Correct-Horse-8", legacy).ok


@pytest.mark.parametrize("broken", ["", "scrypt$10$8$1$!!$!!", "bcrypt$10$8$1$AAAA$AAAA", "scrypt$10$8$1$AAAA",
                                    "scrypt$x$8$1$AAAA$AAAA", "$argon2id$v=19$m=1024,t=1,p=1$AAAA",
                                    "$argon2id$v=19$m=x,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
                                    "$argon2i$v=19$m=1024,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA"])
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
