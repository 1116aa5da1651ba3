"""The simulation's output: timed event records, consent decisions and suppressions.

A record is a small tuple, not a Segment message: the generator keeps hundreds of thousands of
them and sorts them by time, and builds each message only when its batch is ingested.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from cadenza.contacts import ConsentStatus, SuppressionReason
from cadenza.demo.population import DAY, HOUR, MINUTE, LocalCalendar, Person

# Which ids a message carries.
ANON = 0
"""the web anonymous id only"""
USER_ANON = 1
"""user id and web anonymous id (browser after login)"""
USER = 2
"""user id only (server-side)"""
MOBILE = 3
"""the mobile app's anonymous id only (before login on the device)"""
USER_MOBILE = 4
"""user id and the mobile anonymous id"""

Record = tuple[int, int, str, int, str, dict[str, Any]]
"""(timestamp ms, sequence, source, person index, message type, details)"""


@dataclass(frozen=True)
class PlannedConsent:
    """A consent decision, recorded once the person's contact id is known."""

    at: int
    person: int
    channel: str
    purpose: str
    status: ConsentStatus
    source: str
    text_version: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class PlannedSuppression:
    """An address that goes on the suppression list."""

    at: int
    kind: str
    address: str
    reason: SuppressionReason
    note: str


class World:
    """Collects what happens inside the window [start, end]."""

    def __init__(self, rng: random.Random, calendar: LocalCalendar) -> None:
        self.rng = rng
        self.calendar = calendar
        self.start = calendar.start_ms
        self.end = calendar.end_ms
        self.records: list[Record] = []
        self.consents: list[PlannedConsent] = []
        self.suppressions: list[PlannedSuppression] = []

    def add(self, ts: int, source: str, person: Person, kind: str,
            details: dict[str, Any]) -> bool:
        """Record a message at `ts`; False (and nothing recorded) outside the window."""
        if ts < self.start or ts > self.end:
            return False
        self.records.append((ts, len(self.records), source, person.index, kind, details))
        return True

    def track(self, ts: int, person: Person, event: str, properties: dict[str, Any],
              ids: int = USER, source: str = "app") -> bool:
        """Record a `track` call."""
        return self.add(ts, source, person, "track",
                        {"event": event, "properties": properties, "ids": ids})

    def consent(self, change: PlannedConsent) -> None:
        """Plan a consent decision (dropped when outside the window)."""
        if self.start <= change.at <= self.end:
            self.consents.append(change)

    def daytime(self, person: Person, ts: int, hours: tuple[float, ...],
                weekend_keep: float) -> int:
        """Move `ts` to a believable local time on its day (or a nearby weekday)."""
        midnights, weekdays = self.calendar.days(person.timezone)
        day, _ = self.calendar.locate(person.timezone, ts)
        if weekdays[day] >= 5 and self.rng.random() > weekend_keep:
            day = min(len(midnights) - 1, day + 7 - weekdays[day])
        return midnights[day] + self.clock_time(hours)

    def clock_time(self, hours: tuple[float, ...]) -> int:
        """Milliseconds after midnight, drawn from an hourly profile."""
        hour = self.rng.choices(range(24), hours)[0]
        return hour * HOUR + self.rng.randrange(HOUR)

    def local_hour(self, person: Person, ts: int) -> int:
        """The hour of day at `ts` in the person's time zone."""
        return self.calendar.locate(person.timezone, ts)[1] // HOUR

    def reading_delay(self, person: Person, sent: int, median_hours: float) -> int:
        """When someone gets round to an email: log-normal delay, not in their night."""
        delay = math.exp(self.rng.gauss(math.log(median_hours * HOUR), 1.1))
        ts = sent + max(MINUTE, int(delay))
        hour = self.local_hour(person, ts)
        if hour >= 23 or hour < 7:
            _, offset = self.calendar.locate(person.timezone, ts)
            morning = 7 * HOUR + self.rng.randrange(2 * HOUR)
            ts += (morning - offset) % DAY
        return ts


def geometric(rng: random.Random, stop: float) -> int:
    """How many extra steps before a `stop`-probability stop (0, 1, 2, ...)."""
    count = 0
    while rng.random() > stop:
        count += 1
    return count
