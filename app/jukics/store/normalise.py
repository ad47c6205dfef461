"""Normalisation of values before they are hashed for search (same rules at write and at search).

- every value: Unicode NFKC (full-width digits and Latin become ASCII, half-width katakana become
  full-width), then all whitespace removed (names are often written with a full-width space);
- identifiers (住民票コード, 個人番号, 郵便番号): hyphens dropped as well;
- kana names: 清音化 (the search key 清音化かな氏名, SPEC §3): hiragana → katakana, voiced and
  semi-voiced marks removed (ガ→カ, パ→ハ, ヴ→ウ), small kana made large (ャ→ヤ, ッ→ツ);
- addresses: dash look-alikes unified to ``-``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_SPACES = re.compile(r"\s+")
_SMALL_KANA: Final = str.maketrans("ァィゥェォッャュョヮヵヶ", "アイウエオツヤユヨワカケ")
_IDENTIFIERS: Final = frozenset({"juminhyo_code", "my_number", "previous_juminhyo_code", "postal_code"})
_KANA_NAMES: Final = frozenset({"name_kana", "name_kana_seion", "former_surname_kana"})


def _to_katakana(text: str) -> str:
    return "".join(chr(ord(c) + 0x60) if "\u3041" <= c <= "\u3096" else c for c in text)


def seion(kana: str) -> str:
    """清音化: katakana without 濁点/半濁点, small kana made large."""
    decomposed = unicodedata.normalize("NFD", _to_katakana(unicodedata.normalize("NFKC", kana)))
    plain = "".join(c for c in decomposed if c not in "\u3099\u309a")
    return _SPACES.sub("", unicodedata.normalize("NFC", plain).translate(_SMALL_KANA))


def normalise(field: str, value: object) -> str:
    """The normalised text of ``value`` for the search hash of ``field``."""
    text = _SPACES.sub("", unicodedata.normalize("NFKC", str(value)))
    if field in _IDENTIFIERS:
        return text.replace("-", "")
    if field in _KANA_NAMES:
        return seion(text)
    if field in ("address", "previous_address"):
        # ー is a dash between digits (1ー2ー3) but a long vowel in katakana words; only the former.
        return re.sub(r"(?<=\d)[\u2010-\u2015\u2212\u30fc\uff70\u2500\u2501](?=\d)", "-", text)
    return text
