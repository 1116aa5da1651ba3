"""Injected time: nothing in domain code reads the wall clock directly."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """Source of the current time in UTC epoch milliseconds."""

    def now_ms(self) -> int:
        """Current time, UTC epoch milliseconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """Current wall time, UTC epoch milliseconds."""
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock that moves only when told to (tests and simulations)."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        """The fake current time."""
        return self._now

    def advance(self, ms: int) -> None:
        """Move the clock forward by `ms` milliseconds."""
        self._now += ms

    def set(self, ms: int) -> None:
        """Jump to `ms`."""
        self._now = ms


def iso_to_ms(text: str) -> int | None:
    """UTC epoch milliseconds of an ISO 8601 time (no zone means UTC); None if it is not one."""
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)
