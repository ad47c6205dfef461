"""Encryption at rest and keyed search hashes (SPEC §3 "Encryption at rest").

``FieldCipher``: AES-256-GCM (``cryptography``'s AESGCM). Each value gets a fresh random 96-bit nonce.
The associated data binds the ciphertext to the record id, the field name and the row version, so a
ciphertext copied into another row, another field or another version of the same row fails to
decrypt (``E_DECRYPT``). Stored form: ``0x01 || nonce(12) || ciphertext || tag(16)``; the leading
byte is the format/key generation, so a later key rotation can tell old from new values.

Nonce budget: random 96-bit nonces are safe for 2^32 encryptions under one key (NIST SP 800-38D
§8.3). The store encrypts one value per record version and one per outbox message, so a municipality
of 1M residents stays orders of magnitude below that over the key's life.

``SearchHasher``: HMAC-SHA256 of ``field NUL normalised-value``, truncated to 16 bytes (128 bits):
collisions between distinct values need ~2^64 values (birthday bound), far beyond any register, and
16-byte index keys halve the size of the hash indexes compared with full 32-byte digests (limits-notes
§1: the index size is what bounds SQLite ingest). The field name is part of the input, so equal
values in different fields do not produce equal hashes. Callers normalise first
(:mod:`jukics.store.normalise`).
"""

from __future__ import annotations

import hmac
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1: Final = b"\x01"
NONCE_BYTES: Final = 12
HASH_BYTES: Final = 16


class CryptoError(Exception):
    """A value could not be decrypted (wrong key, tampered, or moved to another row/field/version)."""

    code = "E_DECRYPT"


def _aad(record_id: str, field: str, version: int) -> bytes:
    # Length-prefixed, so no choice of record id and field can collide with another pair.
    return f"jukics/v1/{len(record_id)}:{record_id}/{len(field)}:{field}/{version}".encode()


class FieldCipher:
    """AES-256-GCM for one value at a time. ``key`` is the 32-byte data key from the key store."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the data key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    def encrypt(self, record_id: str, field: str, value: str | bytes, *, version: int = 0) -> bytes:
        data = value.encode("utf-8") if isinstance(value, str) else value
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, data, _aad(record_id, field, version))

    def decrypt_bytes(self, record_id: str, field: str, blob: bytes, *, version: int = 0) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_V1:
            raise CryptoError(f"{field} of record {record_id}: not a jukics ciphertext")
        nonce = blob[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + NONCE_BYTES :], _aad(record_id, field, version))
        except InvalidTag:
            raise CryptoError(f"{field} of record {record_id} (version {version}): authentication failed") from None

    def decrypt(self, record_id: str, field: str, blob: bytes, *, version: int = 0) -> str:
        return self.decrypt_bytes(record_id, field, blob, version=version).decode("utf-8")


class SearchHasher:
    """Keyed hashes for equality search; ``key`` is the 32-byte HMAC key from the key store."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the HMAC key must be at least 32 bytes")
        self._key = key

    def digest(self, field: str, normalised_value: str) -> bytes:
        msg = field.encode("utf-8") + b"\x00" + normalised_value.encode("utf-8")
        return hmac.digest(self._key, msg, "sha256")[:HASH_BYTES]

    def hexdigest(self, field: str, normalised_value: str) -> str:
        return self.digest(field, normalised_value).hex()
