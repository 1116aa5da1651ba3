"""First touch and its SLA: states, touching, closing, the SLA job's escalation and
reassignment with a fake clock, and the job's wiring from settings."""

from __future__ import annotations

import pytest

from cadenza.clock import FakeClock
from cadenza.errors import Conflict
from cadenza.leads import SLA_EVENT, RoutingService, RoutingSlaJob, lead_listeners
from cadenza.leads.routing_assign import RoutingOptions
from cadenza.settings import Settings
from cadenza.store import Store, schema
from tests.leads.lifecycle_support import contact, named_events, rows

HOUR = 3_600_000


@pytest.fixture
def routing(store: Store, clock: FakeClock) -> RoutingService:
    """Reps ann and bob, manager max; one rule with a 4h SLA escalating to max."""
    svc = RoutingService(store, clock, RoutingOptions(due_soon_ms=HOUR))
    for key in ("ann", "bob", "max"):
        svc.save_rep(key, {"name": key.title()})
    svc.save_rule("r", {"pool": {"reps": ["ann", "bob"]}, "sla": "4h",
                        "escalation": {"manager": "max"}})
    return svc


def sla_job(routing: RoutingService) -> RoutingSlaJob:
    return RoutingSlaJob(60_000, routing.options)


def test_sla_states_and_touch(store: Store, clock: FakeClock, routing: RoutingService) -> None:
    (made,) = routing.route([contact(store, clock.now_ms())]).assigned
    assert routing.assignment(made.id)["sla_state"] == "on_time"
    clock.advance(3 * HOUR + 1)
    assert routing.assignment(made.id)["sla_state"] == "due_soon"
    assert [a["id"] for a in routing.assignments(rep="ann", sla="due_soon").items] == [made.id]
    assert routing.assignments(rep="bob").items == []
    shown, changed = routing.touch(made.id, note="called, left a voicemail")
    assert changed
    assert shown["status"] == "touched"
    assert shown["sla_state"] == "met"
    assert routing.touch(made.id)[1] is False  # a repeat changes nothing
    clock.advance(2 * HOUR)
    assert sla_job(routing).run(store, clock.now_ms()).lapsed == []  # touched in time
    closed, _ = routing.close(made.id)
    assert closed["status"] == "closed"
    with pytest.raises(Conflict, match="closed"):
        routing.touch(made.id)


def test_lapsed_sla_escalates_and_reassigns(store: Store, clock: FakeClock,
                                            routing: RoutingService) -> None:
    who = contact(store, clock.now_ms(), "zoe@example.com", name="Zoe")
    (first,) = routing.route([who]).assigned
    assert first.rep is not None
    assert first.rep.key == "ann"
    clock.advance(4 * HOUR + 1)
    assert routing.assignment(first.id)["sla_state"] == "lapsed"
    report = sla_job(routing).run(store, clock.now_ms())
    assert report.lapsed == [first.id]
    (second_id,) = report.reassigned.values()
    second = routing.assignment(second_id)
    assert (second["rep"], second["previous_id"], second["status"]) == ("bob", first.id, "open")
    assert second["sla_due_at"] == clock.now_ms() + 4 * HOUR
    assert routing.assignment(first.id)["status"] == "reassigned"
    tasks = {r["idempotency_key"]: r for r in rows(store, schema.outbox)}
    escalation = tasks[f"escalate:{first.id}"]["payload"]
    assert escalation["params"]["queue"] == "max"
    assert escalation["entry"]["title"] == "SLA lapsed: Zoe was not touched by Ann in time"
    assert tasks[f"assign:{second_id}"]["payload"]["params"]["queue"] == "bob"
    (lapsed,) = named_events(store, SLA_EVENT)
    assert lapsed["properties"] == {"assignment_id": first.id, "rep": "ann", "rule": "r",
                                    "reassigned_to": "bob"}
    assert sla_job(routing).run(store, clock.now_ms()).lapsed == []  # done once

    routing.set_availability("ann", "away")  # bob lapses too, and nobody else can take it
    clock.advance(4 * HOUR + 1)
    report = sla_job(routing).run(store, clock.now_ms())
    assert report.escalated == [second_id]
    assert not report.reassigned
    assert routing.assignment(second_id)["status"] == "escalated"
    assert routing.touch(second_id)[0]["status"] == "touched"  # bob may still take it
    assert len(named_events(store, SLA_EVENT)) == 2


def test_many_lapsed_assignments_in_batches(store: Store, clock: FakeClock,
                                            routing: RoutingService) -> None:
    ids = [contact(store, clock.now_ms()) for _ in range(7)]
    routing.route(ids)
    clock.advance(5 * HOUR)
    report = RoutingSlaJob(60_000, routing.options, batch=3).run(store, clock.now_ms())
    assert len(report.lapsed) == 7
    assert len(report.reassigned) == 7
    owners = {(a["contact_id"], a["rep"]) for a in routing.assignments(status="open").items}
    before = {(a["contact_id"], a["rep"]) for a in routing.assignments(status="reassigned")
              .items}
    assert len(owners) == 7
    assert not owners & before


def test_sla_job_comes_from_settings() -> None:
    _, jobs = lead_listeners(Settings.load(routing_sla_check_s=30,
                                           routing_fallback_queue="triage"))
    (job,) = [j for j in jobs if j.name == "routing-sla"]
    assert job.interval_ms == 30_000
    assert job.options.fallback_queue == "triage"
    _, jobs = lead_listeners(Settings.load(routing_sla_check_s=0))
    assert all(j.name != "routing-sla" for j in jobs)
