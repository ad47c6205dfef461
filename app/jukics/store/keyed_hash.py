"""A :class:`~jukics.store.crypto.SearchHasher` that computes the same HMAC-SHA256 about 3x faster.

``hmac.digest(key, msg, "sha256")`` makes OpenSSL look the digest up and key a new HMAC context on
every call (~2-3 µs here, and an intake item needs 7 keyed hashes). HMAC (RFC 2104) is
``H((K ^ opad) || H((K ^ ipad) || msg))``: the two padded-key blocks are hashed once here, and each
digest copies those two SHA-256 states (``hashlib`` copies are cheap) and hashes only the message.
The output is bit-for-bit that of ``hmac`` (a unit test compares them), so indexes built by one are
searched by the other.
"""

from __future__ import annotations

import hashlib
from typing import Final

from jukics.store.crypto import HASH_BYTES, SearchHasher

_BLOCK: Final = 64  # SHA-256 block size


class PrecomputedSearchHasher(SearchHasher):
    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        block = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
        block = block.ljust(_BLOCK, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, field: str, normalised_value: str) -> bytes:
        inner = self._inner.copy()
        inner.update(field.encode("utf-8") + b"\x00" + normalised_value.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:HASH_BYTES]
