"""The tpm2 OpenSSL provider loader: loads >= 1.2, refuses (and unloads) older ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import hashlib, json
from jukics.keystore.base import KeyStoreError
from jukics.keystore.provider import ensure_tpm2_provider
try:
    out = {"version": ensure_tpm2_provider(), "code": None}
except KeyStoreError as exc:
    out = {"version": None, "code": exc.code, "message": exc.message}
import ctypes
from jukics.keystore.provider import _libcrypto
lib = _libcrypto()
lib.EVP_MD_fetch.restype = ctypes.c_void_p
lib.EVP_MD_fetch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
lib.EVP_MD_get0_provider.restype = ctypes.c_void_p
lib.EVP_MD_get0_provider.argtypes = [ctypes.c_void_p]
lib.OSSL_PROVIDER_get0_name.restype = ctypes.c_char_p
lib.OSSL_PROVIDER_get0_name.argtypes = [ctypes.c_void_p]
md = lib.EVP_MD_fetch(None, b"SHA256", None)
out["sha256_provider"] = lib.OSSL_PROVIDER_get0_name(lib.EVP_MD_get0_provider(md)).decode()
hashlib.sha256(b"x").digest()
print(json.dumps(out))
"""


def _installed_version() -> tuple[int, ...]:
    text = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "tpm2-openssl"], capture_output=True,
                          text=True, check=True).stdout
    return tuple(int(x) for x in text.split("-")[0].split(".")[:2])


def test_provider_is_loaded_only_when_it_keeps_digests_in_software(swtpm):
    import json

    env = {"PYTHONPATH": str(ROOT / "app"), "TPM2OPENSSL_TCTI": swtpm.tcti, "PATH": "/usr/bin:/bin"}
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                                    check=True, timeout=60).stdout)
    if _installed_version() >= (1, 2):
        assert out["code"] is None and out["version"].startswith("1.")
    else:  # Debian 12's 1.1: every digest would go to the TPM
        assert out["code"] == "E_KEYSTORE_PROVIDER" and "Debian 13" in out["message"]
    # Either way, digests stay with OpenSSL's default provider, never the TPM.
    assert out["sha256_provider"] == "default"
