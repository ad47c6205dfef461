"""Operator credentials: the password (Argon2id from `cryptography`) and the TOTP second factor (pyotp).

Pure functions and small value types, no storage: the operator store keeps what these return (the
encoded password hash, the TOTP secret sealed by the data key, the last accepted time step) and
applies the lockout and expiry policy around them.

- Passwords: Argon2id (RFC 9106) with a random 16-byte salt, stored in the PHC string format
  (``$argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>``) that argon2 tools read; the parameters travel
  with the hash, so they can be raised later and old hashes still verify and report that they want a
  rehash (the operator store rehashes on the next good login). Hashes of the earlier scrypt scheme
  (``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``) still verify and are always rehashed.
  Compared in constant time.
- TOTP: RFC 6238 (30 s steps, 6 digits, SHA-1 as every authenticator app expects), one step of clock
  drift either way; a code is accepted at most once: the store passes the last accepted step and a
  code for that step or an earlier one is a replay.
"""

from __future__ import annotations

import base64
import hmac
import os
import time
from dataclasses import dataclass
from typing import Protocol

import pyotp
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

E_PASSWORD_POLICY = "E_PASSWORD_POLICY"  # noqa: S105 - an error code, not a password

#: The KDF cost (bench/login.py reports it with its latency): Argon2id with 19 MiB and 2 passes, OWASP's
#: first recommended Argon2id setting (Password Storage Cheat Sheet), split over 2 lanes. The lanes keep
#: the memory and the total work of the single-lane setting (RFC 9106 §3.1: p only divides the
#: 19 MiB into independent slices), so an attacker's cost per guess is unchanged; OpenSSL fills the
#: lanes on two threads, which halves the wall time of a check on the 2-core target (~26 ms instead of
#: ~44 ms) and keeps a login inside its 50 ms budget. The scrypt setting used before (2**14 x 8 x 1)
#: sat below OWASP's scrypt floor (2**17 x 8 x 1: ~500 ms here).
ARGON2_MEMORY_KIB = 19456
ARGON2_ITERATIONS = 2
ARGON2_LANES = 2
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256

TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
TOTP_DRIFT_STEPS = 1


class CredentialError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_password_policy(password: str, *, user_id: str = "") -> None:
    """Length 12-256, not the user id, at least three of: lower, upper, digit, other."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise CredentialError(E_PASSWORD_POLICY,
                              f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    if user_id and user_id.lower() in password.lower():
        raise CredentialError(E_PASSWORD_POLICY, "a password must not contain the user id")
    kinds = sum((any(c.islower() for c in password), any(c.isupper() for c in password),
                 any(c.isdigit() for c in password), any(not c.isalnum() for c in password)))
    if kinds < 3:
        raise CredentialError(E_PASSWORD_POLICY,
                              "a password mixes at least three of: lower case, upper case, digits, others")


def hash_password(password: str, *, memory_kib: int = ARGON2_MEMORY_KIB, iterations: int = ARGON2_ITERATIONS,
                  lanes: int = ARGON2_LANES) -> str:
    kdf = Argon2id(salt=os.urandom(SALT_BYTES), length=HASH_BYTES, iterations=iterations, lanes=lanes,
                   memory_cost=memory_kib)
    return kdf.derive_phc_encoded(password.encode("utf-8"))


def hash_password_scrypt(password: str, *, log2_n: int = 14, r: int = 8, p: int = 1) -> str:
    """The earlier scheme; only to make legacy hashes for tests and for the login benchmark's comparison."""
    salt = os.urandom(SALT_BYTES)
    digest = Scrypt(salt=salt, length=HASH_BYTES, n=2**log2_n, r=r, p=p).derive(password.encode("utf-8"))
    return f"scrypt${log2_n}${r}${p}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    needs_rehash: bool = False


def _argon2_params(encoded: str) -> tuple[int, int, int]:
    """(m, t, p) of a PHC string ``$argon2id$v=19$m=..,t=..,p=..$salt$hash``."""
    fields = dict(item.split("=", 1) for item in encoded.split("$")[3].split(","))
    return int(fields["m"]), int(fields["t"]), int(fields["p"])


def verify_password(password: str, encoded: str) -> PasswordCheck:
    """Constant-time check against an encoded hash; a malformed hash never verifies."""
    secret = password.encode("utf-8")
    try:
        if encoded.startswith("$argon2id$"):
            Argon2id.verify_phc_encoded(secret, encoded)
            memory, iterations, lanes = _argon2_params(encoded)
            weaker = memory < ARGON2_MEMORY_KIB or iterations < ARGON2_ITERATIONS
            slower = lanes < ARGON2_LANES  # as strong, but checked on fewer threads: rehash for speed
            return PasswordCheck(True, needs_rehash=weaker or slower)
        scheme, log2_n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return PasswordCheck(False)
        kdf = Scrypt(salt=base64.b64decode(salt, validate=True), length=len(base64.b64decode(digest)),
                     n=2 ** int(log2_n), r=int(r), p=int(p))
        kdf.verify(secret, base64.b64decode(digest, validate=True))
    except (ValueError, KeyError, IndexError, InvalidKey):
        return PasswordCheck(False)
    return PasswordCheck(True, needs_rehash=True)  # the earlier scheme: replaced on this login


def new_totp_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, RFC 4226's recommendation


def provisioning_uri(secret: str, user_id: str, issuer: str) -> str:
    """otpauth:// URI for the authenticator app (shown once at enrollment, as text and QR code)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS).provisioning_uri(
        name=user_id, issuer_name=issuer)


@dataclass(frozen=True)
class TotpCheck:
    ok: bool
    step: int | None = None  # the time step the code belonged to (store it: the next code must be later)
    replay: bool = False


def verify_totp(secret: str, code: str, *, last_step: int | None, now: float | None = None) -> TotpCheck:
    """The code of the current step or one step either side, never one at or before ``last_step``."""
    if not (len(code) == TOTP_DIGITS and code.isascii() and code.isdigit()):
        return TotpCheck(False)
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS)
    t = time.time() if now is None else now
    current = int(t // TOTP_STEP_SECONDS)
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP_SECONDS), code):
            if last_step is not None and step <= last_step:
                return TotpCheck(False, step=step, replay=True)
            return TotpCheck(True, step=step)
    return TotpCheck(False)


class SecondFactor(Protocol):
    """The second factor as an interface (docs/operators.md). The store keeps, per operator, one secret
    string (encrypted with the data key) and one counter that must only grow (the TOTP time step;
    for WebAuthn the authenticator's signCount; for a vein/palm vendor adapter its match sequence),
    so every factor gets the same replay rule and the same lockout."""

    name: str

    def enroll(self, user_id: str, issuer: str) -> tuple[str, str]:
        """A new secret to store, and what to show the person once (URI, device registration id)."""
        ...

    def verify(self, secret: str, response: str, *, last_counter: int | None, now: float) -> TotpCheck:
        """``ok`` with the new counter, or not ok (``replay`` when the counter did not grow)."""
        ...


class TotpFactor:
    """RFC 6238 TOTP with pyotp: the default second factor."""

    name = "totp"

    def enroll(self, user_id: str, issuer: str) -> tuple[str, str]:
        secret = new_totp_secret()
        return secret, provisioning_uri(secret, user_id, issuer)

    def verify(self, secret: str, response: str, *, last_counter: int | None, now: float) -> TotpCheck:
        return verify_totp(secret, response, last_step=last_counter, now=now)
