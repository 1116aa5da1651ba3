"""Quiet hours: messages due inside the window of the contact's local time are deferred to its
end, DST-correct; transactional messages are never delayed; the deferral is no attempt."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.channels.policies import QuietHours
from cadenza.clock import FakeClock
from cadenza.engine.dispatch import DispatchReport
from cadenza.store import Store
from tests.channels.policy_support import (
    add_journey,
    at,
    local,
    set_journey,
    set_policy,
    set_timezone,
)
from tests.channels.servers import SmtpSink
from tests.channels.support import (
    add_contact,
    add_outbox,
    dispatch,
    make_dispatcher,
    outbox_rows,
    smtp,
)

__all__ = ["smtp"]

NIGHT = QuietHours(start="21:00", end="08:00")
BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
MINUTE = 60_000


# --- the window, as a pure function ---------------------------------------------------------


def test_outside_the_window_nothing_is_held() -> None:
    assert NIGHT.release_at(at("2026-01-10T12:00", "Europe/Berlin"), BERLIN) is None
    assert NIGHT.release_at(at("2026-01-10T20:59", "Europe/Berlin"), BERLIN) is None
    assert NIGHT.release_at(at("2026-01-10T08:00", "Europe/Berlin"), BERLIN) is None


def test_evening_and_early_morning_go_to_the_next_end() -> None:
    evening = NIGHT.release_at(at("2026-01-10T21:00", "Europe/Berlin"), BERLIN)
    assert evening is not None
    assert local(evening, "Europe/Berlin") == "2026-01-11T08:00"
    morning = NIGHT.release_at(at("2026-01-11T07:59", "Europe/Berlin"), BERLIN)
    assert morning is not None
    assert local(morning, "Europe/Berlin") == "2026-01-11T08:00"


def test_a_daytime_window() -> None:
    lunch = QuietHours(start="12:00", end="13:30")
    release = lunch.release_at(at("2026-01-10T12:10", "Asia/Tokyo"), ZoneInfo("Asia/Tokyo"))
    assert release == at("2026-01-10T13:30", "Asia/Tokyo")


def test_berlin_spring_forward_night_is_an_hour_shorter() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST: 23:00 CET to 08:00 CEST is 8 hours, not 9.
    now = at("2026-03-28T23:00", "Europe/Berlin")
    release = NIGHT.release_at(now, BERLIN)
    assert release == at("2026-03-29T08:00", "Europe/Berlin")
    assert release - now == 8 * 60 * MINUTE
    assert local(release, "Europe/Berlin") == "2026-03-29T08:00"


def test_new_york_fall_back_night_is_an_hour_longer() -> None:
    # 2026-11-01 02:00 EDT -> 01:00 EST: 22:00 EDT to 08:00 EST is 11 hours.
    now = at("2026-10-31T22:00", "America/New_York")
    release = NIGHT.release_at(now, NEW_YORK)
    assert release is not None
    assert release - now == 11 * 60 * MINUTE
    assert local(release, "America/New_York") == "2026-11-01T08:00"


def test_an_end_inside_the_skipped_hour_releases_at_the_jump() -> None:
    # Quiet 01:00-02:30 on the night Berlin skips 02:00-03:00: at 03:00 CEST the wall clock
    # is past 02:30, so the window ends at the jump (01:00 UTC), not at "02:30 + 1h".
    window = QuietHours(start="01:00", end="02:30")
    now = at("2026-03-29T01:30", "Europe/Berlin")
    assert window.release_at(now, BERLIN) == at("2026-03-29T01:00", "UTC")


def test_a_repeated_hour_releases_at_its_first_end() -> None:
    # Quiet 00:00-02:30 on the night New York repeats 01:00-02:00: 02:30 comes once, after
    # the repeat (at 07:30 UTC).
    window = QuietHours(start="00:00", end="02:30")
    now = at("2026-11-01T00:30", "America/New_York")
    assert window.release_at(now, NEW_YORK) == at("2026-11-01T07:30", "UTC")
    # Quiet 00:00-01:30: the first 01:30 (EDT) ends it, even though 01:30 comes again.
    short = QuietHours(start="00:00", end="01:30")
    assert short.release_at(now, NEW_YORK) == at("2026-11-01T05:30", "UTC")
    # Inside the repeat (01:20 EST, the second 01:20), the window 00:00-01:45 ends at the
    # second 01:45, not the next day's.
    second = at("2026-11-01T06:20", "UTC")
    assert QuietHours(start="00:00", end="01:45").release_at(second, NEW_YORK) == \
        at("2026-11-01T06:45", "UTC")


def test_falling_back_before_the_start_leaves_the_window() -> None:
    # Quiet 01:30-06:00 in New York on 2026-11-01: at 01:45 EDT the clock falls back to
    # 01:00 EST at 06:00 UTC, before 01:30, so the window is left then.
    window = QuietHours(start="01:30", end="06:00")
    now = at("2026-11-01T05:45", "UTC")  # 01:45 EDT
    assert window.inside(now, NEW_YORK)
    assert window.release_at(now, NEW_YORK) == at("2026-11-01T06:00", "UTC")


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
# Around the 2026 DST changes of these zones, and ordinary days.
DAYS = [at(d) for d in ("2026-03-07", "2026-03-28", "2026-04-04", "2026-06-15", "2026-10-03",
                        "2026-10-24", "2026-10-31", "2026-12-20")]


def _earliest_outside(window: QuietHours, now: int, zone: ZoneInfo) -> int:
    """The reference answer: walk whole UTC minutes (every zone here changes offsets and
    every window edge falls on a whole minute) until the wall clock is outside."""
    t = (now // MINUTE + 1) * MINUTE
    while window.inside(t, zone):
        t += MINUTE
    return t


@settings(max_examples=250, deadline=None)
@given(zone=st.sampled_from(ZONES), day=st.sampled_from(DAYS),
       offset=st.integers(0, 3 * 24 * 60 * MINUTE),
       start=st.integers(0, 24 * 60 - 1), end=st.integers(0, 24 * 60 - 1))
def test_release_is_outside_and_the_earliest_such_instant(zone: str, day: int, offset: int,
                                                          start: int, end: int) -> None:
    if start == end:
        return
    window = QuietHours(start=f"{start // 60:02d}:{start % 60:02d}",
                        end=f"{end // 60:02d}:{end % 60:02d}")
    tz = ZoneInfo(zone)
    now = day + offset
    release = window.release_at(now, tz)
    if release is None:
        assert not window.inside(now, tz)
        return
    assert window.inside(now, tz)
    assert release > now
    assert not window.inside(release, tz)
    assert window.inside(release - 1, tz)
    assert release == _earliest_outside(window, now, tz)


# --- at send time ---------------------------------------------------------------------------


def _email(contact: int, **extra: object) -> dict[str, object]:
    return {"contact_id": contact, "channel": "email",
            "params": {"subject": "S", "body": "B", **dict(extra.pop("params", {}) or {})},
            **extra}


def test_a_message_due_at_night_is_deferred_without_an_attempt_then_sent(
        store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-03-28T23:00", "Europe/Berlin"))
    set_policy(store, clock, {"quiet_hours": {"start": "21:00", "end": "08:00",
                                              "channels": ["email"]}})
    contact = add_contact(store, clock.now_ms(), email="night@example.com")
    set_timezone(store, contact, "Europe/Berlin")
    [row] = add_outbox(store, clock.now_ms(), [_email(contact)])
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=1, deferred=1)
    state = outbox_rows(store)[row]
    assert state["status"] == "pending"
    assert state["attempts"] == 0
    assert state["next_attempt_at"] == at("2026-03-29T08:00", "Europe/Berlin")
    assert "quiet hours 21:00-08:00" in state["last_error"]
    assert smtp.mails == []
    clock.set(state["next_attempt_at"] - 1)
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).claimed == 0
    clock.set(state["next_attempt_at"])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).sent == 1
    assert outbox_rows(store)[row]["attempts"] == 1
    assert [m.rcpt for m in smtp.mails] == ["night@example.com"]


def test_the_local_time_is_the_contacts_else_the_workspaces(store: Store,
                                                            smtp: SmtpSink) -> None:
    # 03:00 UTC: night in New York, 12:00 in Tokyo, 04:00 in Berlin (the workspace zone).
    clock = FakeClock(at("2026-01-10T03:00"))
    set_policy(store, clock, {"timezone": "Europe/Berlin",
                              "quiet_hours": {"start": "21:00", "end": "08:00"}})
    ny = add_contact(store, clock.now_ms(), email="ny@example.com")
    tokyo = add_contact(store, clock.now_ms(), email="tokyo@example.com")
    nowhere = add_contact(store, clock.now_ms(), email="nowhere@example.com")
    set_timezone(store, ny, "America/New_York")
    set_timezone(store, tokyo, "Asia/Tokyo")
    rows = add_outbox(store, clock.now_ms(), [_email(c) for c in (ny, tokyo, nowhere)])
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=3, sent=1, deferred=2)
    state = outbox_rows(store)
    assert state[rows[1]]["status"] == "sent"
    assert state[rows[0]]["next_attempt_at"] == at("2026-01-10T08:00", "America/New_York")
    assert state[rows[2]]["next_attempt_at"] == at("2026-01-10T08:00", "Europe/Berlin")


def test_transactional_and_unlisted_channels_are_never_delayed(store: Store,
                                                              smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T23:30"))
    set_policy(store, clock, {"quiet_hours": {"start": "21:00", "end": "08:00",
                                              "channels": ["sms"]}})
    contact = add_contact(store, clock.now_ms(), email="t@example.com")
    add_outbox(store, clock.now_ms(), [_email(contact)])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).sent == 1
    set_policy(store, clock, {"quiet_hours": {"start": "21:00", "end": "08:00"}})
    rows = add_outbox(store, clock.now_ms(), [
        _email(contact, key="receipt", params={"purpose": "transactional"}),
        _email(contact, key="promo")])
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=2, sent=1, deferred=1)
    state = outbox_rows(store)
    assert state[rows[0]]["status"] == "sent"
    assert state[rows[1]]["status"] == "pending"


def test_a_journeys_quiet_hours_replace_the_workspaces(store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T19:30"))
    journey = add_journey(store, clock, "late-night")
    set_policy(store, clock, {"quiet_hours": {"start": "19:00", "end": "08:00"}})
    set_policy(store, clock, {"quiet_hours": {"start": "22:00", "end": "07:00"}},
               scope="journey:late-night")
    contact = add_contact(store, clock.now_ms(), email="j@example.com")
    rows = add_outbox(store, clock.now_ms(), [_email(contact, key="other")])
    o_rows = add_outbox(store, clock.now_ms(), [_email(contact, key="in-journey")])
    set_journey(store, o_rows, "late-night", journey)
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=2, sent=1, deferred=1)
    state = outbox_rows(store)
    assert state[rows[0]]["status"] == "pending"
    assert state[o_rows[0]]["status"] == "sent"
    # The change applies to the next batch: the journey's window now starts at 19:00 too.
    set_policy(store, clock, {"quiet_hours": {"start": "19:00", "end": "07:00"}},
               scope="journey:late-night")
    more = add_outbox(store, clock.now_ms(), [_email(contact, key="in-journey-2")])
    set_journey(store, more, "late-night", journey)
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).deferred == 1
    assert outbox_rows(store)[more[0]]["next_attempt_at"] == at("2026-01-11T07:00")

