"""Routing leads to reps: strategies, capacity and away skipping, territory pools, the
fallback, hand-off tasks through the outbox (once), routing on entering a stage."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.clock import FakeClock
from cadenza.errors import IntegrityViolation, NotFound, ValidationFailed
from cadenza.leads import (
    ASSIGNED_EVENT,
    UNASSIGNED_EVENT,
    LifecycleListener,
    LifecycleService,
    RoutingService,
)
from cadenza.leads.routing_assign import route_contacts, smooth_sequence
from cadenza.store import Store, schema
from cadenza.store.changes import mark_changed
from tests.channels.support import dispatch, make_dispatcher
from tests.leads.lifecycle_support import contact, contacts, declare, named_events, rows

HOUR = 3_600_000


class Crash(Exception):
    """A crash in the middle of a transaction."""


@pytest.fixture
def routing(store: Store, clock: FakeClock) -> RoutingService:
    """The routing service, with the fields the tests' conditions use declared."""
    declare(store, clock.now_ms(), "country", "region")
    declare(store, clock.now_ms(), "employees", kind="number")
    return RoutingService(store, clock)


def add_reps(routing: RoutingService, *keys: str, **fields: Any) -> None:
    for key in keys:
        routing.save_rep(key, {"name": key.title(), **fields})


def assigned_reps(store: Store, status: str = "open") -> Counter[str]:
    a, r = schema.lead_assignments, schema.sales_reps
    with store.read() as conn:
        return Counter(str(k) for k, in conn.execute(
            sa.select(r.c.key).select_from(a.join(r, r.c.id == a.c.rep_id))
            .where(a.c.status == status)))


def test_round_robin_rotates_and_repeats_are_no_ops(store: Store, clock: FakeClock,
                                                     routing: RoutingService) -> None:
    add_reps(routing, "ann", "bob", "cy")
    routing.save_rule("all", {"pool": {"reps": ["ann", "bob", "cy"]}})
    ids = contacts(store, clock.now_ms(), 7)
    result = routing.route(ids)
    assert [a.rep.key for a in result.assigned if a.rep] == [
        "ann", "bob", "cy", "ann", "bob", "cy", "ann"]
    assert routing.rule("all").cursor == routing.reps()[0]["id"]  # ann took the last one
    again = routing.route(ids)  # a repeat is a no-op
    assert not again.assigned
    assert set(again.already) == set(ids)
    assert len(rows(store, schema.lead_assignments)) == 7
    assert len(rows(store, schema.outbox)) == 7
    more = routing.route(contacts(store, clock.now_ms(), 2))
    assert [a.rep.key for a in more.assigned if a.rep] == ["bob", "cy"]  # cursor persisted


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eligible=st.lists(st.booleans(), min_size=2, max_size=6).filter(any),
       batches=st.lists(st.integers(1, 9), min_size=1, max_size=5))
def test_round_robin_is_fair_among_eligible_reps(store: Store, clock: FakeClock,
                                                 routing: RoutingService,
                                                 eligible: list[bool],
                                                 batches: list[int]) -> None:
    clock.advance(1)
    tag = f"x{clock.now_ms()}"
    keys = [f"{tag}-{i}" for i in range(len(eligible))]
    for key, ok in zip(keys, eligible, strict=True):
        routing.save_rep(key, {"name": key, "status": "active" if ok else "inactive"})
    routing.save_rule(tag, {"pool": {"reps": keys}, "position": 0})
    got: Counter[str] = Counter()
    for size in batches:
        result = routing.route(contacts(store, clock.now_ms(), size))
        got.update(a.rep.key for a in result.assigned if a.rep)
    counts = [got[k] for k, ok in zip(keys, eligible, strict=True) if ok]
    assert max(counts) - min(counts) <= 1
    assert sum(counts) == sum(batches)
    assert all(got[k] == 0 for k, ok in zip(keys, eligible, strict=True) if not ok)


def test_weighted_shares_follow_weights(store: Store, clock: FakeClock,
                                        routing: RoutingService) -> None:
    for key, weight in (("w1", 1), ("w2", 2), ("w3", 3)):
        routing.save_rep(key, {"weight": weight})
    routing.save_rule("w", {"pool": {"reps": ["w1", "w2", "w3"]}, "strategy": "weighted"})
    for _ in range(4):  # several calls: the position in the sequence persists
        routing.route(contacts(store, clock.now_ms(), 15))
    assert assigned_reps(store) == {"w1": 10, "w2": 20, "w3": 30}
    order = smooth_sequence(((1, 1), (2, 2), (3, 3)))
    assert order == (3, 2, 1, 3, 2, 3)  # smooth: no rep twice in a row when avoidable


def test_capacity_and_away_are_skipped(store: Store, clock: FakeClock,
                                       routing: RoutingService) -> None:
    routing.save_rep("full", {"capacity": 1})
    routing.save_rep("gone", {"status": "away"})
    routing.save_rep("later", {"status": "away", "away_until": clock.now_ms() + HOUR})
    routing.save_rep("here", {})
    routing.save_rep("off", {"status": "inactive"})
    routing.save_rule("r", {"pool": {"reps": ["full", "gone", "later", "here", "off"]}})
    first = routing.route(contacts(store, clock.now_ms(), 4))
    assert [a.rep.key for a in first.assigned if a.rep] == ["full", "here", "here", "here"]
    assert first.assigned[1].reason["skipped"] == {
        "full": "full (1/1)", "gone": "away", "later": f"away until {clock.now_ms() + HOUR}",
        "off": "inactive"}
    clock.advance(HOUR)  # "later" is back by itself
    second = routing.route(contacts(store, clock.now_ms(), 2))
    assert [a.rep.key for a in second.assigned if a.rep] == ["later", "here"]
    routing.set_availability("gone", "active")
    assert routing.rep("full")["open_assignments"] == 1


def test_territory_and_company_pools(store: Store, clock: FakeClock,
                                     routing: RoutingService) -> None:
    routing.save_rep("de1", {"attributes": {"territory": "DE"}})
    routing.save_rep("de2", {"attributes": {"territory": "DE"}})
    routing.save_rep("fr1", {"attributes": {"territory": "FR"}})
    routing.save_rep("big", {"attributes": {"band": "enterprise"}})
    declare(store, clock.now_ms(), "band", entity="company")
    routing.save_rule("enterprise", {"pool": {"match": {"band": "company.band"}},
                                     "strategy": "round_robin"})
    routing.save_rule("enterprise", {"pool": {"match": {"band": "company.band"}},
                                     "when": {"attr": "employees", "gte": 500}})
    routing.save_rule("territory", {"pool": {"match": {"territory": "country"}}})
    now = clock.now_ms()
    big = contact(store, now, "big@example.com", country="DE", employees=900)
    with store.begin() as conn:
        company = conn.execute(sa.insert(schema.companies).values(
            group_id="acme", name="Acme", attributes={"band": "enterprise"}, created_at=now,
            updated_at=now).returning(schema.companies.c.id)).scalar_one()
        conn.execute(sa.insert(schema.company_members).values(
            company_id=company, contact_id=big, created_at=now))
    de = [contact(store, now, country="DE") for _ in range(4)]
    fr = contact(store, now, country="FR")
    it = contact(store, now, country="IT")
    result = routing.route([big, *de, fr, it])
    by_contact = {a.contact_id: a for a in result.assigned + result.unassigned}
    assert by_contact[big].rep is not None
    assert by_contact[big].rep.key == "big"
    assert by_contact[big].profile["company"] == "Acme"
    assert Counter(by_contact[c].rep.key for c in de if by_contact[c].rep) == {
        "de1": 2, "de2": 2}
    assert by_contact[fr].rep is not None
    assert by_contact[fr].rep.key == "fr1"
    assert by_contact[it].rep is None
    assert by_contact[it].reason["reason"] == "no rep matches territory = 'IT'"


def test_no_eligible_rep_falls_back_then_retries(store: Store, clock: FakeClock,
                                                 routing: RoutingService) -> None:
    who = contact(store, clock.now_ms(), "lee@example.com", name="Lee")
    first = routing.route([who])
    assert first.unassigned[0].reason["reason"] == "no routing rule matches this contact"
    (task,) = rows(store, schema.outbox)
    assert task["idempotency_key"] == f"assign:{first.unassigned[0].id}"
    assert task["channel"] == "task"
    assert task["payload"]["params"]["queue"] == "sales-unassigned"
    assert task["payload"]["entry"]["title"] == "Unassigned lead: Lee"
    assert [e["properties"]["reason"] for e in named_events(store, UNASSIGNED_EVENT)] == [
        "no routing rule matches this contact"]
    assert not routing.route([who]).unassigned  # still nobody: no second row, no task
    assert len(rows(store, schema.outbox)) == 1

    routing.save_rep("ann", {"capacity": 0})
    routing.save_rule("r", {"pool": {"reps": ["ann"]}})
    assert not routing.route([who]).assigned
    routing.save_rep("ann", {"capacity": 5})
    again = routing.route([who])
    (made,) = again.assigned
    assert made.previous_id == first.unassigned[0].id
    states = {r["id"]: r["status"] for r in rows(store, schema.lead_assignments)}
    assert states == {first.unassigned[0].id: "reassigned", made.id: "open"}
    assert [e["properties"]["rep"] for e in named_events(store, ASSIGNED_EVENT)] == ["ann"]


def test_hand_off_task_is_written_once_and_dispatched_once(
        store: Store, clock: FakeClock, routing: RoutingService) -> None:
    routing.save_rep("ann", {"name": "Ann Lee", "email": "ann@example.com"})
    routing.save_rule("r", {"pool": {"reps": ["ann"]}, "queue": "inside-sales", "sla": "4h"})
    who = contact(store, clock.now_ms(), "kim@example.com", name="Kim <b>{{ x }}</b>")

    def crash_before_commit() -> None:
        with store.begin() as conn:
            route_contacts(conn, [who], clock.now_ms(), routing.options)
            raise Crash

    with pytest.raises(Crash):  # a crash before commit writes nothing
        crash_before_commit()
    assert not rows(store, schema.lead_assignments)
    assert not rows(store, schema.outbox)
    (made,) = routing.route([who]).assigned
    routing.route([who])
    (task,) = rows(store, schema.outbox)
    assert task["idempotency_key"] == f"assign:{made.id}"
    details = task["payload"]["params"]["details"]
    assert details["lead"]["email"] == "kim@example.com"
    assert details["why"]["rule"] == "r"
    assert details["sla_due_at"] == clock.now_ms() + 4 * HOUR
    report = dispatch(make_dispatcher(store, clock))
    assert report.sent == 1, report
    dispatch(make_dispatcher(store, clock))
    (created,) = rows(store, schema.tasks)
    assert created["title"] == "New lead for Ann Lee: Kim <b>{{ x }}</b>"  # not templated
    assert created["queue"] == "inside-sales"
    assert created["idempotency_key"] == f"assign:{made.id}"
    with pytest.raises(IntegrityViolation), store.begin() as conn:  # the database refuses
        conn.execute(sa.insert(schema.lead_assignments).values(
            contact_id=who, status="open", reason={}, assigned_at=clock.now_ms()))


def test_entering_a_routing_stage_routes_in_the_same_transaction(
        store: Store, clock: FakeClock, routing: RoutingService) -> None:
    declare(store, clock.now_ms(), "fit", kind="number")
    LifecycleService(store, clock).set_stages({"stages": [
        {"key": "lead"},
        {"key": "mql", "route": True, "rules": [{"when": {"attr": "fit", "gte": 60}}]},
        {"key": "customer"}]})
    routing.save_rep("ann", {})
    routing.save_rule("r", {"pool": {"reps": ["ann"]}})
    hot = contact(store, clock.now_ms(), fit=80)
    cold = contact(store, clock.now_ms(), fit=10)
    with store.begin() as conn:
        mark_changed(conn, [hot, cold], clock.now_ms(), consumers=("lifecycle",))
        LifecycleListener().apply(conn, list(range(schema.PARTITIONS)), clock.now_ms(), 100)
    made = rows(store, schema.lead_assignments)
    assert [(a["contact_id"], a["status"]) for a in made] == [(hot, "open")]
    assert made[0]["reason"]["cause"] == "stage:mql"


@pytest.mark.parametrize(("key", "document", "field", "words"), [
    ("r", {"pool": {"reps": ["nobody"]}}, "pool.reps[0]", "not a sales rep"),
    ("r", {"strategy": "specific", "rep": "ghost"}, "rep", "not a sales rep"),
    ("r", {"strategy": "random"}, "strategy", "round_robin"),
    ("r", {"when": {"attr": "shoe_size", "gt": 3}}, "when", "shoe_size"),
    ("r", {"pool": {"match": {"territory": "planet"}}}, "pool.match.territory",
     "not a declared"),
    ("r", {"sla": "soon"}, "sla", ""),
    ("r", {"escalation": {"manager": "ghost"}}, "escalation.manager", "not a sales rep"),
    ("Bad Key", {}, "key", "lowercase"),
])
def test_bad_rules_are_refused(store: Store, clock: FakeClock, routing: RoutingService,
                               key: str, document: dict[str, Any], field: str,
                               words: str) -> None:
    routing.save_rep("ann", {})
    with pytest.raises(ValidationFailed) as caught:
        routing.save_rule(key, document)
    assert caught.value.field.startswith(field)
    assert words in caught.value.reason
    assert routing.rules() == []


@pytest.mark.parametrize(("document", "field"), [
    ({"weight": 0}, "weight"), ({"weight": -2}, "weight"), ({"capacity": -1}, "capacity"),
    ({"status": "holiday"}, "status"), ({"email": "not-an-address"}, "email"),
    ({"attributes": {"territory": ["DE"]}}, "attributes"), ({"colour": "red"}, "colour"),
])
def test_bad_reps_are_refused(routing: RoutingService, document: dict[str, Any],
                              field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        routing.save_rep("ann", document)
    assert caught.value.field == field
    assert routing.reps() == []


def test_concurrent_routing_assigns_each_contact_once(store: Store, clock: FakeClock,
                                                      routing: RoutingService) -> None:
    add_reps(routing, "ann", "bob")
    routing.save_rule("r", {"pool": {"reps": ["ann", "bob"]}})
    ids = contacts(store, clock.now_ms(), 40)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda part: routing.route(ids[part::2] + ids[::3]), range(4)))
    assert sum(len(r.assigned) for r in results) == 40
    assert len(rows(store, schema.lead_assignments)) == 40
    assert len(rows(store, schema.outbox)) == 40
    assert assigned_reps(store) == {"ann": 20, "bob": 20}


def test_route_a_segment(store: Store, clock: FakeClock, routing: RoutingService) -> None:
    add_reps(routing, "ann")
    routing.save_rule("r", {"pool": {"reps": ["ann"]}})
    members = contacts(store, clock.now_ms(), 3)
    contacts(store, clock.now_ms(), 2)  # not members
    now = clock.now_ms()
    with store.begin() as conn:
        segment = conn.execute(sa.insert(schema.segments).values(
            key="hot", name="Hot", description="", kind="static", definition=None,
            depends_on=[], status="active", member_count=3, created_at=now, updated_at=now)
            .returning(schema.segments.c.id)).scalar_one()
        conn.execute(sa.insert(schema.segment_members), [
            {"segment_id": segment, "contact_id": c, "since": now, "source": "api"}
            for c in members])
    result = routing.route(segment="hot")
    assert sorted(a.contact_id for a in result.assigned) == members
    with pytest.raises(NotFound):
        routing.route(segment="cold")
