"""ISO and 和暦 dates: era boundaries, impossible dates, the future."""

from __future__ import annotations

import datetime as dt

import pytest

from jukics.domain.dates import MIN_DATE, parse_date, to_wareki
from jukics.domain.errors import DomainError

D = dt.date


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-04-01", D(2024, 4, 1)),
        ("２０２４－０４－０１", D(2024, 4, 1)),  # full-width, NFKC
        ("令和6年4月1日", D(2024, 4, 1)),
        ("令和06年04月01日", D(2024, 4, 1)),
        ("令和６年４月１日", D(2024, 4, 1)),
        ("R06.04.01", D(2024, 4, 1)),
        ("r6/4/1", D(2024, 4, 1)),
        ("令6.4.1", D(2024, 4, 1)),
        ("令和元年5月1日", D(2019, 5, 1)),
        ("令和1年5月1日", D(2019, 5, 1)),
        ("㋿元年5月1日", D(2019, 5, 1)),
        ("平成31年4月30日", D(2019, 4, 30)),
        ("㍻31年4月30日", D(2019, 4, 30)),
        ("平成元年1月8日", D(1989, 1, 8)),
        ("H01.01.08", D(1989, 1, 8)),
        ("昭和64年1月7日", D(1989, 1, 7)),
        ("昭和元年12月25日", D(1926, 12, 25)),
        ("大正15年12月24日", D(1926, 12, 24)),
        ("大正元年7月30日", D(1912, 7, 30)),
        ("明治45年7月29日", D(1912, 7, 29)),
        ("M45-07-29", D(1912, 7, 29)),
        ("明治6年1月1日", D(1873, 1, 1)),
        ("平成12年2月29日", D(2000, 2, 29)),
        ("  2024-02-29 ", D(2024, 2, 29)),
    ],
)
def test_accepted(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29",  # not a leap year
        "2100-02-29",  # century, not a leap year
        "2024-04-31",
        "2024-13-01",
        "2024-00-10",
        "2024-4-1",  # ISO means 4-2-2 digits
        "20240401",
        "2024/04/01",
        "平成31年5月1日",  # 令和 had begun
        "令和元年4月30日",  # still 平成
        "平成元年1月7日",  # still 昭和
        "昭和64年1月8日",  # already 平成
        "昭和元年12月24日",
        "大正15年12月25日",
        "大正元年7月29日",
        "明治45年7月30日",
        "明治5年12月31日",  # lunisolar calendar: not convertible
        "平成0年1月1日",
        "令和6年2月30日",
        "R06.04.31",
        "R06.04/01",  # mixed separators
        "X06.04.01",
        "令和六年四月一日",  # kanji numerals are not accepted
        "1872-12-31",  # before MIN_DATE
        "",
        "yesterday",
        "2024-04-01T00:00:00",
    ],
)
def test_refused(text):
    with pytest.raises(DomainError) as err:
        parse_date(text, field="birth_date")
    assert err.value.code == "E_DATE_INVALID"
    assert err.value.field == "birth_date"


def test_error_does_not_repeat_the_value_or_chain_it():
    with pytest.raises(DomainError) as err:
        parse_date("1999-02-30", field="birth_date")
    assert "1999" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_not_a_string():
    with pytest.raises(DomainError) as err:
        parse_date(20240401, field="changed_on")  # type: ignore[arg-type]
    assert err.value.code == "E_TYPE"


def test_future_relative_to_injected_today():
    today = D(2024, 4, 1)
    assert parse_date("2024-04-01", not_after=today) == today
    with pytest.raises(DomainError) as err:
        parse_date("令和6年4月2日", not_after=today, field="birth_date")
    assert err.value.code == "E_DATE_FUTURE"


def test_wareki_round_trip_over_every_era_boundary():
    for day in (MIN_DATE, D(1912, 7, 29), D(1912, 7, 30), D(1926, 12, 24), D(1926, 12, 25), D(1989, 1, 7),
                D(1989, 1, 8), D(2019, 4, 30), D(2019, 5, 1), D(2024, 2, 29)):
        assert parse_date(to_wareki(day)) == day
    assert to_wareki(D(2019, 5, 1)) == "令和元年5月1日"
