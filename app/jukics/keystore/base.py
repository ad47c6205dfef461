"""The key-store interface: where the service gets its keys (SPEC §4 "Keys: the 耐タンパー装置").

The seed's 耐タンパー装置 「通信時の相互認証及びデータの暗号化に必要な情報を保管管理する」 is a TPM in
production. Whatever the backend, it holds ONE sealed 32-byte secret; every key the service uses is
derived from it with HKDF-SHA256 under a fixed label, so the backends differ only in how that secret
is kept (TPM-sealed blob vs. a development file) and in whether they can sign audit checkpoints.

Stable interface (other modules code against this, not against a backend):

- ``data_key()``: 32 bytes, AES-256-GCM key for personal data at rest (label ``jukics field-encryption v1``).
- ``hmac_key()``: 32 bytes, HMAC key for the search hashes (label ``jukics search-hmac v1``).
- ``audit_hmac_key()``: 32 bytes, HMAC key for the target ids in the audit log (label
  ``jukics audit-hmac v1``). A separate key, so an exported audit log cannot be joined to the search
  indexes of the database.
- ``sign_checkpoint(digest)``: signature over a 32-byte SHA-256 digest, or ``None`` when the backend
  cannot sign (development). ``checkpoint_public_key()``: the verifying key as DER
  SubjectPublicKeyInfo (EC P-256 with ECDSA-SHA256 over the prehashed digest, or Ed25519), or ``None``.
- ``is_production_safe``: False for any backend that keeps the secret in a plain file; the service
  refuses to start with such a backend in production (see :func:`open_keystore`).

TLS keys (:class:`TlsKeySource`, implemented by every backend): ``create_tls_key(path)`` makes a new
EC P-256 key and writes its key file (a ``TSS2 PRIVATE KEY`` blob for the TPM: the private part never
leaves the TPM; a PKCS#8 file for development), ``tls_signer(path)`` returns a
``cryptography`` private-key object that signs with it (CSRs, proofs of possession) and
``tls_public_key(path)`` its public key. OpenSSL itself (Python ``ssl``) loads TSS2 files through the
tpm2 provider (:mod:`jukics.keystore.provider`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_BYTES: Final = 32
LABEL_FIELD_ENCRYPTION: Final = "jukics field-encryption v1"
LABEL_SEARCH_HMAC: Final = "jukics search-hmac v1"
LABEL_AUDIT_HMAC: Final = "jukics audit-hmac v1"
LABEL_FINGERPRINT: Final = "jukics keystore-fingerprint v1"


class KeyStoreError(Exception):
    """The key store cannot be used. ``code`` is stable (E_KEYSTORE_*); the message names no key material."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@runtime_checkable
class KeyStore(Protocol):
    """What the service needs from a key store. See the module docstring for the contract."""

    is_production_safe: bool

    def data_key(self) -> bytes: ...

    def hmac_key(self) -> bytes: ...

    def audit_hmac_key(self) -> bytes: ...

    def sign_checkpoint(self, digest: bytes) -> bytes | None: ...

    def checkpoint_public_key(self) -> bytes | None: ...


@runtime_checkable
class TlsKeySource(Protocol):
    """Where TLS private keys are made and used. See the module docstring."""

    #: "tss2" (TPM-resident key blob) or "pkcs8" (software key file, development only).
    tls_key_format: str

    def create_tls_key(self, path: Path) -> ec.EllipticCurvePublicKey: ...

    def tls_signer(self, path: Path) -> ec.EllipticCurvePrivateKey: ...

    def tls_public_key(self, path: Path) -> ec.EllipticCurvePublicKey: ...


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file (never over an existing one: ``E_KEYSTORE_EXISTS``), fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise KeyStoreError("E_KEYSTORE_EXISTS", f"{path} exists; a key file is never overwritten") from None
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_pcr_policy(text: str | None) -> str | None:
    """``"sha256:0,7"`` (bank:indices) or empty/None for no policy. Raises E_KEYSTORE_CONFIG."""
    if not text:
        return None
    bank, sep, indices = text.partition(":")
    try:
        numbers = [int(i) for i in indices.split(",")]
    except ValueError:
        numbers = []
    if not sep or bank not in ("sha256", "sha384", "sha1") or not numbers or not all(0 <= n <= 23 for n in numbers):
        raise KeyStoreError(
            "E_KEYSTORE_CONFIG", f"keystore.pcr_policy {text!r}: must look like 'sha256:0,7' (PCRs 0-23)"
        )
    return f"{bank}:{','.join(str(n) for n in sorted(set(numbers)))}"


def derive_subkey(secret: bytes, label: str) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the sealed secret: 32 bytes bound to ``label``."""
    if len(secret) != SECRET_BYTES:
        raise KeyStoreError("E_KEYSTORE_CORRUPT", f"the sealed secret must be {SECRET_BYTES} bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode("ascii")).derive(secret)


class DerivedKeysMixin:
    """Implements the three derived keys from ``self._secret()``; derivations are cached."""

    _derived: dict[str, bytes]

    def _secret(self) -> bytes:
        raise NotImplementedError

    def _subkey(self, label: str) -> bytes:
        cache = self.__dict__.setdefault("_derived", {})
        if label not in cache:
            cache[label] = derive_subkey(self._secret(), label)
        return cache[label]

    def data_key(self) -> bytes:
        return self._subkey(LABEL_FIELD_ENCRYPTION)

    def hmac_key(self) -> bytes:
        return self._subkey(LABEL_SEARCH_HMAC)

    def audit_hmac_key(self) -> bytes:
        return self._subkey(LABEL_AUDIT_HMAC)

    def fingerprint(self) -> str:
        """A non-secret name of the sealed secret (16 bytes of HKDF, hex): equal fingerprints, equal keys."""
        return self._subkey(LABEL_FINGERPRINT)[:16].hex()

    def escrow_secret(self) -> bytes:
        """The sealed secret itself, for the backup escrow only (encrypted to the escrow key at once).

        Every key derives from it, so a host that lost its TPM gets the data, search and audit keys
        back from the escrow member of a backup (docs/backup.md) and re-seals it with ``adopt_secret``.
        """
        return self._secret()

    def _forget(self) -> None:
        """Drop cached derivations (after ``adopt_secret`` replaced the secret)."""
        self.__dict__.pop("_derived", None)


def adopt_path(path: Path, data: bytes, mode: int, stamp: str) -> Path | None:
    """Put ``data`` at ``path`` atomically; an existing file is kept as ``path.replaced-<stamp>`` (returned).

    The new file is written beside the old and renamed over it, so a failure at any point leaves
    either the old file or the new one in place, never neither.
    """
    tmp = path.with_name(f"{path.name}.adopt-{stamp}")
    tmp.unlink(missing_ok=True)
    write_new_file(tmp, data, mode)
    aside = None
    if path.exists():
        aside = path.with_name(f"{path.name}.replaced-{stamp}")
        os.link(path, aside)  # a second name first: the old blob survives the rename below
    os.replace(tmp, path)
    return aside


class SecretKeyStore(DerivedKeysMixin):
    """A key store over a secret held in memory: the escrowed secret while a restore checks a backup.

    Never a service's key store (not production-safe, cannot sign); ``adopt_secret`` of the host's
    real key store seals the secret once the backup has passed every check.
    """

    is_production_safe = False

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise KeyStoreError("E_KEYSTORE_CORRUPT", f"the escrowed secret must be {SECRET_BYTES} bytes")
        self._held = bytes(secret)

    def _secret(self) -> bytes:
        return self._held

    def sign_checkpoint(self, digest: bytes) -> bytes | None:
        return None

    def checkpoint_public_key(self) -> bytes | None:
        return None


def open_keystore(config_section: Mapping[str, Any], *, production: bool = False) -> KeyStore:
    """Build the key store named by the ``[keystore]`` section of the service configuration.

    ``backend = "tpm"`` with ``tcti``, ``state_dir`` and optional ``pcr_policy`` / ``srk_handle``:
    :class:`jukics.keystore.tpm.TpmKeyStore`. ``backend = "dev"`` with ``dev_secret_file``:
    :class:`jukics.keystore.dev.DevKeyStore`. With ``production=True`` a backend that is not
    production-safe is refused (``E_KEYSTORE_NOT_PRODUCTION_SAFE``), in addition to the check of
    :mod:`jukics.config`. Never falls back from one backend to another.
    """
    backend = config_section.get("backend")
    store: KeyStore
    if backend == "tpm":
        from jukics.keystore.tpm import DEFAULT_SRK_HANDLE, TpmKeyStore

        store = TpmKeyStore(
            str(config_section.get("tcti") or ""),
            str(config_section.get("state_dir") or "/var/lib/jukics/keystore"),
            pcr_policy=config_section.get("pcr_policy") or None,
            srk_handle=int(str(config_section.get("srk_handle", hex(DEFAULT_SRK_HANDLE))), 16),
        )
    elif backend == "dev":
        path = config_section.get("dev_secret_file")
        if not isinstance(path, str) or not path:
            raise KeyStoreError("E_KEYSTORE_CONFIG", "keystore.dev_secret_file is required for the dev backend")
        from jukics.keystore.dev import DevKeyStore

        store = DevKeyStore(path)
    else:
        raise KeyStoreError("E_KEYSTORE_CONFIG", "keystore.backend must be 'dev' or 'tpm'")
    if production and not store.is_production_safe:
        raise KeyStoreError(
            "E_KEYSTORE_NOT_PRODUCTION_SAFE",
            "the dev key store keeps its secret in a plain file and is refused in production",
        )
    return store
