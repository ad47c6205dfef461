"""Normalisation of values before they are hashed for search (same rules at write and at search).

- every value: Unicode NFKC (full-width digits and Latin become ASCII, half-width katakana become
  full-width), then all whitespace removed (names are often written with a full-width space);
- identifiers (住民票コード, 個人番号, 郵便番号): hyphens dropped as well;
- kana names: 清音化 (the search key 清音化かな氏名, SPEC §3) by :func:`jukics.domain.text.seion_kana`,
  the same function validation uses (hiragana → katakana, ガ→カ, パ→ハ, ャ→ヤ, ッ→ツ, separators
  dropped, ...), so the stored key and the search key cannot drift apart;
- addresses: dash look-alikes unified to ``-``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from jukics.domain.text import seion_kana

_SPACES = re.compile(r"\s+")
_IDENTIFIERS: Final = frozenset({"juminhyo_code", "my_number", "previous_juminhyo_code", "postal_code"})
_KANA_NAMES: Final = frozenset({"name_kana", "name_kana_seion", "former_surname_kana"})


def seion(kana: str) -> str:
    """清音化: the search key of a kana name (:func:`jukics.domain.text.seion_kana`)."""
    return seion_kana(kana)


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
