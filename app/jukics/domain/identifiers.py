"""Identifier checks: 個人番号, 住民票コード, 市町村コード (全国地方公共団体コード).

All checks take ``str`` and accept ASCII digits only: full-width or other Unicode digits
(``str.isdigit`` would accept "１２３" and "١٢٣") are refused, so a stored identifier has one spelling.
"""

from __future__ import annotations

import re
from operator import mul
from typing import Final, Protocol, runtime_checkable

_DIGITS = {n: re.compile(rf"[0-9]{{{n}}}") for n in (5, 6, 10, 11, 12)}


def is_digits(value: object, length: int) -> bool:
    """True when ``value`` is a str of exactly ``length`` ASCII digits."""
    pattern = _DIGITS.get(length) or re.compile(rf"[0-9]{{{length}}}")
    return isinstance(value, str) and pattern.fullmatch(value) is not None


# --- 個人番号 -------------------------------------------------------------------------------
# 行政手続における特定の個人を識別するための番号の利用等に関する法律施行規則 (平成26年総務省令第85号)
# 第5条: 検査用数字 = 11 − (Σ Pn × Qn を 11 で除した余り); the remainder ≤ 1 gives 0.
# Pn is the n-th digit counted from the lowest digit of the 11-digit body (n = 1 is the digit just
# before the check digit); Qn = n + 1 for 1 ≤ n ≤ 6 and n − 5 for 7 ≤ n ≤ 11.
_MY_NUMBER_WEIGHTS: Final = tuple(n + 1 if n <= 6 else n - 5 for n in range(1, 12))  # Q1..Q11


def my_number_check_digit(first11: str) -> int:
    """The 個人番号 check digit for the 11-digit body ``first11`` (総務省令第85号 第5条).

    Raises ``ValueError`` when ``first11`` is not 11 ASCII digits.
    """
    if not is_digits(first11, 11):
        raise ValueError("the 個人番号 body must be 11 ASCII digits")
    total = sum(map(mul, map(int, reversed(first11)), _MY_NUMBER_WEIGHTS))  # Σ Pn × Qn
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def is_valid_my_number(s: str) -> bool:
    """True when ``s`` is 12 ASCII digits whose last digit is the 第5条 check digit."""
    return is_digits(s, 12) and my_number_check_digit(s[:11]) == int(s[11])


# --- 市町村コード ---------------------------------------------------------------------------
# 全国地方公共団体コード: 5 digits + a check digit. Weights 6,5,4,3,2 over the 5 digits; the check digit
# is the last digit of 11 − (sum mod 11) (so remainder 0 gives 1 and remainder 1 gives 0).


def municipality_check_digit(first5: str) -> int:
    """The check digit of the 5-digit 団体コード ``first5``. Raises ``ValueError`` on bad input."""
    if not is_digits(first5, 5):
        raise ValueError("the 団体コード body must be 5 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first5, (6, 5, 4, 3, 2), strict=True))
    return (11 - total % 11) % 10


def is_valid_municipality_code(s: str) -> bool:
    """True when ``s`` is a 6-digit 全国地方公共団体コード with a correct check digit.

    Prefecture codes (for example 130001) pass the same check; callers that need a municipality
    rather than a prefecture should also require ``s[2:5] != "000"``.
    """
    return is_digits(s, 6) and municipality_check_digit(s[:5]) == int(s[5])


# --- 住民票コード ---------------------------------------------------------------------------
# 住民基本台帳法施行規則第1条: 11 digits, 10 random digits plus one check digit computed by the
# formula of 平成14年総務省告示第436号. That 告示 could not be retrieved, so the check is pluggable:
# configuration (validation.juminhyo_validator) chooses a validator by name.


@runtime_checkable
class JuminhyoCodeValidator(Protocol):
    """A 住民票コード check. ``is_valid`` decides; ``complete`` makes a valid code from 10 digits."""

    name: str
    #: True when the check digit rule is assumed, not the official one.
    provisional: bool

    def is_valid(self, code: str) -> bool:
        """True when ``code`` (already known to be 11 ASCII digits) passes this validator."""
        ...

    def complete(self, body10: str) -> str:
        """An 11-digit code valid under this validator, made from the 10 digits ``body10``."""
        ...


# Assumed weights for the provisional rule: the common modulus-11 pattern 2..7 repeated, from the
# lowest digit of the 10-digit body. NOT the formula of 総務省告示第436号 (not retrievable).
_PROVISIONAL_WEIGHTS: Final = (2, 3, 4, 5, 6, 7, 2, 3, 4, 5)


def provisional_juminhyo_check_digit(body10: str) -> int:
    """The check digit of ``ProvisionalCheckDigitJuminhyoCodeValidator`` (ASSUMED formula)."""
    if not is_digits(body10, 10):
        raise ValueError("the 住民票コード body must be 10 ASCII digits")
    total = sum(map(mul, map(int, reversed(body10)), _PROVISIONAL_WEIGHTS))
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


class DigitsOnlyJuminhyoCodeValidator:
    """Accepts any 11 ASCII digits: the format of 施行規則第1条, without a check digit test.

    The default, because the official check-digit formula (総務省告示第436号) is not known to us and
    a wrong formula would refuse real residents. ``complete`` still appends the provisional check
    digit, so synthetic codes stay valid if the configuration switches to the provisional validator.
    """

    name = "digits-only"
    provisional = False

    def is_valid(self, code: str) -> bool:
        return is_digits(code, 11)

    def complete(self, body10: str) -> str:
        return body10 + str(provisional_juminhyo_check_digit(body10))


class ProvisionalCheckDigitJuminhyoCodeValidator:
    """PROVISIONAL: 10 digits + a modulus-11 check digit whose formula we ASSUME.

    The formula of 総務省告示第436号 (2002) was not retrievable; this validator uses weights
    2,3,4,5,6,7,2,3,4,5 from the lowest body digit, 11 − (sum mod 11), remainder ≤ 1 → 0.
    It is pluggable: replace it (one class, registered in ``JUMINHYO_VALIDATORS``) when the real
    formula is known. Useful for the lab and synthetic data, where it catches typos in codes; do
    not enable it against real data before the formula is confirmed.
    """

    name = "provisional-mod11"
    provisional = True

    def is_valid(self, code: str) -> bool:
        return is_digits(code, 11) and provisional_juminhyo_check_digit(code[:10]) == int(code[10])

    def complete(self, body10: str) -> str:
        return body10 + str(provisional_juminhyo_check_digit(body10))


#: name (the value of config ``validation.juminhyo_validator``) -> validator factory.
JUMINHYO_VALIDATORS: Final[dict[str, type[DigitsOnlyJuminhyoCodeValidator] |
                               type[ProvisionalCheckDigitJuminhyoCodeValidator]]] = {
    DigitsOnlyJuminhyoCodeValidator.name: DigitsOnlyJuminhyoCodeValidator,
    ProvisionalCheckDigitJuminhyoCodeValidator.name: ProvisionalCheckDigitJuminhyoCodeValidator,
}


def get_juminhyo_validator(name: str) -> JuminhyoCodeValidator:
    """The validator configured by ``name`` ('digits-only' or 'provisional-mod11').

    Raises ``ValueError`` listing the known names when ``name`` is unknown.
    """
    try:
        return JUMINHYO_VALIDATORS[name]()
    except KeyError:
        raise ValueError(
            f"unknown 住民票コード validator {name!r} (known: {', '.join(sorted(JUMINHYO_VALIDATORS))})"
        ) from None
