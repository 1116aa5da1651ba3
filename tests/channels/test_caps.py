"""Frequency caps per channel and contact: local calendar days in the contact's time zone,
rolling hour windows, workspace-wide and per journey, messages earlier in the same batch,
`drop` vs `defer`, and transactional mail never capped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cadenza.channels.interceptors import FrequencyCapInterceptor, Outcomes
from cadenza.channels.models import Message, Outcome, OutcomeKind
from cadenza.channels.policies import FrequencyCap
from cadenza.clock import FakeClock
from cadenza.engine.dispatch import DispatchReport
from cadenza.store import Store
from tests.channels.policy_support import (
    add_journey,
    at,
    mark_sent,
    message,
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

TOKYO, NEW_YORK = ZoneInfo("Asia/Tokyo"), ZoneInfo("America/New_York")


def _email(contact: int, key: str, **params: str) -> dict[str, object]:
    return {"contact_id": contact, "channel": "email", "key": key,
            "params": {"subject": "S", "body": "B", **params}}


def _history(store: Store, contact: int, sent_at: Sequence[int], channel: str = "email",
             prefix: str = "old") -> list[int]:
    """Outbox rows delivered earlier (at `sent_at`)."""
    rows = []
    for n, when in enumerate(sent_at):
        [row] = add_outbox(store, when, [{"contact_id": contact, "channel": channel,
                                          "key": f"{prefix}-{contact}-{n}"}])
        mark_sent(store, [row], when)
        rows.append(row)
    return rows


# --- the window arithmetic ------------------------------------------------------------------


def test_day_windows_start_at_local_midnight() -> None:
    now = at("2026-01-10T00:30", "Asia/Tokyo")  # still 2026-01-09 in UTC
    day = FrequencyCap(channel="email", limit=1, window="1d")
    assert day.window_start(now, TOKYO) == at("2026-01-10T00:00", "Asia/Tokyo")
    week = FrequencyCap(channel="email", limit=1, window="7d")
    assert week.window_start(now, TOKYO) == at("2026-01-04T00:00", "Asia/Tokyo")
    hours = FrequencyCap(channel="email", limit=1, window="12h")
    assert hours.window_start(now, TOKYO) == now - 12 * 3_600_000


def test_room_comes_back_when_the_oldest_counted_sends_leave_the_window() -> None:
    now = at("2026-01-10T12:00", "Asia/Tokyo")
    week = FrequencyCap(channel="email", limit=2, window="3d")
    sent = [at("2026-01-08T09:00", "Asia/Tokyo"), at("2026-01-09T09:00", "Asia/Tokyo"),
            at("2026-01-10T09:00", "Asia/Tokyo")]
    # Days 8, 9, 10 hold one each; at midnight of the 11th, day 8 leaves: 2 remain (full);
    # at midnight of the 12th, day 9 leaves too: room.
    assert week.room_at(sent, now, TOKYO) == at("2026-01-12T00:00", "Asia/Tokyo")
    rolling = FrequencyCap(channel="email", limit=2, window="4h")
    recent = [now - 3 * 3_600_000, now - 2 * 3_600_000, now - 3_600_000]
    assert rolling.room_at(recent, now, TOKYO) == now - 2 * 3_600_000 + 4 * 3_600_000 + 1


def test_day_windows_follow_dst() -> None:
    # New York springs forward on 2026-03-08: that local day is 23 hours long.
    now = at("2026-03-08T12:00", "America/New_York")
    day = FrequencyCap(channel="email", limit=1, window="1d")
    assert day.window_start(now, NEW_YORK) == at("2026-03-08T00:00", "America/New_York")
    room = day.room_at([now], now, NEW_YORK)
    assert room == at("2026-03-09T00:00", "America/New_York")
    assert room - day.window_start(now, NEW_YORK) == 23 * 3_600_000


def test_the_rule_reads_its_facts_in_one_query_per_kind(store: Store) -> None:
    clock = FakeClock(at("2026-01-10T12:00"))
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 1, "window": "1d"}]})
    contacts = [add_contact(store, clock.now_ms(), email=f"q{n}@example.com")
                for n in range(40)]
    for contact in contacts[:20]:
        _history(store, contact, [clock.now_ms() - 3_600_000])
    messages = [message(n + 1, clock.now_ms(), contact=c, timezone="Europe/Berlin")
                for n, c in enumerate(contacts)]
    with _statements(store) as seen:
        outcomes = _run(FrequencyCapInterceptor(store), messages)
    assert len(seen) == 2  # the policies, then the sends in the window
    assert sum(o.kind is OutcomeKind.CANCELLED for o in outcomes.values()) == 20
    assert sum(o.kind is OutcomeKind.SENT for o in outcomes.values()) == 20


@contextmanager
def _statements(store: Store) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        text = statement.strip().upper()
        if text.startswith("SELECT") and text != "SELECT 1":  # not the pool's pre-ping
            seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)


def _run(interceptor: FrequencyCapInterceptor, messages: list[Message]) -> Outcomes:
    async def deliver(passing: Sequence[Message]) -> Outcomes:
        return {m.outbox_id: Outcome.sent(None) for m in passing}

    return asyncio.run(interceptor.intercept(messages, deliver))


# --- at send time ---------------------------------------------------------------------------


def test_three_messages_in_one_batch_with_a_cap_of_two_send_two(store: Store,
                                                                smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T12:00"))
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 2, "window": "1d"}]})
    contact = add_contact(store, clock.now_ms(), email="three@example.com")
    other = add_contact(store, clock.now_ms(), email="other@example.com")
    rows = add_outbox(store, clock.now_ms(), [_email(contact, f"m{n}") for n in range(3)]
                      + [_email(other, "o")])
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=4, sent=3, cancelled=1)
    state = outbox_rows(store)
    assert [state[r]["status"] for r in rows] == ["sent", "sent", "cancelled", "sent"]
    assert "frequency cap 2 email per 1d (workspace) reached" in state[rows[2]]["last_error"]
    assert sorted(m.rcpt for m in smtp.mails) == ["other@example.com"] + \
        ["three@example.com"] * 2
    # The next batch the same day counts the two sent ones.
    [later] = add_outbox(store, clock.now_ms(), [_email(contact, "later")])
    clock.advance(3_600_000)
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).cancelled == 1
    assert outbox_rows(store)[later]["status"] == "cancelled"


def test_defer_holds_the_message_until_local_midnight_without_an_attempt(
        store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T23:00", "Asia/Tokyo"))
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 1, "window": "1d",
                                        "on_exceed": "defer"}]})
    contact = add_contact(store, clock.now_ms(), email="tokyo@example.com")
    set_timezone(store, contact, "Asia/Tokyo")
    rows = add_outbox(store, clock.now_ms(), [_email(contact, "a"), _email(contact, "b")])
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=2, sent=1, deferred=1)
    held = outbox_rows(store)[rows[1]]
    assert held["status"] == "pending"
    assert held["attempts"] == 0
    assert held["next_attempt_at"] == at("2026-01-11T00:00", "Asia/Tokyo")
    clock.set(held["next_attempt_at"])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).sent == 1
    assert outbox_rows(store)[rows[1]]["attempts"] == 1


def test_a_day_is_the_contacts_local_day_not_the_utc_day(store: Store,
                                                         smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T05:30"))  # 00:30 in New York, 14:30 in Tokyo
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 1, "window": "1d"}]})
    ny = add_contact(store, clock.now_ms(), email="ny@example.com")
    tokyo = add_contact(store, clock.now_ms(), email="tokyo@example.com")
    set_timezone(store, ny, "America/New_York")
    set_timezone(store, tokyo, "Asia/Tokyo")
    # New York: sent at 23:00 local yesterday (same UTC day as now): a new local day.
    _history(store, ny, [at("2026-01-09T23:00", "America/New_York")])
    # Tokyo: sent at 00:30 local today (the previous UTC day): the same local day.
    _history(store, tokyo, [at("2026-01-10T00:30", "Asia/Tokyo")])
    rows = add_outbox(store, clock.now_ms(), [_email(ny, "ny"), _email(tokyo, "tk")])
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=2, sent=1, cancelled=1)
    state = outbox_rows(store)
    assert state[rows[0]]["status"] == "sent"
    assert state[rows[1]]["status"] == "cancelled"


def test_seven_days_count_today_and_the_six_before(store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T10:00", "Europe/Berlin"))
    set_policy(store, clock, {"timezone": "Europe/Berlin",
                              "caps": [{"channel": "email", "limit": 2, "window": "7d"}]})
    inside = add_contact(store, clock.now_ms(), email="in@example.com")
    outside = add_contact(store, clock.now_ms(), email="out@example.com")
    _history(store, inside, [at("2026-01-04T00:00", "Europe/Berlin"),
                             at("2026-01-09T10:00", "Europe/Berlin")])
    _history(store, outside, [at("2026-01-03T23:59", "Europe/Berlin"),
                              at("2026-01-09T10:00", "Europe/Berlin")])
    rows = add_outbox(store, clock.now_ms(), [_email(inside, "i"), _email(outside, "o")])
    dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    state = outbox_rows(store)
    assert state[rows[0]]["status"] == "cancelled"
    assert state[rows[1]]["status"] == "sent"


def test_rolling_hours(store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T12:00"))
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 1, "window": "4h",
                                        "on_exceed": "defer"}]})
    recent = add_contact(store, clock.now_ms(), email="recent@example.com")
    earlier = add_contact(store, clock.now_ms(), email="earlier@example.com")
    _history(store, recent, [clock.now_ms() - 3 * 3_600_000])
    _history(store, earlier, [clock.now_ms() - 5 * 3_600_000])
    rows = add_outbox(store, clock.now_ms(), [_email(recent, "r"), _email(earlier, "e")])
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=2, sent=1, deferred=1)
    assert outbox_rows(store)[rows[0]]["next_attempt_at"] == clock.now_ms() + 3_600_000 + 1


def test_journey_caps_count_only_the_journeys_sends(store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T12:00"))
    onboarding = add_journey(store, clock, "onboarding")
    promo = add_journey(store, clock, "promo")
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 4, "window": "1d"}]})
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 1, "window": "1d"}]},
               scope="journey:promo")
    contact = add_contact(store, clock.now_ms(), email="j@example.com")
    earlier = _history(store, contact, [clock.now_ms() - 3_600_000])
    set_journey(store, earlier, "onboarding", onboarding)
    # One promo and one onboarding message: the onboarding send does not count for promo.
    first = add_outbox(store, clock.now_ms(), [_email(contact, "p1"), _email(contact, "o1")])
    set_journey(store, first[:1], "promo", promo)
    set_journey(store, first[1:], "onboarding", onboarding)
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).sent == 2
    # A second promo message is over the journey's cap of 1; onboarding has no cap of its
    # own, so one more fits the workspace's 4 and the next does not.
    clock.advance(60_000)
    second = add_outbox(store, clock.now_ms(), [_email(contact, "p2"), _email(contact, "o2"),
                                                _email(contact, "o3")])
    set_journey(store, second[:1], "promo", promo)
    set_journey(store, second[1:], "onboarding", onboarding)
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=3, sent=1, cancelled=2)
    state = outbox_rows(store)
    assert [state[r]["status"] for r in second] == ["cancelled", "sent", "cancelled"]
    assert "1 email per 1d (journey promo)" in state[second[0]]["last_error"]
    assert "4 email per 1d (workspace)" in state[second[2]]["last_error"]


def test_transactional_is_never_capped_nor_counted(store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T12:00"))
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 1, "window": "1d"}]})
    contact = add_contact(store, clock.now_ms(), email="tx@example.com")
    rows = add_outbox(store, clock.now_ms(), [
        _email(contact, f"receipt-{n}", purpose="transactional") for n in range(3)])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).sent == 3
    clock.advance(60_000)
    [promo] = add_outbox(store, clock.now_ms(), [_email(contact, "promo")])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).sent == 1
    assert {outbox_rows(store)[r]["purpose"] for r in rows} == {"transactional"}
    assert outbox_rows(store)[promo]["status"] == "sent"


def test_caps_are_per_channel_and_shadow_sends_do_not_count(store: Store,
                                                            smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T12:00"))
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 1, "window": "1d"}]})
    contact = add_contact(store, clock.now_ms(), email="s@example.com")
    add_outbox(store, clock.now_ms(), [
        {**_email(contact, "shadow"), "shadow": True},
        {"contact_id": contact, "channel": "log", "key": "log-1"},
        {"contact_id": contact, "channel": "log", "key": "log-2"}])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)) == DispatchReport(
        claimed=3, sent=2, shadowed=1)
    clock.advance(60_000)
    add_outbox(store, clock.now_ms(), [_email(contact, "real")])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).sent == 1


def test_a_policy_change_applies_to_the_next_batch(store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(at("2026-01-10T12:00"))
    contact = add_contact(store, clock.now_ms(), email="c@example.com")
    add_outbox(store, clock.now_ms(), [_email(contact, "a")])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).sent == 1
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port)
    set_policy(store, clock, {"caps": [{"channel": "email", "limit": 1, "window": "1d"}]})
    add_outbox(store, clock.now_ms(), [_email(contact, "b")])
    assert dispatch(dispatcher).cancelled == 1
