"""Development key source: the sealed secret is a 32-byte random file (mode 0600).

Only for development, tests and the lab until the TPM key store lands. A copied disk gives the
attacker this file, which is exactly what the TPM backend prevents; hence ``is_production_safe``
is False and :func:`jukics.keystore.base.open_keystore` refuses it in production.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jukics.keystore.base import SECRET_BYTES, DerivedKeysMixin, KeyStoreError, adopt_path, write_new_file


class DevKeyStore(DerivedKeysMixin):
    """Reads the secret from ``path``, creating it (random, 0600, parent 0700) when missing.

    Refuses a file readable or writable by group/others (``E_KEYSTORE_PERMISSIONS``) and a file of
    the wrong size (``E_KEYSTORE_CORRUPT``). Cannot sign checkpoints (the hooks return None).
    """

    is_production_safe = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cached: bytes | None = None

    def _secret(self) -> bytes:
        if self._cached is None:
            self._cached = self._load_or_create()
        return self._cached

    def _load_or_create(self) -> bytes:
        try:
            return self._read()
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret = os.urandom(SECRET_BYTES)
        try:
            # O_EXCL: if another process created it first, read theirs instead of overwriting it.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read()
        except OSError as exc:
            raise KeyStoreError("E_KEYSTORE_UNAVAILABLE", f"cannot create {self.path}: {exc.strerror}") from None
        try:
            os.write(fd, secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        return secret

    def _read(self) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise KeyStoreError("E_KEYSTORE_UNAVAILABLE", f"cannot open {self.path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyStoreError("E_KEYSTORE_CORRUPT", f"{self.path} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyStoreError(
                    "E_KEYSTORE_PERMISSIONS", f"{self.path} is accessible by group or others (must be 0600)"
                )
            data = os.read(fd, SECRET_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) != SECRET_BYTES:
            raise KeyStoreError("E_KEYSTORE_CORRUPT", f"{self.path} must hold exactly {SECRET_BYTES} bytes")
        return data

    def adopt_secret(self, secret: bytes, stamp: str) -> tuple[str, Path | None]:
        """Make ``secret`` this store's secret (an escrow restore). Returns (outcome, old file kept aside)."""
        if len(secret) != SECRET_BYTES:
            raise KeyStoreError("E_KEYSTORE_CORRUPT", f"the secret must be {SECRET_BYTES} bytes")
        try:
            if self._read() == secret:
                return "unchanged", None
        except (FileNotFoundError, KeyStoreError):
            pass
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        aside = adopt_path(self.path, secret, 0o600, stamp)
        self._cached = None
        self._forget()
        return ("replaced" if aside else "sealed"), aside

    def sign_checkpoint(self, digest: bytes) -> bytes | None:
        return None  # signing comes with the TPM key store (non-exportable key)

    def checkpoint_public_key(self) -> bytes | None:
        return None

    # TLS keys: software EC P-256 keys in PKCS#8 files (0600). Development and tests only: this is
    # exactly the plaintext key material the TPM backend never writes.
    tls_key_format = "pkcs8"

    def create_tls_key(self, path: Path) -> ec.EllipticCurvePublicKey:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_new_file(Path(path), pem, 0o600)
        return key.public_key()

    def tls_signer(self, path: Path) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyStoreError(
                "E_KEYSTORE_KEY_FILE", f"{path}: not a usable private key ({exc.__class__.__name__})"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyStoreError("E_KEYSTORE_KEY_FILE", f"{path}: not an EC private key")
        return key

    def tls_public_key(self, path: Path) -> ec.EllipticCurvePublicKey:
        return self.tls_signer(path).public_key()
