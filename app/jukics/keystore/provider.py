"""Load OpenSSL's tpm2 provider into this process, so Python ``ssl`` can use TSS2 key files.

TLS private keys never leave the TPM (SPEC §4 "Keys"): the key file is a ``TSS2 PRIVATE KEY`` blob
and the handshake's one signature is made by the TPM through tpm2-openssl. What is known to work
(``reference/trixie-notes.md`` §2): tpm2-openssl >= 1.2 (Debian 13 ships 1.3), loaded **after** the
default provider (loading tpm2 alone switches the implicit default off: "no ciphers"), **in each
gunicorn worker after fork** (a provider initialised in the master shares one TPM connection across
every worker), no ``OPENSSL_CONF``, the TCTI in ``TPM2OPENSSL_TCTI``. tpm2-openssl 1.1 (Debian 12)
also routes every digest and the RNG to the TPM (about 1,400 TPM commands per handshake, hashlib
900x slower): it is refused here, never half-used.
"""

from __future__ import annotations

import ctypes
import os
import ssl
from typing import Final

from jukics.keystore.base import KeyStoreError

MIN_PROVIDER_VERSION: Final = (1, 2)
_OSSL_PARAM_UTF8_PTR: Final = 6

_loaded_in_pid: int | None = None
_version: str | None = None


class _OsslParam(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("data_type", ctypes.c_uint), ("data", ctypes.c_void_p),
                ("data_size", ctypes.c_size_t), ("return_size", ctypes.c_size_t)]


def _libcrypto() -> ctypes.CDLL:
    """The libcrypto that ``_ssl`` uses (the system one on Debian), found in this process's mappings."""
    import _ssl  # noqa: F401 - make sure it (and its libcrypto) is loaded

    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        for line in maps:
            path = line.rstrip("\n").split(" ")[-1]
            if "/libcrypto.so" in path:
                return ctypes.CDLL(path)
    return ctypes.CDLL("libcrypto.so.3")


def _provider_version(lib: ctypes.CDLL, provider: int) -> str:
    value = ctypes.c_char_p()
    params = (_OsslParam * 2)()
    params[0] = _OsslParam(b"version", _OSSL_PARAM_UTF8_PTR, ctypes.cast(ctypes.byref(value), ctypes.c_void_p),
                           ctypes.sizeof(value), 0)
    lib.OSSL_PROVIDER_get_params.restype = ctypes.c_int
    lib.OSSL_PROVIDER_get_params.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    if not lib.OSSL_PROVIDER_get_params(provider, params) or not value.value:
        return "unknown"
    return value.value.decode("ascii", "replace")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def ensure_tpm2_provider(tcti: str | None = None) -> str:
    """Load ``default`` then ``tpm2`` into OpenSSL once per process; returns the provider version.

    ``tcti`` (the key store's) is put in ``TPM2OPENSSL_TCTI`` unless the environment already names
    one. Raises ``E_KEYSTORE_PROVIDER`` when tpm2-openssl is missing or older than 1.2.
    """
    global _loaded_in_pid, _version
    if _loaded_in_pid == os.getpid() and _version is not None:
        return _version
    if tcti:
        os.environ.setdefault("TPM2OPENSSL_TCTI", tcti)
    lib = _libcrypto()
    lib.OSSL_PROVIDER_load.restype = ctypes.c_void_p
    lib.OSSL_PROVIDER_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    if not lib.OSSL_PROVIDER_load(None, b"default"):
        raise KeyStoreError("E_KEYSTORE_PROVIDER", "OpenSSL's default provider did not load")
    provider = lib.OSSL_PROVIDER_load(None, b"tpm2")
    if not provider:
        raise KeyStoreError(
            "E_KEYSTORE_PROVIDER",
            f"OpenSSL's tpm2 provider did not load ({ssl.OPENSSL_VERSION}); install tpm2-openssl (>= 1.2)",
        )
    version = _provider_version(lib, provider)
    if _version_tuple(version) < MIN_PROVIDER_VERSION:
        # Unload at once: while loaded, an old provider would take over hashing in this process.
        lib.OSSL_PROVIDER_unload.argtypes = [ctypes.c_void_p]
        lib.OSSL_PROVIDER_unload(provider)
        raise KeyStoreError(
            "E_KEYSTORE_PROVIDER",
            f"tpm2-openssl {version} sends every digest to the TPM; TLS keys in the TPM need >= 1.2 (Debian 13)",
        )
    _loaded_in_pid, _version = os.getpid(), version
    return version
