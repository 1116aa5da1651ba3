"""Time in journeys: waits until a local weekday and time across DST changes (fire once, at
local time, never early), date-relative entries, weekly and daily broadcasts, restarts
during waits, and the local-time arithmetic underneath (gaps and folds).

Expected instants are written as local time minus a UTC offset stated by hand, so the tests
do not trust the same zoneinfo arithmetic the engine uses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.clock import FakeClock
from cadenza.engine import Engine
from cadenza.engine.schedule import SCAN_EVERY_MS
from cadenza.engine.timecalc import (
    date_attribute_instant,
    local_instant,
    next_local_time,
    parse_date,
    zone,
)
from cadenza.events import EventService
from cadenza.store import Store, loads
from tests.engine.conftest import DAY, track

Publish = Callable[[str], int]
HOUR = 3_600_000
MINUTE = 60_000


def utc_ms(local: str, offset_hours: float) -> int:
    """UTC ms of a naive local ISO time whose UTC offset is `offset_hours`."""
    naive = dt.datetime.fromisoformat(local)
    return int((naive - dt.timedelta(hours=offset_hours)).replace(tzinfo=dt.UTC)
               .timestamp() * 1000)


def rows(store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        if conn.dialect.name == "postgresql":
            sql = sql.replace("?", "%s")
        return [tuple(r) for r in conn.exec_driver_sql(sql, tuple(params))]


def outbox(store: Store) -> list[tuple[int, str, int]]:
    """(contact, template, created_at) of every outbox row, oldest first."""
    return [(int(c), t, int(a)) for c, t, a in rows(
        store, "SELECT contact_id, template, created_at FROM outbox ORDER BY id")]


def person(events: EventService, user: str, **traits: Any) -> int:
    result = events.ingest([{"type": "identify", "userId": user, "messageId": f"id-{user}",
                             "traits": traits}])
    assert not result.rejected, result.rejected
    return int(result.contact_ids[0])


def approach(engine: Engine, clock: FakeClock, due: int, count: Callable[[], int],
             steps: tuple[int, ...]) -> None:
    """Walk the clock up to `due` through `steps` (ms before it, descending): nothing may
    happen before; at `due` exactly, `count()` goes up."""
    before = count()
    for back in steps:
        if clock.now_ms() < due - back:
            clock.set(due - back)
        engine.run_once()
        assert count() == before, f"fired {back} ms early"
    clock.set(due)
    engine.run_once()
    assert count() > before, "did not fire on time"


# Ten-minute steps over the two hours before, which include the instant a wrong UTC offset
# would give (one hour early in spring and autumn alike, depending on direction), then the
# last minute, second and millisecond.
CLOSE = (2 * HOUR, *range(HOUR + 10 * MINUTE, 0, -10 * MINUTE), MINUTE, 1_000, 1)


# --- wait_until across DST -------------------------------------------------------------------

MONDAYS = """
journey: mondays
entry: {event: go}
steps:
  - id: first-monday
    wait_until: {at: "09:00", on: [mon]}
  - {id: one, send: {channel: log, template: one}}
  - {id: a-day, wait: 1d}
  - id: next-monday
    wait_until: {at: "09:00", on: [mon]}
  - {id: two, send: {channel: log, template: two}}
"""

# zone, the Sunday of the change, UTC offset (hours) before it and after it.
SWITCHES = [
    ("America/New_York", "2026-03-08", -5, -4),
    ("America/New_York", "2026-11-01", -4, -5),
    ("Europe/Berlin", "2026-03-29", 1, 2),
    ("Europe/Berlin", "2026-10-25", 2, 1),
    ("Australia/Sydney", "2026-04-05", 11, 10),  # southern autumn: clocks go back
    ("Australia/Sydney", "2026-10-04", 10, 11),  # southern spring: clocks go forward
    ("Asia/Kolkata", "2026-03-08", 5.5, 5.5),  # no DST at all
]


def _day(sunday: str, days: int) -> str:
    return (dt.date.fromisoformat(sunday) + dt.timedelta(days=days)).isoformat()


@pytest.mark.parametrize(("tz", "sunday", "before", "after"), SWITCHES,
                         ids=[f"{z.split('/')[1]}-{d}" for z, d, _, _ in SWITCHES])
def test_wait_until_monday_fires_at_local_nine_across_dst(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, tz: str, sunday: str, before: float, after: float) -> None:
    publish(MONDAYS)
    # Early enters on the Wednesday a week and a half before the change: its Mondays fall
    # on both sides of it. Late enters on the Wednesday just before: both its Mondays come
    # after the change, and the first wait spans it.
    early_mon = utc_ms(f"{_day(sunday, -6)}T09:00", before)
    change_mon = utc_ms(f"{_day(sunday, 1)}T09:00", after)
    late_mon = utc_ms(f"{_day(sunday, 8)}T09:00", after)
    clock.set(utc_ms(f"{_day(sunday, -11)}T12:00", before))
    early = person(events, "early", timezone=tz)
    late = person(events, "late", timezone=tz)
    track(events, "early", "go", "go-1")
    engine.run_once()
    assert rows(store, "SELECT wake_at FROM enrollments") == [(early_mon,)]

    def count() -> int:
        return len(outbox(store))

    approach(engine, clock, early_mon, count, CLOSE)
    clock.advance(DAY)  # the day's wait ends on Tuesday; the next Monday counts from it
    engine.run_once()
    clock.set(utc_ms(f"{_day(sunday, -4)}T12:00", before))
    track(events, "late", "go", "go-2")
    engine.run_once()
    assert sorted(w for w, in rows(store, "SELECT wake_at FROM enrollments")) == [
        change_mon, change_mon]
    approach(engine, clock, change_mon, count, CLOSE)
    clock.advance(DAY)
    engine.run_once()
    approach(engine, clock, late_mon, count, CLOSE)
    clock.advance(3 * 7 * DAY)
    engine.run_once()
    assert sorted(outbox(store), key=lambda r: (r[2], r[0])) == [
        (early, "one", early_mon), (early, "two", change_mon), (late, "one", change_mon),
        (late, "two", late_mon)]
    assert rows(store, "SELECT status FROM enrollments") == [("completed",)] * 2
    waits = [(c, step[2]["until"], step[2]["timezone"])
             for c, s in rows(store, "SELECT contact_id, steps FROM journey_history")
             for step in loads(s) if step[1] == "wait" and "timezone" in step[2]]
    assert sorted(waits) == sorted([(early, early_mon, tz), (early, change_mon, tz),
                                    (late, change_mon, tz), (late, late_mon, tz)])


def test_wait_until_without_time_zone_uses_utc(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish) -> None:
    publish(MONDAYS)
    clock.set(utc_ms("2026-03-04T12:00", 0))
    person(events, "u")
    track(events, "u", "go", "go-1")
    engine.run_once()
    assert rows(store, "SELECT wake_at FROM enrollments") == [(utc_ms("2026-03-09T09:00", 0),)]


WEEKLY_LOOP = """
journey: weekly
entry: {event: go}
steps:
  - id: monday
    wait_until: {at: "09:00", on: [mon]}
  - id: ping
    send: {channel: log, template: ping}
    goto: monday
"""


def test_weekly_loop_fires_once_per_week_when_run_on_the_dot(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish) -> None:
    publish(WEEKLY_LOOP)
    clock.set(utc_ms("2026-03-04T12:00", -5))
    person(events, "u", timezone="America/New_York")
    track(events, "u", "go", "go-1")
    engine.run_once()
    due = utc_ms("2026-03-09T09:00", -4)
    clock.set(due)
    for _ in range(3):
        engine.run_once()
    assert [t for _, t, _ in outbox(store)] == ["ping"]
    assert engine.next_wake() == utc_ms("2026-03-16T09:00", -4)


def test_weekly_loop_fires_once_per_week_when_run_late(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish) -> None:
    publish(WEEKLY_LOOP)
    clock.set(utc_ms("2026-03-04T12:00", -5))
    cid = person(events, "u", timezone="America/New_York")
    track(events, "u", "go", "go-1")
    engine.run_once()
    fired = []
    for due in (utc_ms("2026-03-09T09:00", -4), utc_ms("2026-03-16T09:00", -4)):
        clock.set(due + 1)
        for _ in range(3):
            engine.run_once()
        fired.append(due + 1)
    assert outbox(store) == [(cid, "ping", at) for at in fired]


# --- date-relative entries -------------------------------------------------------------------

RENEWAL = """
journey: renewal
entry: {date: {attr: renewal_date, offset: -3d, at: "09:00"}}
steps:
  - {id: remind, send: {channel: log, template: renewal}}
"""


def test_date_trigger_enters_once_at_local_time(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish) -> None:
    publish(RENEWAL)
    clock.set(utc_ms("2026-03-01T00:00", 0))
    # Each one's moment, three days before the renewal at 09:00 local, falls on or just
    # after a DST change in its zone.
    people = {
        "ny": ("America/New_York", "2026-03-11", utc_ms("2026-03-08T09:00", -4)),
        "berlin": ("Europe/Berlin", "2026-04-01", utc_ms("2026-03-29T09:00", 2)),
        "sydney": ("Australia/Sydney", "2026-04-08", utc_ms("2026-04-05T09:00", 10)),
        "kolkata": ("Asia/Kolkata", "2026-03-11", utc_ms("2026-03-08T09:00", 5.5)),
        "utc": (None, "2026-03-12T18:30:00Z", utc_ms("2026-03-09T09:00", 0)),
    }
    ids = {}
    for user, (tz, date, _) in people.items():
        traits: dict[str, Any] = {"renewal_date": date}
        if tz:
            traits["timezone"] = tz
        ids[user] = person(events, user, **traits)
    person(events, "no-date", plan="pro")
    person(events, "past", renewal_date="2026-03-02", timezone="UTC")  # moment already gone
    engine.run_once()  # the trigger's window starts here
    clock.advance(SCAN_EVERY_MS)
    engine.run_once()

    def count() -> int:
        return len(outbox(store))

    # A scan runs at most every minute: walk up in whole minutes so one lands on the moment.
    for user, (_, _, due) in sorted(people.items(), key=lambda p: p[1][2]):
        clock.set(due - 5 * MINUTE)
        engine.run_once()
        approach(engine, clock, due, count, (4 * MINUTE, 3 * MINUTE, 2 * MINUTE, MINUTE, 1))
        assert outbox(store)[-1][:2] == (ids[user], "renewal")
    clock.advance(30 * DAY)
    engine.run_once()
    entered = {int(c): (int(at), key) for c, at, key in rows(
        store, "SELECT contact_id, entered_at, entry_key FROM enrollments")}
    assert entered == {ids[u]: (due, f"date:{date[:10]}")
                       for u, (_, date, due) in people.items()}
    assert len(outbox(store)) == len(people)


def test_date_trigger_catches_up_after_a_long_gap_once(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish) -> None:
    publish(RENEWAL)
    clock.set(utc_ms("2026-03-01T00:00", 0))
    cid = person(events, "ny", renewal_date="2026-03-11", timezone="America/New_York")
    engine.run_once()
    engine.run_once()  # the trigger's window starts by now
    clock.set(utc_ms("2026-03-09T00:00", 0))  # the engine was down over the moment
    engine.run_once()
    engine.run_once()
    clock.advance(DAY)
    engine.run_once()
    assert outbox(store) == [(cid, "renewal", utc_ms("2026-03-09T00:00", 0))]


# --- schedules -------------------------------------------------------------------------------

@pytest.mark.parametrize("dues", [
    (utc_ms("2026-03-23T09:00", 1), utc_ms("2026-03-30T09:00", 2),
     utc_ms("2026-04-06T09:00", 2)),
    (utc_ms("2026-10-19T09:00", 2), utc_ms("2026-10-26T09:00", 1),
     utc_ms("2026-11-02T09:00", 1)),
], ids=["spring", "autumn"])
def test_weekly_broadcast_enters_matching_contacts_once_per_occurrence(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: Callable[..., list[int]],
        dues: tuple[int, ...]) -> None:
    publish("""
journey: digest
entry:
  schedule: {every: week, on: [mon], at: "09:00", timezone: Europe/Berlin,
             where: {attr: plan, eq: pro}}
re_entry: always
steps:
  - {id: digest, send: {channel: log, template: digest}}
""")
    clock.set(dues[0] - 3 * DAY)
    ids = make_contacts(6)  # user-0 and user-3 are pro
    pro = sorted(ids[i] for i in (0, 3))
    engine.run_once()

    def count() -> int:
        return len(outbox(store))

    for due in dues:
        clock.set(due - 3 * HOUR)
        engine.run_once()
        approach(engine, clock, due, count, CLOSE)
        for _ in range(3):  # more scans over the same occurrence enter nobody again
            clock.advance(SCAN_EVERY_MS)
            engine.run_once()
        assert sorted(c for c, _, at in outbox(store) if at == due) == pro
    assert len(outbox(store)) == 2 * len(dues)
    keys = {k for k, in rows(store, "SELECT entry_key FROM enrollments")}
    assert keys == {f"schedule:{d}" for d in dues}


def test_daily_broadcast_in_each_contacts_zone(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish) -> None:
    publish("""
journey: morning
entry: {schedule: {every: day, at: "08:00", timezone: contact}}
re_entry: always
steps:
  - {id: hello, send: {channel: log, template: morning}}
""")
    clock.set(utc_ms("2026-03-06T14:00", 0))  # after 08:00 in New York, before India's
    ny = person(events, "ny", timezone="America/New_York")
    india = person(events, "in", timezone="Asia/Kolkata")
    engine.run_once()
    dues = sorted([(utc_ms("2026-03-07T08:00", -5), ny), (utc_ms("2026-03-08T08:00", -4), ny),
                   (utc_ms("2026-03-09T08:00", -4), ny),
                   (utc_ms("2026-03-07T08:00", 5.5), india),
                   (utc_ms("2026-03-08T08:00", 5.5), india),
                   (utc_ms("2026-03-09T08:00", 5.5), india)])

    def count() -> int:
        return len(outbox(store))

    for due, _ in dues:
        clock.set(due - 10 * MINUTE)
        engine.run_once()
        approach(engine, clock, due, count, tuple(range(9 * MINUTE, 0, -MINUTE)))
    clock.set(dues[-1][0] + HOUR)
    engine.run_once()
    assert [(c, at) for c, _, at in outbox(store)] == [(c, d) for d, c in dues]


# --- restarts --------------------------------------------------------------------------------

def test_restarts_during_waits_change_nothing(
        store: Store, clock: FakeClock, events: EventService, publish: Publish) -> None:
    publish(MONDAYS)
    clock.set(utc_ms("2026-03-04T12:00", -5))
    zones = {"ny": ("America/New_York", -4), "berlin": ("Europe/Berlin", 1),
             "sydney": ("Australia/Sydney", 11), "kolkata": ("Asia/Kolkata", 5.5)}
    engine = Engine(store, clock, batch_size=1_000)
    engine.start()
    ids = {u: person(events, u, timezone=tz) for u, (tz, _) in zones.items()}
    for user in zones:
        track(events, user, "go", f"go-{user}")
    engine.run_once()
    before = rows(store, "SELECT id, wake_at, seq FROM enrollments ORDER BY id")
    first = {u: utc_ms("2026-03-09T09:00", off) for u, (_, off) in zones.items()}
    second = {u: utc_ms("2026-03-16T09:00", off) for u, (_, off) in zones.items()}

    # A crash (no release): the next worker waits for the lease to expire, days before due.
    engine = Engine(store, clock, batch_size=1_000)
    clock.advance(DAY)
    engine.run_once()
    assert rows(store, "SELECT id, wake_at, seq FROM enrollments ORDER BY id") == before
    for user, due in sorted(first.items(), key=lambda p: p[1]):
        clock.set(due - 1)
        engine.run_once()
        # A clean restart a millisecond before each one is due.
        engine.leases.release()
        engine = Engine(store, clock, batch_size=1_000)
        engine.run_once()
        clock.set(due)
        engine.run_once()
        assert outbox(store)[-1] == (ids[user], "one", due)
    clock.set(min(second.values()) - DAY)
    engine = Engine(store, clock, batch_size=1_000)  # another crash, well before due
    engine.run_once()  # the days' waits end; each waits for its second Monday
    assert {w for w, in rows(store, "SELECT wake_at FROM enrollments")} == set(second.values())
    for user, due in sorted(second.items(), key=lambda p: p[1]):
        clock.set(due)
        engine.run_once()
        engine.run_once()
        assert outbox(store)[-1] == (ids[user], "two", due)
    clock.advance(7 * DAY)
    engine.run_once()
    expected = sorted([(ids[u], "one", d) for u, d in first.items()]
                      + [(ids[u], "two", d) for u, d in second.items()], key=lambda r: r[2])
    assert outbox(store) == expected
    keys = [k for k, in rows(store, "SELECT idempotency_key FROM outbox")]
    assert len(set(keys)) == len(keys) == 8


# --- local-time arithmetic -------------------------------------------------------------------

NY = "America/New_York"


def test_local_instant_moves_a_skipped_time_forward_by_the_gap() -> None:
    # New York springs from 02:00 to 03:00: 02:30 does not exist and becomes 03:30 EDT.
    assert local_instant(dt.date(2026, 3, 8), (2, 30), zone(NY)) == utc_ms(
        "2026-03-08T03:30", -4)
    # Sydney springs from 02:00 to 03:00 on 4 October 2026.
    assert local_instant(dt.date(2026, 10, 4), (2, 30), zone("Australia/Sydney")) == utc_ms(
        "2026-10-04T03:30", 11)
    # Berlin springs from 02:00 to 03:00 on 29 March 2026.
    assert local_instant(dt.date(2026, 3, 29), (2, 15), zone("Europe/Berlin")) == utc_ms(
        "2026-03-29T03:15", 2)


def test_local_instant_takes_the_first_of_a_repeated_time() -> None:
    assert local_instant(dt.date(2026, 11, 1), (1, 30), zone(NY)) == utc_ms(
        "2026-11-01T01:30", -4)
    assert local_instant(dt.date(2026, 10, 25), (2, 30), zone("Europe/Berlin")) == utc_ms(
        "2026-10-25T02:30", 2)
    assert local_instant(dt.date(2026, 4, 5), (2, 30), zone("Australia/Sydney")) == utc_ms(
        "2026-04-05T02:30", 11)


def test_next_local_time_around_changes() -> None:
    # Saturday night before the spring change, "any day at 02:30" is Sunday 03:30 EDT.
    now = utc_ms("2026-03-07T23:00", -5)
    assert next_local_time(now, (2, 30), (), NY) == utc_ms("2026-03-08T03:30", -4)
    # Just after 09:00 on a Monday: the next Monday, an hour earlier in UTC after the change.
    now = utc_ms("2026-03-02T09:00", -5) + 1
    assert next_local_time(now, (9, 0), (0,), NY) == utc_ms("2026-03-09T09:00", -4)
    # Weekdays: Friday evening, "mon or wed" -> Monday.
    now = utc_ms("2026-10-23T18:00", 2)
    assert next_local_time(now, (9, 0), (0, 2), "Europe/Berlin") == utc_ms(
        "2026-10-26T09:00", 1)
    # India has no DST: always +05:30.
    now = utc_ms("2026-03-08T10:00", 5.5)
    assert next_local_time(now, (9, 0), (), "Asia/Kolkata") == utc_ms("2026-03-09T09:00", 5.5)
    # Unknown and missing zones are UTC.
    now = utc_ms("2026-03-08T10:00", 0)
    assert next_local_time(now, (9, 0), (), "Mars/Olympus") == utc_ms("2026-03-09T09:00", 0)
    assert next_local_time(now, (11, 0), (), None) == utc_ms("2026-03-08T11:00", 0)


def test_date_attribute_instant() -> None:
    three_days = -3 * DAY
    assert date_attribute_instant("2026-03-11", three_days, (9, 0), NY) == utc_ms(
        "2026-03-08T09:00", -4)
    # A datetime value counts by its calendar date; a part-day offset shifts the instant.
    assert date_attribute_instant("2026-11-04T23:30:00Z", three_days - HOUR, (9, 0), NY) == \
        utc_ms("2026-11-01T08:00", -5)
    assert date_attribute_instant("2026-03-26", 3 * DAY + 90 * MINUTE, (9, 0),
                                  "Europe/Berlin") == utc_ms("2026-03-29T10:30", 2)
    for bad in (None, 20260311, "soon", "2026-13-40", ""):
        assert date_attribute_instant(bad, 0, (9, 0), NY) is None
    assert parse_date("2026-02-28T10:00") == dt.date(2026, 2, 28)
    assert date_attribute_instant("9999-12-31", DAY, (9, 0), None) is None  # past year 9999


ZONES = ("America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata", "UTC",
         "America/Santiago", "Australia/Lord_Howe", "Pacific/Chatham")


@settings(max_examples=300, deadline=None)
@given(now=st.integers(utc_ms("2025-01-01T00:00", 0), utc_ms("2028-01-01T00:00", 0)),
       tz=st.sampled_from(ZONES), hour=st.integers(0, 23), minute=st.sampled_from([0, 30, 45]),
       weekdays=st.sets(st.integers(0, 6), max_size=3))
def test_next_local_time_is_the_first_matching_local_time(
        now: int, tz: str, hour: int, minute: int, weekdays: set[int]) -> None:
    days = tuple(sorted(weekdays))
    got = next_local_time(now, (hour, minute), days, tz)
    assert got > now
    local = dt.datetime.fromtimestamp(got / 1000, ZoneInfo(tz))
    if days:
        assert local.weekday() in days
    wall = dt.datetime(local.year, local.month, local.day, hour, minute)
    exists = dt.datetime(wall.year, wall.month, wall.day, hour, minute,
                         tzinfo=ZoneInfo(tz)).astimezone(dt.UTC).astimezone(
        ZoneInfo(tz)).replace(tzinfo=None) == wall
    if exists:
        assert (local.hour, local.minute) == (hour, minute)
    else:  # in a gap: moved forward by the gap, never more than an hour here
        assert 0 < (local.replace(tzinfo=None) - wall).total_seconds() <= 3600
    # No earlier moment qualifies: every allowed day between now and the result is past (or now).
    day = dt.datetime.fromtimestamp(now / 1000, ZoneInfo(tz)).date() - dt.timedelta(days=1)
    while day < local.date():
        if not days or day.weekday() in days:
            assert local_instant(day, (hour, minute), zone(tz)) <= now
        day += dt.timedelta(days=1)
