"""FieldCipher, SearchHasher and search normalisation (no database)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jukics.store.crypto import CryptoError, FieldCipher, SearchHasher
from jukics.store.normalise import normalise, seion

KEY = os.urandom(32)


def test_round_trip_and_fresh_nonce_per_value():
    c = FieldCipher(KEY)
    a = c.encrypt("rec-1", "name_kanji", "山田　太郎", version=3)
    b = c.encrypt("rec-1", "name_kanji", "山田　太郎", version=3)
    assert a != b  # random 96-bit nonce per value
    assert c.decrypt("rec-1", "name_kanji", a, version=3) == "山田　太郎"
    assert "山田".encode() not in a


@pytest.mark.parametrize(
    ("record_id", "field", "version"),
    [("rec-2", "name_kanji", 3), ("rec-1", "address", 3), ("rec-1", "name_kanji", 4)],
)
def test_ciphertext_bound_to_record_field_and_version(record_id, field, version):
    c = FieldCipher(KEY)
    blob = c.encrypt("rec-1", "name_kanji", "山田　太郎", version=3)
    with pytest.raises(CryptoError) as info:
        c.decrypt(record_id, field, blob, version=version)
    assert info.value.code == "E_DECRYPT" and "山田" not in str(info.value)


def test_tampered_wrong_key_and_garbage_are_refused():
    c = FieldCipher(KEY)
    blob = bytearray(c.encrypt("r", "f", "value"))
    blob[-1] ^= 1
    with pytest.raises(CryptoError):
        c.decrypt("r", "f", bytes(blob))
    with pytest.raises(CryptoError):
        FieldCipher(os.urandom(32)).decrypt("r", "f", c.encrypt("r", "f", "value"))
    with pytest.raises(CryptoError):
        c.decrypt("r", "f", b"\x02" + bytes(40))
    with pytest.raises(ValueError):
        FieldCipher(b"short")


def test_aad_has_no_ambiguous_concatenation():
    c = FieldCipher(KEY)
    blob = c.encrypt("ab", "c", "v")
    with pytest.raises(CryptoError):
        c.decrypt("a", "bc", blob)


def test_search_hash_is_keyed_field_separated_and_16_bytes():
    h = SearchHasher(KEY)
    d = h.digest("my_number", "123456789018")
    assert len(d) == 16 and d == h.digest("my_number", "123456789018")
    assert d != h.digest("juminhyo_code", "123456789018")
    assert d != SearchHasher(os.urandom(32)).digest("my_number", "123456789018")


def test_seion_normalisation():
    assert seion("ガッコウ　タロウ") == seion("かっこう たろう") == "カツコウタロウ"
    assert seion("ﾊﾟﾝ") == "ハン"
    assert seion("ヴィ") == "ウイ"
    assert normalise("name_kana_seion", "じょう") == "シヨウ"


def test_identifier_and_address_normalisation():
    assert normalise("my_number", "１２３４-５６７８-９０１８") == "123456789018"
    assert normalise("address", "千代田区１ー２ー３　コーポ") == "千代田区1-2-3コーポ"
    assert normalise("name_kanji", "山田　太郎") == normalise("name_kanji", "山田 太郎") == "山田太郎"


@given(st.text(alphabet=st.characters(min_codepoint=0x3041, max_codepoint=0x30FA), max_size=20))
def test_seion_is_idempotent(text):
    once = seion(text)
    assert seion(once) == once
