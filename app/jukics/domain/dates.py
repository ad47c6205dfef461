"""Dates from intake: ISO ``YYYY-MM-DD`` or 和暦, never an impossible date.

Accepted spellings (after NFKC, so full-width digits and the ligatures ㍻ and ㋿ work):

- ISO: ``2024-04-01`` (exactly 4-2-2 digits);
- 和暦 in kanji: ``令和6年4月1日``, ``令和元年5月1日``, ``平成31年4月30日``, zero padding allowed;
- 和暦 abbreviated: an era letter (M T S H R, either case) or the era's first kanji (明 大 昭 平 令),
  then year, month and day separated by ``.``, ``/`` or ``-``: ``R06.04.01``, ``H31/4/30``.

A 和暦 date must lie inside its era: 平成31年5月1日 and 令和元年4月30日 are refused, as is 平成0年.
明治 is accepted from 明治6年1月1日 (1873-01-01) only: before that Japan used the lunisolar calendar,
so an earlier 明治 date cannot be converted by arithmetic. The same floor (``MIN_DATE``) applies to
ISO dates; nobody alive or recently deleted was born before it.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from jukics.domain.errors import DomainError

MIN_DATE: Final = dt.date(1873, 1, 1)


@dataclass(frozen=True)
class Era:
    name: str
    letter: str
    first_year: int  # Gregorian year of 元年
    start: dt.date  # first day accepted
    end: dt.date | None  # last day, None for the current era


# The day an era begins is the first day of its 元年 (改元 on the day of accession since 大正).
ERAS: Final[tuple[Era, ...]] = (
    Era("明治", "M", 1868, MIN_DATE, dt.date(1912, 7, 29)),
    Era("大正", "T", 1912, dt.date(1912, 7, 30), dt.date(1926, 12, 24)),
    Era("昭和", "S", 1926, dt.date(1926, 12, 25), dt.date(1989, 1, 7)),
    Era("平成", "H", 1989, dt.date(1989, 1, 8), dt.date(2019, 4, 30)),
    Era("令和", "R", 2019, dt.date(2019, 5, 1), None),
)
_BY_KEY: Final[dict[str, Era]] = {}
for _era in ERAS:
    _BY_KEY[_era.name] = _era
    _BY_KEY[_era.name[0]] = _era
    _BY_KEY[_era.letter] = _era

_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_KANJI = re.compile(r"(明治|大正|昭和|平成|令和)(元|[0-9]{1,2})年([0-9]{1,2})月([0-9]{1,2})日")
_SHORT = re.compile(r"([MTSHRmtshr明大昭平令])(元|[0-9]{1,2})([./-])([0-9]{1,2})\3([0-9]{1,2})")


def _invalid(field: str | None) -> DomainError:
    return DomainError("E_DATE_INVALID", field)


def _make(year: int, month: int, day: int, field: str | None) -> dt.date:
    try:
        return dt.date(year, month, day)
    except ValueError:
        # ``from None``: the ValueError's text would repeat the input.
        raise _invalid(field) from None


def _from_era(era: Era, year_text: str, month: int, day: int, field: str | None) -> dt.date:
    year = 1 if year_text == "元" else int(year_text)
    if year < 1:
        raise _invalid(field)
    date = _make(era.first_year + year - 1, month, day, field)
    if date < era.start or (era.end is not None and date > era.end):
        raise _invalid(field)
    return date


def parse_date(value: str, *, field: str | None = None, not_after: dt.date | None = None) -> dt.date:
    """Parse an intake date (ISO or 和暦, see the module doc).

    Raises ``DomainError``: ``E_TYPE`` for a non-string, ``E_DATE_INVALID`` for an unknown spelling,
    an impossible date (2023-02-29), a 和暦 date outside its era or a date before ``MIN_DATE``, and
    ``E_DATE_FUTURE`` when ``not_after`` is given and the date is later (pass the injected ``today``
    for 生年月日).
    """
    if not isinstance(value, str):
        raise DomainError("E_TYPE", field)
    # An ASCII ISO date (the usual case) is its own NFKC form and has nothing to strip.
    m = _ISO.fullmatch(value)
    text = value if m else unicodedata.normalize("NFKC", value).strip()
    if m or (m := _ISO.fullmatch(text)):
        date = _make(int(m[1]), int(m[2]), int(m[3]), field)
    elif m := _KANJI.fullmatch(text):
        date = _from_era(_BY_KEY[m[1]], m[2], int(m[3]), int(m[4]), field)
    elif m := _SHORT.fullmatch(text):
        date = _from_era(_BY_KEY[m[1].upper()], m[2], int(m[4]), int(m[5]), field)
    else:
        raise _invalid(field)
    if date < MIN_DATE:
        raise _invalid(field)
    if not_after is not None and date > not_after:
        raise DomainError("E_DATE_FUTURE", field)
    return date


def era_of(date: dt.date) -> tuple[Era, int]:
    """The era and era year of ``date`` (for display, e.g. 令和6年). ``ValueError`` before MIN_DATE."""
    for era in reversed(ERAS):
        if date >= era.start:
            return era, date.year - era.first_year + 1
    raise ValueError("date before 1873-01-01")


def to_wareki(date: dt.date) -> str:
    """``date`` as 和暦 in kanji, e.g. ``令和元年5月1日``."""
    era, year = era_of(date)
    return f"{era.name}{'元' if year == 1 else year}年{date.month}月{date.day}日"
