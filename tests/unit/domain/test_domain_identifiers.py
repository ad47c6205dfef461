"""個人番号, 市町村コード and 住民票コード checks, against independent oracles written from the rules."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jukics.domain.identifiers import (
    DigitsOnlyJuminhyoCodeValidator,
    JuminhyoCodeValidator,
    ProvisionalCheckDigitJuminhyoCodeValidator,
    get_juminhyo_validator,
    is_valid_municipality_code,
    is_valid_my_number,
    municipality_check_digit,
    my_number_check_digit,
)

ASCII = "0123456789"


# --- oracles, written again from the texts, sharing no code with the module -----------------------


def oracle_my_number_ok(s: str) -> bool:
    """総務省令第85号 第5条, literally: Pn = n-th digit from the lowest of the 11-digit body,
    Qn = n+1 (1≤n≤6) or n−5 (7≤n≤11); check = 11 − (ΣPnQn mod 11), or 0 if the remainder ≤ 1."""
    if len(s) != 12 or any(c not in ASCII for c in s):
        return False
    total = 0
    for n in range(1, 12):
        p = ASCII.index(s[11 - n])
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    remainder = total % 11
    return ASCII.index(s[11]) == (0 if remainder <= 1 else 11 - remainder)


def oracle_municipality_ok(s: str) -> bool:
    if len(s) != 6 or any(c not in ASCII for c in s):
        return False
    total = sum(ASCII.index(c) * w for c, w in zip(s[:5], [6, 5, 4, 3, 2], strict=True))
    return ASCII.index(s[5]) == (11 - total % 11) % 10


def oracle_provisional_juminhyo_ok(s: str) -> bool:
    if len(s) != 11 or any(c not in ASCII for c in s):
        return False
    weights = [2, 3, 4, 5, 6, 7, 2, 3, 4, 5]
    total = sum(ASCII.index(c) * w for c, w in zip(s[9::-1], weights, strict=True))
    remainder = total % 11
    return ASCII.index(s[10]) == (0 if remainder <= 1 else 11 - remainder)


# --- 個人番号 -------------------------------------------------------------------------------------


def test_my_number_worked_example():
    # Body 12345678901, from the lowest digit: P1..P11 = 1,0,9,8,7,6,5,4,3,2,1; Q1..Q11 = 2,3,4,5,6,7,2,3,4,5,6.
    # Σ = 2+0+36+40+42+42+10+12+12+10+6 = 212; 212 mod 11 = 3; 11 − 3 = 8.
    assert my_number_check_digit("12345678901") == 8
    assert is_valid_my_number("123456789018")
    assert not is_valid_my_number("123456789017")


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("000000000000", "Σ = 0: remainder 0 → 0"),
        ("000000000060", "P1 = 6: Σ = 12, remainder 1 → 0"),
        ("000000000310", "P1 = 1, P2 = 3: Σ = 2 + 9 = 11, remainder 0 → 0"),
        ("000000000019", "P1 = 1: Σ = 2, remainder 2 → 9"),
        ("100000000005", "P11 = 1, Q11 = 6: Σ = 6 → 5"),
        ("000001000004", "P6 = 1, Q6 = 7: Σ = 7 → 4"),
        ("000010000009", "P7 = 1, Q7 = 2: Σ = 2 → 9"),
    ],
)
def test_my_number_vectors(number, why):
    assert oracle_my_number_ok(number), why
    assert is_valid_my_number(number), why
    assert my_number_check_digit(number[:11]) == int(number[11])


@pytest.mark.parametrize(
    "bad",
    ["12345678901", "1234567890180", "１２３４５６７８９０１８", "1234-5678-9018", "12345678901８",
     "123456789018\n", " 123456789018", "", "abcdefghijkl", "١٢٣٤٥٦٧٨٩٠١٨"],
)
def test_my_number_refuses_non_ascii_or_wrong_length(bad):
    assert not is_valid_my_number(bad)


def test_my_number_check_digit_rejects_bad_body():
    with pytest.raises(ValueError):
        my_number_check_digit("1234567890")
    with pytest.raises(ValueError):
        my_number_check_digit("１２３４５６７８９０１")


def test_every_single_digit_error_is_caught():
    # A weighted modulus-11 check detects every single-digit substitution.
    valid = "123456789018"
    for pos in range(12):
        for d in ASCII:
            changed = valid[:pos] + d + valid[pos + 1 :]
            assert is_valid_my_number(changed) == (changed == valid)


# --- 市町村コード ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("131016", "東京都千代田区"),
        ("011002", "北海道札幌市"),
        ("271004", "大阪府大阪市"),
        ("142140", "神奈川県伊勢原市 (remainder 1 → 0)"),
        ("011011", "札幌市中央区 (remainder 0 → 11 → 1)"),
        ("151009", "新潟県新潟市"),
        ("130001", "東京都 (prefecture code)"),
    ],
)
def test_public_municipality_codes(code, name):
    assert is_valid_municipality_code(code), name
    assert municipality_check_digit(code[:5]) == int(code[5])


@pytest.mark.parametrize("bad", ["131017", "13101", "1310160", "１３１０１６", "13101a", "", "271000"])
def test_bad_municipality_codes(bad):
    assert not is_valid_municipality_code(bad)


# --- 住民票コード ---------------------------------------------------------------------------------


def test_validators_by_name():
    assert get_juminhyo_validator("digits-only").name == "digits-only"
    provisional = get_juminhyo_validator("provisional-mod11")
    assert provisional.provisional is True
    assert isinstance(provisional, JuminhyoCodeValidator)
    with pytest.raises(ValueError, match="known: digits-only, provisional-mod11"):
        get_juminhyo_validator("official")


def test_provisional_validator_is_flagged_in_its_docs():
    doc = ProvisionalCheckDigitJuminhyoCodeValidator.__doc__ or ""
    assert "PROVISIONAL" in doc and "総務省告示第436号" in doc and "ASSUME" in doc


def test_digits_only_accepts_any_11_ascii_digits():
    v = DigitsOnlyJuminhyoCodeValidator()
    assert v.is_valid("00000000000") and v.is_valid("12345678901")
    for bad in ("1234567890", "123456789012", "１２３４５６７８９０１", "1234567890a", "12345-67890"):
        assert not v.is_valid(bad)


def test_provisional_complete_and_check():
    v = ProvisionalCheckDigitJuminhyoCodeValidator()
    code = v.complete("1234567890")
    # From the lowest body digit: 0,9,8,7,6,5,4,3,2,1 × 2,3,4,5,6,7,2,3,4,5 = 0+27+32+35+36+35+8+9+8+5 = 195;
    # 195 mod 11 = 8; 11 − 8 = 3.
    assert code == "12345678903"
    assert v.is_valid(code)
    assert not v.is_valid("12345678904")


@pytest.mark.parametrize("validator", [DigitsOnlyJuminhyoCodeValidator(), ProvisionalCheckDigitJuminhyoCodeValidator()])
def test_completed_codes_are_valid_under_both(validator):
    other = ProvisionalCheckDigitJuminhyoCodeValidator()
    for body in ("0000000000", "9999999999", "0123456789", "5555555555"):
        code = validator.complete(body)
        assert validator.is_valid(code) and other.is_valid(code)


# --- property: never accept an invalid identifier, always accept a valid one ---------------------

_ODD_CHARS = "０１２３４５６７８９١٢٣ -a\n"
_ALL_CHARS = ASCII + _ODD_CHARS


def _valid_my_number(body: str) -> str:
    return next(body + d for d in ASCII if oracle_my_number_ok(body + d))


def _valid_municipality(body: str) -> str:
    return next(body + d for d in ASCII if oracle_municipality_ok(body + d))


def _valid_juminhyo(body: str) -> str:
    return next(body + d for d in ASCII if oracle_provisional_juminhyo_ok(body + d))


_KINDS = ("my_number", "municipality", "juminhyo_provisional", "juminhyo_digits")
_VALID_OF = {
    "my_number": (11, _valid_my_number),
    "municipality": (5, _valid_municipality),
    "juminhyo_provisional": (10, _valid_juminhyo),
    "juminhyo_digits": (10, _valid_juminhyo),
}


@st.composite
def identifier_cases(draw) -> tuple[str, str]:
    """A valid identifier, or a near miss of one (one digit changed, two swapped, one dropped or
    added, a full-width or other odd character), or an arbitrary short string."""
    kind = draw(st.sampled_from(_KINDS))
    size, make_valid = _VALID_OF[kind]
    operation = draw(st.integers(0, 6))
    if operation == 6:
        return kind, draw(st.text(alphabet=_ALL_CHARS, max_size=14))
    valid = make_valid(f"{draw(st.integers(0, 10**size - 1)):0{size}d}")
    i = draw(st.integers(0, len(valid) - 2))
    char = draw(st.sampled_from(ASCII if operation in (1, 4) else _ODD_CHARS))
    candidate = [
        valid,
        valid[:i] + char + valid[i + 1 :],
        valid[:i] + valid[i + 1] + valid[i] + valid[i + 2 :],
        valid[:i] + valid[i + 1 :],
        valid[:i] + char + valid[i:],
        valid[:i] + char + valid[i + 1 :],
    ][operation]
    return kind, candidate


_ORACLE = {
    "my_number": oracle_my_number_ok,
    "municipality": oracle_municipality_ok,
    "juminhyo_provisional": oracle_provisional_juminhyo_ok,
    "juminhyo_digits": lambda s: len(s) == 11 and all(c in ASCII for c in s),
}
_CHECK = {
    "my_number": is_valid_my_number,
    "municipality": is_valid_municipality_code,
    "juminhyo_provisional": ProvisionalCheckDigitJuminhyoCodeValidator().is_valid,
    "juminhyo_digits": DigitsOnlyJuminhyoCodeValidator().is_valid,
}


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identifier_cases())
def test_identifiers_match_oracle(case):
    kind, candidate = case
    assert _CHECK[kind](candidate) == _ORACLE[kind](candidate), (kind, candidate)
