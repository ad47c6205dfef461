"""Text normalisation, refused characters, length limits, かな fields and the 清音化 search key."""

from __future__ import annotations

import unicodedata

import pytest

from jukics.domain.errors import DomainError
from jukics.domain.text import MAX_LENGTHS, normalize_kana, normalize_text, seion_kana


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(DomainError) as err:
        fn(*args, **kwargs)
    return err.value.code


# --- normalize_text ------------------------------------------------------------------------------


def test_nfc():
    decomposed = "か\u3099"  # か + combining dakuten
    assert normalize_text(decomposed, "address") == "が"
    assert normalize_text("Cafe\u0301", "address") == "Café"


def test_nfc_keeps_width():
    # NFC, not NFKC: full-width digits in an address stay as written.
    assert normalize_text("１丁目２番", "address") == "１丁目２番"


def test_whitespace():
    assert normalize_text("  山田 \u3000 太郎  ", "name_kanji") == "山田\u3000太郎"
    assert normalize_text("山田 太郎", "name_kanji") == "山田\u3000太郎"
    assert normalize_text("本町1-2-3   メゾン101", "address") == "本町1-2-3 メゾン101"
    assert normalize_text("本町1-2-3\u3000 メゾン101", "address") == "本町1-2-3\u3000メゾン101"
    assert normalize_text("\u00a0本町\u00a0", "address") == "本町"
    assert normalize_text(" \u3000 ", "address") == ""


@pytest.mark.parametrize(
    "ch",
    ["\x00", "\x07", "\t", "\n", "\r", "\x1b", "\x7f", "\x80", "\x85", "\x9f",  # C0, DEL, C1
     "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",  # bidi
     "\u200e", "\u200f", "\u061c", "\u200b", "\u200c", "\u200d", "\ufeff", "\u2060",  # marks, zero-width
     "\u2028", "\u2029"],  # line/paragraph separators
)
def test_control_and_format_characters_refused(ch):
    assert code_of(normalize_text, f"山田{ch}太郎", "name_kanji") == "E_TEXT_CONTROL_CHAR"


@pytest.mark.parametrize("ch", ["\ue000", "\uf8ff", "\U000f0000", "\ud800", "\udfff"])
def test_private_use_and_surrogates_refused(ch):
    assert code_of(normalize_text, f"山田{ch}", "name_kanji") == "E_TEXT_CHAR_NOT_ALLOWED"


def test_ideographic_variation_sequence_allowed():
    # 葛 + VS17: how standard Unicode writes a 異体字; it is not a control character.
    assert normalize_text("葛\U000e0100城", "name_kanji") == "葛\U000e0100城"


def test_length_limits():
    limit = MAX_LENGTHS["name_kanji"]
    assert normalize_text("亜" * limit, "name_kanji") == "亜" * limit
    assert code_of(normalize_text, "亜" * (limit + 1), "name_kanji") == "E_TEXT_TOO_LONG"
    # Counted after normalisation: trailing spaces do not count, decomposed kana count once.
    assert normalize_text("亜" * limit + "   ", "name_kanji")
    assert normalize_text("か\u3099" * limit, "name_kanji") == "が" * limit
    assert code_of(normalize_text, "abc", "address", max_len=2) == "E_TEXT_TOO_LONG"


def test_type():
    assert code_of(normalize_text, 12, "address") == "E_TYPE"


def test_error_message_has_field_not_value():
    with pytest.raises(DomainError) as err:
        normalize_text("山田\u202e太郎", "name_kanji")
    assert "name_kanji" in str(err.value) and "漢字氏名" in str(err.value)
    assert "山田" not in str(err.value)


# --- かな fields ----------------------------------------------------------------------------------


def test_kana_field():
    assert normalize_kana("やまだ　たろう") == "やまだ\u3000たろう"
    assert normalize_kana("ﾔﾏﾀﾞ ﾀﾛｳ") == "ヤマダ\u3000タロウ"  # half-width accepted, made full-width
    assert normalize_kana("スミス・ジョン") == "スミス・ジョン"
    assert normalize_kana("ジョーンズ") == "ジョーンズ"
    assert normalize_kana("ジョ-ンズ") == "ジョーンズ"  # hyphen-minus as the long vowel
    assert normalize_kana("さゝき") == "さゝき"


@pytest.mark.parametrize("bad", ["山田", "yamada", "やまだ1", "やまだ！", "やまだ\u3000太郎"])
def test_kana_field_refuses_non_kana(bad):
    assert code_of(normalize_kana, bad, "name_kana") == "E_KANA_INVALID"


# --- 清音化かな -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kana", "key"),
    [
        ("がぎぐげご", "カキクケコ"),
        ("ざじずぜぞ", "サシスセソ"),
        ("だぢづでど", "タチツテト"),
        ("ばびぶべぼ", "ハヒフヘホ"),
        ("ぱぴぷぺぽ", "ハヒフヘホ"),
        ("ガギグゲゴザジズゼゾダヂヅデドバビブベボパピプペポ", "カキクケコサシスセソタチツテトハヒフヘホハヒフヘホ"),
        ("ヴ", "ウ"),
        ("ヷヸヹヺ", "ワヰヱヲ"),
        ("ぁぃぅぇぉっゃゅょゎゕゖ", "アイウエオツヤユヨワカケ"),
        ("ァィゥェォッャュョヮヵヶ", "アイウエオツヤユヨワカケ"),
        ("ㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ", "クシストヌハヒフヘホムラリルレロ"),
        ("ｶﾞｯｺｳ", "カツコウ"),  # half-width with a separate voicing mark
        ("ﾊﾟﾝ", "ハン"),
        ("か\u3099", "カ"),  # combining
        ("か゛", "カ"),  # spacing voicing mark: no space left behind
        ("ハ゜", "ハ"),
        ("じゅんいち", "シユンイチ"),
        ("きょうこ", "キヨウコ"),
        ("ジョーンズ", "シヨーンス"),  # ー kept
        ("ジョｰンズ", "シヨーンス"),  # half-width long vowel
        ("ジョ−ンズ", "シヨーンス"),  # minus sign as long vowel
        ("さゝき", "ササキ"),  # iteration mark repeats the kana before it
        ("さゞき", "ササキ"),
        ("ササキ", "ササキ"),
        ("いすゞ", "イスス"),
        ("やまだ　たろう", "ヤマタタロウ"),  # separators removed
        ("スミス・ジョン", "スミスシヨン"),
        ("ﾔﾏﾀﾞ ﾀﾛｳ", "ヤマタタロウ"),
        ("", ""),
    ],
)
def test_seion(kana, key):
    assert seion_kana(kana) == key


def test_seion_output_is_plain_katakana():
    every_kana = "".join(chr(c) for c in range(0x3041, 0x3097)) + "".join(chr(c) for c in range(0x30A1, 0x30FB))
    key = seion_kana(every_kana)
    for ch in key:
        assert unicodedata.name(ch).startswith("KATAKANA LETTER") and "SMALL" not in unicodedata.name(ch)
        assert unicodedata.decomposition(ch) == ""  # no voiced letter left


def test_seion_is_idempotent():
    for text in ("ガッコウ", "さゝき", "ジョーンズ", "ﾊﾟﾝ"):
        assert seion_kana(seion_kana(text)) == seion_kana(text)
