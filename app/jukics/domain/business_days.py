"""Business days (開庁日) for deadlines such as "送付先情報 deleted one business day after sending".

Closed: Saturdays, Sundays, Japanese public holidays (国民の祝日, 振替休日, 国民の休日) from the
maintained ``holidays`` package (its ``Japan`` calendar follows the 祝日法 and is updated when the law
changes), and the days the configuration adds (``[calendar] extra_closed_days``: e.g. the year-end
closure 12/29-1/3, which is a municipal custom, not a national holiday).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import holidays


class BusinessCalendar:
    def __init__(self, extra_closed_days: Iterable[dt.date] = ()) -> None:
        self.extra = frozenset(extra_closed_days)
        self._holidays = holidays.country_holidays("JP")

    def is_business_day(self, day: dt.date) -> bool:
        return day.weekday() < 5 and day not in self._holidays and day not in self.extra

    def add_business_days(self, day: dt.date, n: int) -> dt.date:
        """The ``n``-th business day after ``day`` (``day`` itself never counts)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        while n:
            day += dt.timedelta(days=1)
            if self.is_business_day(day):
                n -= 1
        return day

    def holiday_name(self, day: dt.date) -> str | None:
        return self._holidays.get(day)
