"""Time for the store: an injectable clock and one text format for stored timestamps.

Timestamps are stored as fixed-width UTC text ``YYYY-MM-DDTHH:MM:SS.ffffffZ``: identical on SQLite and
PostgreSQL, sortable as text (so range queries and the retention cutoff are plain comparisons), and
stable inside the audit hash chain.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

Clock = Callable[[], datetime]

#: Japan Standard Time. Japan has no daylight saving, so a fixed offset is exact (no tzdata needed).
JST = timezone(timedelta(hours=9), "JST")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """The stored form of an aware datetime; naive datetimes are refused (their zone is a guess)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: the clock must return timezone-aware datetimes")
    u = moment.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}."
        f"{u.microsecond:06d}Z"
    )


def parse_iso_utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
