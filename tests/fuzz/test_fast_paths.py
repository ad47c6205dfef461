"""The intake hot path's shortcuts give exactly what the plain code they replace gives.

Each shortcut (C-speed fast paths in text normalisation, precomputed HMAC pads, the audit row hash
assembled from a pre-encoded tail) is compared with a reference written the plain way, on generated
input, so a shortcut can never change a stored hash, a refusal code or the audit chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from jukics.audit.chain import _chained_hash, _tail_json, row_hash
from jukics.domain import text
from jukics.domain.errors import DomainError
from jukics.store.keyed_hash import PrecomputedSearchHasher

# Text drawn from the characters that matter: ASCII, kana, kanji, every kind of space, controls,
# format characters, separators, surrogates, private use.
SPECIAL = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u200a\u200b\u2028\u2029\u202e\u2066\u3000\ufeff\ue000\udc80"
CHARS = st.one_of(
    st.sampled_from(SPECIAL),
    st.characters(codec="utf-8"),
    st.sampled_from("あいうがぱゃッヴーｶﾞ-・山田太郎１２３ABC"),
)
TEXTS = st.text(CHARS, max_size=30)
FIELDS = st.sampled_from(["name_kanji", "name_kana", "address", "previous_address", "former_surname_kana", None])

_SPACE_RUN = re.compile(r"[^\S\n\r\t\v\f\x1c-\x1f\x85\u2028\u2029]+")


def reference_check_chars(s: str, field: str | None) -> None:
    for ch in s:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Zl", "Zp"):
            raise DomainError("E_TEXT_CONTROL_CHAR", field)
        if category in ("Cs", "Co"):
            raise DomainError("E_TEXT_CHAR_NOT_ALLOWED", field)


def reference_collapse(s: str, field: str | None) -> str:
    def one(m: re.Match[str]) -> str:
        if field in text.NAME_FIELDS or "\u3000" in m[0]:
            return "\u3000"
        return " "

    return _SPACE_RUN.sub(one, s).strip(" \u3000")


def outcome(f, *args):
    try:
        return ("ok", f(*args))
    except DomainError as exc:
        return ("error", exc.code)


@settings(max_examples=3000, deadline=None, database=None)
@given(TEXTS, FIELDS)
def test_check_chars_fast_path_refuses_exactly_what_the_category_loop_refuses(s, field):
    assert outcome(text._check_chars, s, field) == outcome(reference_check_chars, s, field)


@settings(max_examples=3000, deadline=None, database=None)
@given(TEXTS, FIELDS)
def test_collapse_spaces_matches_the_regex_substitution(s, field):
    # _collapse_spaces runs on text whose controls were refused, as in normalize_text
    if outcome(reference_check_chars, s, field)[0] == "ok":
        assert text._collapse_spaces(s, field) == reference_collapse(s, field)


UTF8_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)  # what reaches a hash: no lone surrogates


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(min_size=32, max_size=100), UTF8_TEXT, UTF8_TEXT)
def test_precomputed_hmac_is_hmac_sha256(key, field, value):
    expected = hmac.digest(key, field.encode() + b"\x00" + value.encode(), "sha256")[:16]
    assert PrecomputedSearchHasher(key).digest(field, value) == expected


SCALARS = st.one_of(st.none(), st.integers(-(2**70), 2**70), UTF8_TEXT)


@settings(max_examples=1000, deadline=None, database=None)
@given(st.integers(1, 2**62), UTF8_TEXT, st.lists(SCALARS, min_size=9, max_size=9), st.binary(min_size=32, max_size=32))
def test_chained_hash_is_the_row_hash_of_the_same_row(seq, ts, tail, prev):
    columns = ("actor", "terminal", "action", "purpose", "query", "target_ids", "result_count", "outcome", "code")
    row = {"seq": seq, "ts": ts, **dict(zip(columns, tail, strict=True))}
    assert _chained_hash(prev, seq, ts, _tail_json(tail)) == row_hash(prev, row)
    body = json.dumps([seq, ts, *tail], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert row_hash(prev, row) == hashlib.sha256(prev + body.encode()).digest()


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.from_regex(r"\A[0-9]{11}\Z"), max_size=3))
def test_target_ids_json_is_the_canonical_list_of_hashes(codes):
    from jukics.audit.chain import AuditLog, _canonical

    log = AuditLog(None, PrecomputedSearchHasher(b"k" * 32))  # no engine needed to hash
    assert log.target_ids_json(codes) == _canonical([log.target_id(c) for c in codes])
