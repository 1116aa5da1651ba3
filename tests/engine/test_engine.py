"""The engine end to end on a fake clock: entries, waits, branches, waits for events, goals,
and the rows it writes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from cadenza.clock import FakeClock
from cadenza.engine import Engine, shadow_report
from cadenza.events import EventService
from cadenza.journeys import JourneyService
from cadenza.store import Store
from tests.engine.conftest import DAY, REFERENCE, track


def outbox_by_node(store: Store) -> Counter[str]:
    with store.read() as conn:
        return Counter(n for n, in conn.exec_driver_sql("SELECT node FROM outbox"))


def statuses(store: Store) -> Counter[tuple[str, str]]:
    with store.read() as conn:
        return Counter((s, n) for s, n in conn.exec_driver_sql(
            "SELECT status, node FROM enrollments"))


def test_reference_journey_moves_every_contact_once(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Callable[[str], int], make_contacts: Callable[..., list[int]]) -> None:
    publish(REFERENCE)
    ids = make_contacts(30)
    for i in range(30):
        track(events, f"user-{i}", "signed_up", f"s-{i}")
    report = engine.run_once()
    assert report.entered == 30
    assert outbox_by_node(store) == {"welcome": 30}
    assert statuses(store) == {("waiting", "settle"): 30}

    clock.advance(2 * DAY - 1)
    assert engine.run_once().runs == 0  # not a millisecond early
    clock.advance(1)
    engine.run_once()
    assert outbox_by_node(store) == {"welcome": 30, "pro-tips": 10, "basics": 20}
    assert statuses(store) == {("waiting", "wait-buy"): 30}

    for i in range(0, 30, 5):  # six buy
        track(events, f"user-{i}", "purchased", f"p-{i}")
    engine.run_once()
    assert statuses(store) == {("waiting", "wait-buy"): 24, ("completed", "wait-buy"): 6}

    clock.advance(3 * DAY)
    engine.run_once()
    assert outbox_by_node(store)["last-chance"] == 24
    assert statuses(store) == {("completed", "last-chance"): 24, ("completed", "wait-buy"): 6}
    # Running again changes nothing: every side effect exists once.
    clock.advance(10 * DAY)
    assert engine.run_once().outbox == 0
    with store.read() as conn:
        keys = [k for k, in conn.exec_driver_sql("SELECT idempotency_key FROM outbox")]
        assert len(keys) == len(set(keys)) == 30 + 30 + 24
        stats = {n: (e, d) for n, e, d in conn.exec_driver_sql(
            "SELECT node, entered, departed FROM journey_step_stats")}
    assert stats["welcome"] == (30, 30)
    assert stats["wait-buy"] == (30, 30)
    assert stats["last-chance"] == (24, 24)
    assert len(ids) == 30


def test_branch_decision_is_explained_in_history(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Callable[[str], int], make_contacts: Callable[..., list[int]]) -> None:
    publish(REFERENCE)
    make_contacts(3)
    track(events, "user-0", "signed_up", "s-0")
    engine.run_once()
    clock.advance(2 * DAY)
    engine.run_once()
    with store.read() as conn:
        rows = [r for r, in conn.exec_driver_sql(
            "SELECT steps FROM journey_history ORDER BY enrollment_id, seq")]
    from cadenza.store import loads

    passes = [loads(r) for r in rows]
    assert passes[0][0][:2] == ["welcome", "sent"]
    branch = next(s for s in passes[1] if s[0] == "by-plan")
    assert branch[2]["goto"] == "pro-tips"
    assert branch[2]["seen"] == {"attr.plan": "pro"}


def prepare_reference(store: Store, clock: FakeClock) -> JourneyService:
    """Templates and the `plan` field the reference journey needs, and the service."""
    from cadenza.channels import TemplateService
    from cadenza.contacts import FieldSpec, declare_field

    templates = TemplateService(store, clock)
    for key in ("welcome", "pro-tips", "basics", "last-chance", "extra"):
        templates.save(key, "log", key, f"{key} for {{{{ contact.email or 'you' }}}}")
    with store.begin() as conn:
        declare_field(conn, FieldSpec(name="plan", type="string"), clock.now_ms())
    return JourneyService(store, clock)


def test_shadow_version_is_compared_with_live_over_the_same_entries(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        make_contacts: Callable[..., list[int]]) -> None:
    journeys = prepare_reference(store, clock)
    journeys.save_draft(REFERENCE)
    journeys.publish("reference")
    # The candidate sends an extra message to basic-plan contacts before the wait.
    candidate = REFERENCE.replace(
        "  - id: basics\n    send: {channel: log, template: basics}\n",
        "  - id: basics\n    send: {channel: log, template: basics}\n"
        "  - id: extra\n    send: {channel: log, template: extra}\n")
    assert candidate != REFERENCE
    journeys.save_draft(candidate)
    journeys.publish("reference", shadow=True)
    make_contacts(9)
    for i in range(9):
        track(events, f"user-{i}", "signed_up", f"s-{i}")
    engine.run_once()
    clock.advance(2 * DAY)
    engine.run_once()
    with store.read() as conn:
        report = shadow_report(conn, "reference")
        shadow_statuses = Counter(s for s, in conn.exec_driver_sql(
            "SELECT status FROM outbox WHERE shadow = " + (
                "true" if store.dialect == "postgresql" else "1")))
    assert report["live"]["entered"] == report["shadow"]["entered"] == 9
    compare = report["compare"]["messages"]
    assert compare["welcome"]["live"] == compare["welcome"]["shadow"] == 9
    assert compare["extra"] == {"live": 0, "shadow": 6, "live_rate": 0.0,
                                "shadow_rate": round(6 / 9, 4)}
    # Shadow rows are in the outbox for the dispatcher to render, never to send.
    assert set(shadow_statuses) == {"pending"}


def test_enrollments_follow_a_merge(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Callable[[str], int]) -> None:
    publish(REFERENCE)
    # A known user and an anonymous visitor both sign up, then the visitor turns out to be
    # the user: one journey run carries on (the user's), the visitor's ends as merged.
    events.ingest([{"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}}])
    events.ingest([{"type": "track", "userId": "u-1", "event": "signed_up"},
                   {"type": "track", "anonymousId": "anon-1", "event": "signed_up"},
                   {"type": "track", "anonymousId": "anon-2", "event": "signed_up"}])
    engine.run_once()
    events.ingest([{"type": "identify", "userId": "u-1", "anonymousId": "anon-1"},
                   {"type": "identify", "userId": "u-2", "anonymousId": "anon-2"}])
    with store.read() as conn:
        rows = sorted(conn.exec_driver_sql(
            "SELECT c.user_id, e.status, e.outcome FROM enrollments e "
            "JOIN contacts c ON c.id = e.contact_id").all(), key=str)
    assert [tuple(r) for r in rows] == [
        ("u-1", "exited", "merged"), ("u-1", "waiting", None), ("u-2", "waiting", None)]
    clock.advance(2 * DAY)
    engine.run_once()  # the moved enrollment runs on under its new contact
    assert outbox_by_node(store)["welcome"] == 3
    assert sum(outbox_by_node(store).values()) == 5


def test_goal_conditions_on_contact_attributes_use_the_batch_facts(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Callable[[str], int], make_contacts: Callable[..., list[int]]) -> None:
    publish(REFERENCE.replace(
        "entry: {event: signed_up}\n",
        "entry: {event: signed_up}\n"
        "exit_when: [{event: purchased, where: {attr: plan, eq: pro}, name: pro-bought}]\n"))
    make_contacts(6)  # user-0 and user-3 are pro
    for i in range(6):
        track(events, f"user-{i}", "signed_up", f"s-{i}")
    engine.run_once()
    for i in range(6):  # everyone buys in the same pass; only the pro contacts meet the goal
        track(events, f"user-{i}", "purchased", f"p-{i}")
    engine.run_once()
    with store.read() as conn:
        exited = sorted(u for u, in conn.exec_driver_sql(
            "SELECT c.user_id FROM enrollments e JOIN contacts c ON c.id = e.contact_id "
            "WHERE e.outcome = 'goal:pro-bought'"))
        goals = [g for g, in conn.exec_driver_sql("SELECT goal FROM conversions")]
    assert exited == ["user-0", "user-3"]
    assert goals == ["pro-bought", "pro-bought"]
