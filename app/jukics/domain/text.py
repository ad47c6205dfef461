"""Text fields: normalisation, refusal of invisible characters, length limits, 清音化かな.

``normalize_text`` is applied to every free-text field at intake:

1. Unicode NFC (canonical composition only: full-width Latin and half-width katakana are kept as
   sent in 漢字 fields and addresses; かな fields additionally go through NFKC, see ``normalize_kana``).
2. Refusal, not removal, of characters that make two spellings look alike or hide text:
   C0/C1 controls and DEL (category Cc, so TAB and newlines too), format characters (Cf: bidi
   overrides and isolates U+202A-202E and U+2066-2069, LRM/RLM, zero-width space and joiners, BOM),
   line and paragraph separators (Zl, Zp) → ``E_TEXT_CONTROL_CHAR``; surrogates (Cs) and private-use
   characters (Co, where 外字 live) → ``E_TEXT_CHAR_NOT_ALLOWED``. Ideographic variation sequences
   (U+E0100-E01EF, category Mn) are allowed: they are how standard Unicode writes 異体字 in names.
3. Whitespace: leading and trailing space removed, every run of spaces collapsed to one. Names use
   the ideographic space U+3000 (全角スペース) between 氏 and 名, so in name fields every run becomes
   U+3000; elsewhere a run becomes U+3000 if it contains one, else U+0020.
4. Length in code points after normalisation, per field (``MAX_LENGTHS``) → ``E_TEXT_TOO_LONG``.

``seion_kana`` builds the search key 清音化かな氏名 (seed 002 §3.1 field 5, 「清音化かな氏名」).
The table is written here by hand rather than taken from a library: jaconv (the usual choice) is not
in the venv or in Debian, and the mapping needs only ~30 pairs on top of ``unicodedata``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from jukics.domain.errors import DomainError

#: Maximum length in code points after normalisation. Assumed limits (the 告示 field lengths are
#: not in the seeds), generous enough for long foreign-resident names written in katakana.
MAX_LENGTHS: Final[dict[str, int]] = {
    "name_kanji": 100,
    "name_kana": 200,
    "former_surname": 50,
    "former_surname_kana": 100,
    "address": 250,
    "previous_address": 250,
}
DEFAULT_MAX_LENGTH: Final = 250

NAME_FIELDS: Final = frozenset({"name_kanji", "name_kana", "former_surname", "former_surname_kana"})
KANA_FIELDS: Final = frozenset({"name_kana", "former_surname_kana"})

_IDEOGRAPHIC_SPACE: Final = "\u3000"
_SPACE_RUN = re.compile(r"[^\S\n\r\t\v\f\x1c-\x1f\x85\u2028\u2029]+")  # spaces only; controls refused earlier
_REFUSED_CONTROL: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
_REFUSED_CHAR: Final = frozenset({"Cs", "Co"})


def _check_chars(text: str, field: str | None) -> None:
    # Fast path (C speed): str.isprintable() is False for every character of the categories Cc, Cf,
    # Cs, Co, Zl and Zp (and for Cn and the separators Zs other than U+0020); the ideographic space
    # U+3000 (Zs) of names is the one separator text usually holds. True means nothing to refuse.
    if text.replace(_IDEOGRAPHIC_SPACE, " ").isprintable():
        return
    for ch in text:
        category = unicodedata.category(ch)
        if category in _REFUSED_CONTROL:
            raise DomainError("E_TEXT_CONTROL_CHAR", field)
        if category in _REFUSED_CHAR:
            raise DomainError("E_TEXT_CHAR_NOT_ALLOWED", field)


def _collapse_spaces(text: str, field: str | None) -> str:
    # str.split() splits on the same whitespace as the regex's \s (controls were refused earlier) and
    # drops leading and trailing runs, which is what the substitution plus strip gives when there is
    # no inner run (one part) or when every run becomes U+3000 (name fields).
    parts = text.split()
    if len(parts) <= 1:
        return parts[0] if parts else ""
    if field in NAME_FIELDS:
        return _IDEOGRAPHIC_SPACE.join(parts)

    def one(m: re.Match[str]) -> str:
        if field in NAME_FIELDS or _IDEOGRAPHIC_SPACE in m[0]:
            return _IDEOGRAPHIC_SPACE
        return " "

    return _SPACE_RUN.sub(one, text).strip(" \u3000")


def normalize_text(s: str, field: str | None = None, max_len: int | None = None) -> str:
    """The normalised form of free text ``s`` for ``field`` (see the module doc).

    ``max_len`` overrides the per-field limit of ``MAX_LENGTHS``. Returns "" for blank input;
    deciding whether blank is allowed is the caller's job. Raises ``DomainError`` with
    ``E_TYPE``, ``E_TEXT_CONTROL_CHAR``, ``E_TEXT_CHAR_NOT_ALLOWED`` or ``E_TEXT_TOO_LONG``.
    """
    if not isinstance(s, str):
        raise DomainError("E_TYPE", field)
    _check_chars(s, field)  # before NFC: NFC never removes these, but check the raw input anyway
    text = _collapse_spaces(unicodedata.normalize("NFC", s), field)
    limit = max_len if max_len is not None else MAX_LENGTHS.get(field or "", DEFAULT_MAX_LENGTH)
    if len(text) > limit:
        raise DomainError("E_TEXT_TOO_LONG", field, f"at most {limit} characters")
    return text


# --- かな -----------------------------------------------------------------------------------

_HIRAGANA_TO_KATAKANA: Final = {c: c + 0x60 for c in range(0x3041, 0x3097)} | {0x309D: 0x30FD, 0x309E: 0x30FE}

# Small kana made large: katakana (after hiragana was mapped) and the small-katakana extension
# block U+31F0-31FF (used for Ainu).
_SMALL_TO_LARGE: Final = str.maketrans(
    "ァィゥェォッャュョヮヵヶ" "ㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ",
    "アイウエオツヤユヨワカケ" "クシストヌハヒフヘホムラリルレロ",
)
# Voicing marks on their own (not combining): drop before NFKC, which would turn U+309B into
# "space + combining mark" and leave a space behind.
_SPACING_MARKS: Final = str.maketrans("", "", "\u309b\u309c\uff9e\uff9f")
_COMBINING_MARKS: Final = str.maketrans("", "", "\u3099\u309a")
# Dash look-alikes written for the long vowel in kana: hyphen-minus, hyphen, dashes, minus,
# full-width hyphen-minus, box-drawing line. All become ー (U+30FC).
_DASHES: Final = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\uff0d\u2500"
_DASHES_TO_CHOONPU: Final = str.maketrans(dict.fromkeys(_DASHES, "ー"))
# Separators dropped from the search key: spaces and the middle dot of foreign names.
_KEY_SEPARATORS: Final = str.maketrans("", "", " \u3000・")

_KANA_ALLOWED = re.compile(
    r"[\u3041-\u3096\u309d\u309e\u30a1-\u30fa\u30fc-\u30fe\u31f0-\u31ff\u3099\u309a・ \u3000]+"
)


def normalize_kana(s: str, field: str | None = "name_kana", max_len: int | None = None) -> str:
    """A かな field: ``normalize_text``, then NFKC (half-width ｶﾅ → full-width カナ), dash look-alikes
    → ー, and a check that only kana, ー, ・ and spaces remain (``E_KANA_INVALID``).

    Hiragana and katakana are both accepted and kept as sent; only the search key unifies them.
    """
    text = normalize_text(s, field, max_len)
    text = unicodedata.normalize("NFKC", text).translate(_DASHES_TO_CHOONPU)
    # NFKC turns U+3000 into U+0020; names keep the ideographic space.
    text = _collapse_spaces(text.replace(" ", _IDEOGRAPHIC_SPACE), field)
    if text and not _KANA_ALLOWED.fullmatch(text):
        raise DomainError("E_KANA_INVALID", field)
    return text


def seion_kana(s: str) -> str:
    """清音化かな: the search key form of a kana name.

    - half-width katakana accepted (NFKC), hiragana → katakana;
    - 濁点/半濁点 removed: ガ→カ, パ→ハ, ヴ→ウ, ヷ→ワ (NFD, then the combining marks U+3099/U+309A
      dropped), and the spacing marks ゛゜ﾞﾟ dropped as well;
    - small kana made large: ァ→ア, ッ→ツ, ャ→ヤ, ヮ→ワ, ヵ→カ, ヶ→ケ, ㇰ→ク, …;
    - the long vowel mark ー is kept as ー (not expanded into a vowel: that depends on the preceding
      kana and the 住基ネット rule is not public); dash look-alikes (-, ‐, －, ―, −) become ー;
    - iteration marks ヽヾ (and ゝゞ) are replaced by the kana before them, so ササキ, サヽキ and
      さゝき give the same key;
    - spaces and ・ are removed, so the key does not depend on how 氏 and 名 were separated.

    Characters that are not kana pass through NFKC unchanged otherwise; callers validate kana first.
    """
    text = unicodedata.normalize("NFKC", s.translate(_SPACING_MARKS)).translate(_HIRAGANA_TO_KATAKANA)
    text = unicodedata.normalize("NFD", text).translate(_COMBINING_MARKS)
    text = unicodedata.normalize("NFC", text).translate(_SMALL_TO_LARGE).translate(_DASHES_TO_CHOONPU)
    text = text.translate(_KEY_SEPARATORS)
    if "ヽ" in text:
        out: list[str] = []
        for ch in text:
            out.append(out[-1] if ch == "ヽ" and out else ch)
        text = "".join(out)
    return text
