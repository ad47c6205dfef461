"""The key-store interface and the development key source."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jukics.keystore import KeyStore, KeyStoreError, open_keystore
from jukics.keystore.base import LABEL_AUDIT_HMAC, LABEL_FIELD_ENCRYPTION, LABEL_SEARCH_HMAC
from jukics.keystore.dev import DevKeyStore


def test_creates_a_0600_secret_and_reuses_it(tmp_path):
    path = tmp_path / "keys" / "dev.secret"
    first = DevKeyStore(path)
    key = first.data_key()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_bytes()) == 32
    assert DevKeyStore(path).data_key() == key  # same file, same keys


def test_subkeys_are_hkdf_of_the_secret_under_fixed_labels(tmp_path):
    ks = DevKeyStore(tmp_path / "s")
    keys = [ks.data_key(), ks.hmac_key(), ks.audit_hmac_key()]
    secret = (tmp_path / "s").read_bytes()
    for key, label in zip(keys, (LABEL_FIELD_ENCRYPTION, LABEL_SEARCH_HMAC, LABEL_AUDIT_HMAC), strict=True):
        expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(secret)
        assert key == expected and len(key) == 32
    assert len(set(keys)) == 3
    assert DevKeyStore(tmp_path / "other").data_key() != keys[0]


def test_dev_store_cannot_sign_and_is_not_production_safe(tmp_path):
    ks = DevKeyStore(tmp_path / "s")
    assert isinstance(ks, KeyStore)
    assert ks.sign_checkpoint(bytes(32)) is None and ks.checkpoint_public_key() is None
    assert ks.is_production_safe is False


@pytest.mark.parametrize(("mode", "code"), [(0o640, "E_KEYSTORE_PERMISSIONS"), (0o604, "E_KEYSTORE_PERMISSIONS")])
def test_refuses_a_secret_others_can_read(tmp_path, mode, code):
    path = tmp_path / "s"
    path.write_bytes(os.urandom(32))
    path.chmod(mode)
    with pytest.raises(KeyStoreError) as info:
        DevKeyStore(path).data_key()
    assert info.value.code == code


def test_refuses_a_secret_of_the_wrong_size(tmp_path):
    path = tmp_path / "s"
    path.write_bytes(os.urandom(16))
    path.chmod(0o600)
    with pytest.raises(KeyStoreError) as info:
        DevKeyStore(path).hmac_key()
    assert info.value.code == "E_KEYSTORE_CORRUPT"


def test_refuses_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.write_bytes(os.urandom(32))
    real.chmod(0o600)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(KeyStoreError) as info:
        DevKeyStore(tmp_path / "link").data_key()
    assert info.value.code == "E_KEYSTORE_UNAVAILABLE"


def test_factory(tmp_path):
    ks = open_keystore({"backend": "dev", "dev_secret_file": str(tmp_path / "s")})
    assert isinstance(ks, DevKeyStore)
    cases = [
        ({"backend": "tpm"}, {}, "E_KEYSTORE_CONFIG"),  # no tcti: never a silent default TPM
        ({"backend": "file"}, {}, "E_KEYSTORE_CONFIG"),
        ({"backend": "dev"}, {}, "E_KEYSTORE_CONFIG"),
        ({"backend": "dev", "dev_secret_file": str(tmp_path / "s")}, {"production": True},
         "E_KEYSTORE_NOT_PRODUCTION_SAFE"),
    ]
    for section, kwargs, code in cases:
        with pytest.raises(KeyStoreError) as info:
            open_keystore(section, **kwargs)
        assert info.value.code == code
        assert str(info.value).startswith(code)
