"""Local-time arithmetic for waits and date triggers, in each contact's own time zone.

Every function takes `now_ms` and returns UTC epoch milliseconds; none reads the clock. Times
are computed with `zoneinfo`, so a wait "until Monday 09:00" lands on 09:00 local time on both
sides of a DST change. A local time that does not exist (the hour skipped in spring) moves
forward by the gap; an ambiguous one (the hour repeated in autumn) to its first
occurrence. Results are never earlier than `now_ms`.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_MS = 86_400_000
_UTC = dt.UTC


@lru_cache(maxsize=512)
def zone(name: str | None) -> dt.tzinfo:
    """The zone called `name`; UTC when it is missing or unknown."""
    if not name:
        return _UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return _UTC


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def local_instant(day: dt.date, at: tuple[int, int], tz: dt.tzinfo) -> int:
    """UTC ms of local time `at` on `day` in `tz`.

    `fold=0` gives the first occurrence of a repeated (autumn) hour, and moves a time inside
    a skipped (spring) hour forward by the length of the gap: 02:30 becomes 03:30.
    """
    return _ms(dt.datetime(day.year, day.month, day.day, at[0], at[1], tzinfo=tz, fold=0))


def next_local_time(now_ms: int, at: tuple[int, int], weekdays: tuple[int, ...],
                    tz_name: str | None) -> int:
    """The first local `at` (on one of `weekdays`, 0 = Monday; any day when empty) after
    `now_ms`."""
    tz = zone(tz_name)
    today = dt.datetime.fromtimestamp(now_ms / 1000, tz).date()
    for offset in range(0, 8):
        day = today + dt.timedelta(days=offset)
        if weekdays and day.weekday() not in weekdays:
            continue
        instant = local_instant(day, at, tz)
        # Strictly after now: a loop back into the wait at its own due time waits for the
        # next occurrence instead of firing again at once.
        if instant > now_ms:
            return instant
    raise AssertionError("a week always contains the weekday")


def parse_date(value: object) -> dt.date | None:
    """The calendar date of an attribute value (ISO date or datetime); None if it is not one."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def date_attribute_instant(value: object, offset_ms: int, at: tuple[int, int],
                           tz_name: str | None) -> int | None:
    """When "`offset_ms` from the date in `value`, at local `at`" falls; None for no date.

    Whole days of the offset move the calendar date (so "3 days before, at 09:00" is 09:00
    local even across a DST change); any remainder shifts the instant.
    """
    day = parse_date(value)
    if day is None:
        return None
    days, rest = divmod(offset_ms, DAY_MS) if offset_ms >= 0 else (
        -((-offset_ms) // DAY_MS), -((-offset_ms) % DAY_MS))
    try:
        target = day + dt.timedelta(days=days)
    except OverflowError:
        return None
    return local_instant(target, at, zone(tz_name)) + rest
