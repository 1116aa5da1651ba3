from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.contacts import list_fields
from cadenza.demo import DemoSummary, generate_demo
from cadenza.demo.tables import COUNTRIES
from cadenza.errors import Conflict
from cadenza.store import Store, schema, upgrade

DAY = 86_400_000
SMALL: dict[str, int] = {"contacts": 300, "days": 14, "seed": 11}


@pytest.fixture
def demo(store: Store, clock: FakeClock) -> DemoSummary:
    """A small demo workspace in the test store."""
    return generate_demo(store, clock, **SMALL)


def rows(store: Store, query: Any) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(query).mappings())


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the generator writes, in a comparable form."""
    e, c, h = schema.events, schema.contacts, schema.consent_history
    with store.read() as conn:
        return {
            "events": [tuple(r) for r in conn.execute(
                sa.select(e.c.message_id, e.c.contact_id, e.c.type, e.c.name, e.c.source,
                          e.c.timestamp, e.c.properties).order_by(e.c.id))],
            "contacts": [tuple(r) for r in conn.execute(
                sa.select(c.c.id, c.c.email, c.c.phone, c.c.user_id, c.c.attributes,
                          c.c.timezone, c.c.merged_into).order_by(c.c.id))],
            "consent": [tuple(r) for r in conn.execute(
                sa.select(h.c.contact_id, h.c.channel, h.c.purpose, h.c.status, h.c.at)
                .order_by(h.c.id))],
            "suppressions": [tuple(r) for r in conn.execute(
                sa.select(schema.suppressions.c.address, schema.suppressions.c.reason)
                .order_by(schema.suppressions.c.address))],
        }


def test_same_seed_same_workspace(store: Store, clock: FakeClock, empty_store_url: str) -> None:
    first = generate_demo(store, clock, **SMALL)
    upgrade(empty_store_url)
    other = Store.create(empty_store_url)
    try:
        second = generate_demo(other, clock, **SMALL)
        assert snapshot(store) == snapshot(other)
    finally:
        other.dispose()
    assert (first.contacts, first.companies, first.events, first.consents, first.suppressions) \
        == (second.contacts, second.companies, second.events, second.consents,
            second.suppressions)


def test_another_seed_another_workspace(store: Store, clock: FakeClock,
                                        empty_store_url: str) -> None:
    generate_demo(store, clock, **SMALL)
    upgrade(empty_store_url)
    other = Store.create(empty_store_url)
    try:
        generate_demo(other, clock, **{**SMALL, "seed": 12})
        assert snapshot(store)["contacts"] != snapshot(other)["contacts"]
    finally:
        other.dispose()


def test_counts_match_the_store(demo: DemoSummary, store: Store) -> None:
    c = schema.contacts
    live = rows(store, sa.select(c.c.id, c.c.user_id).where(c.c.merged_into.is_(None)))
    assert demo.contacts == len(live) == SMALL["contacts"]
    assert demo.identified == sum(1 for r in live if r["user_id"])
    assert demo.companies == len(rows(store, sa.select(schema.companies.c.id)))
    assert demo.events == len(rows(store, sa.select(schema.events.c.id)))
    assert demo.consents == len(rows(store, sa.select(schema.consent_history.c.id)))
    assert demo.suppressions == len(rows(store, sa.select(schema.suppressions.c.id)))
    assert 0.4 < demo.identified / demo.contacts < 0.75
    assert demo.elapsed_seconds > 0


def test_some_visitors_never_identify(demo: DemoSummary, store: Store) -> None:
    c, e = schema.contacts, schema.events
    anonymous = {r["id"] for r in rows(store, sa.select(c.c.id).where(
        c.c.merged_into.is_(None), c.c.user_id.is_(None)))}
    assert len(anonymous) >= 0.25 * demo.contacts
    identified_by_event = {r["contact_id"] for r in rows(
        store, sa.select(e.c.contact_id).where(e.c.type == "identify"))}
    assert not anonymous & identified_by_event
    # They were seen: page views from the web, and nothing else.
    seen = Counter((r["contact_id"], r["source"], r["type"]) for r in rows(
        store, sa.select(e.c.contact_id, e.c.source, e.c.type)
        .where(e.c.contact_id.in_(sorted(anonymous)))))
    assert {cid for cid, _, _ in seen} == anonymous
    assert {(source, kind) for _, source, kind in seen} == {("web", "page")}


def test_identified_contacts_have_profile_company_and_consent(demo: DemoSummary,
                                                              store: Store) -> None:
    c = schema.contacts
    people = rows(store, sa.select(c).where(c.c.merged_into.is_(None),
                                            c.c.user_id.is_not(None)))
    assert len(people) == demo.identified
    members = {r["contact_id"] for r in rows(store, sa.select(schema.company_members))}
    consent = Counter((r["contact_id"], r["channel"], r["purpose"]) for r in rows(
        store, sa.select(schema.consent_history)))
    zones = {country.code: {z for z, _ in country.timezones} for country in COUNTRIES}
    locales = {country.code: country.locale for country in COUNTRIES}
    for person in people:
        assert person["email"]
        assert "@" in person["email"]
        assert person["id"] in members
        assert consent[(person["id"], "email", "transactional")] == 1
        assert consent[(person["id"], "email", "marketing")] >= 1
        attributes = person["attributes"]
        country = attributes["address"]["country"]
        assert person["timezone"] in zones[country]
        assert person["locale"] == locales[country]
        assert attributes["plan"] in ("free", "starter", "pro", "enterprise")
        dt.date.fromisoformat(attributes["signup_date"])
    history = rows(store, sa.select(schema.consent_history))
    assert all(r["ip"] and r["text_version"] for r in history
               if r["source"] == "signup_form")
    statuses = Counter(r["status"] for r in rows(store, sa.select(schema.consents).where(
        schema.consents.c.channel == "email", schema.consents.c.purpose == "marketing")))
    assert statuses["opted_in"] > statuses["opted_out"] > 0
    assert statuses["opted_in"] > 0.6 * demo.identified


def test_declared_fields(demo: DemoSummary, store: Store) -> None:
    with store.read() as conn:
        fields = {spec.name: spec for spec in list_fields(conn)}
    assert fields["plan"].type == "enum"
    assert fields["plan"].values == ("free", "starter", "pro", "enterprise")
    assert fields["lifetime_value"].type == "number"
    assert fields["signup_date"].type == "date"
    assert fields["interests"].type == "list"
    assert fields["employees"].entity == "company"


def test_companies_look_real(demo: DemoSummary, store: Store) -> None:
    companies = rows(store, sa.select(schema.companies))
    assert len({r["name"] for r in companies}) == len(companies)
    for company in companies:
        assert company["domain"]
        assert "." in company["domain"]
        traits = company["attributes"]
        assert {"industry", "employees", "plan", "country"} <= traits.keys()
        assert traits["employees"] >= 1


def test_events_span_the_window_and_none_is_in_the_future(demo: DemoSummary, store: Store,
                                                          clock: FakeClock) -> None:
    e = schema.events
    with store.read() as conn:
        first, last = conn.execute(sa.select(sa.func.min(e.c.timestamp),
                                             sa.func.max(e.c.timestamp))).one()
        sources = set(conn.execute(sa.select(e.c.source).distinct()).scalars())
    now = clock.now_ms()
    assert now - SMALL["days"] * DAY <= first < now - (SMALL["days"] - 2) * DAY
    assert now - DAY < last <= now
    assert sources == {"web", "app", "email"}


def test_weekdays_are_busier_than_weekends(demo: DemoSummary, store: Store,
                                           clock: FakeClock) -> None:
    stamps = [r["timestamp"] for r in rows(store, sa.select(schema.events.c.timestamp))]
    days = Counter(dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date() for ms in stamps)
    weekday = [n for day, n in days.items() if day.weekday() < 5]
    weekend = [n for day, n in days.items() if day.weekday() >= 5]
    assert weekend, "a 14-day window has weekends"
    assert sum(weekday) / len(weekday) > 1.5 * sum(weekend) / len(weekend)


def test_newsletter_engagement_rates(store: Store, clock: FakeClock) -> None:
    generate_demo(store, clock, contacts=1_000, days=28, seed=5)
    e = schema.events
    names = Counter(r["name"] for r in rows(store, sa.select(e.c.name, e.c.properties).where(
        e.c.source == "email")) if r["properties"]["campaign_name"] == "Weekly newsletter")
    delivered = names["Email Delivered"]
    assert delivered > 500
    assert 0.18 <= names["Email Opened"] / delivered <= 0.37
    assert 0.01 <= names["Email Link Clicked"] / delivered <= 0.06


def test_power_users_and_funnel(store: Store, clock: FakeClock) -> None:
    summary = generate_demo(store, clock, contacts=1_000, days=28, seed=5)
    e = schema.events
    per_contact = Counter(r["contact_id"] for r in rows(store, sa.select(e.c.contact_id)))
    busiest = per_contact.most_common(1)[0][1]
    assert busiest > 8 * summary.events / summary.contacts
    by_name = Counter(r["name"] for r in rows(store, sa.select(e.c.name).where(
        e.c.type == "track")))
    activated = len({r["contact_id"] for r in rows(store, sa.select(e.c.contact_id).where(
        e.c.name == "Project Created"))})
    assert summary.contacts > by_name["Signed Up"] > activated > by_name["Subscription Started"]
    assert by_name["Subscription Started"] > 0
    assert by_name["Order Completed"] > 0


def test_progress_reports_every_stage(store: Store, clock: FakeClock) -> None:
    seen: dict[str, tuple[int, int]] = {}
    generate_demo(store, clock, contacts=100, days=7,
                  progress=lambda stage, done, total: seen.__setitem__(stage, (done, total)))
    assert list(seen) == ["Simulating people", "Ingesting events", "Consent and suppressions"]
    assert all(done == total for done, total in seen.values())


def test_refuses_a_workspace_with_data(demo: DemoSummary, store: Store,
                                       clock: FakeClock) -> None:
    with pytest.raises(Conflict, match="empty database"):
        generate_demo(store, clock, contacts=100, days=7)
