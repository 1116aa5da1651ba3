"""The real-time listener: events and changes re-evaluate only the contacts they touched
against only the segments they can affect; entry/exit events start journeys; the recompute
finds and reports what real time missed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.engine import run_due_jobs
from cadenza.events import EventService
from cadenza.segments import RecomputeJob, SegmentService, segment_listeners
from cadenza.settings import Settings
from cadenza.store import Store, changes, dumps, schema
from tests.engine.conftest import insert_live_journey
from tests.segments.segment_support import (
    declare,
    engine_with_listener,
    history,
    identify,
    members,
    segment_events,
    service,
    track,
)

DAY = 86_400_000


@pytest.fixture
def svc(store: Store, clock: FakeClock) -> SegmentService:
    declare(store, clock, plan="string", city="string")
    return service(store, clock)


def test_an_event_enters_and_a_closing_window_exits(svc: SegmentService, store: Store,
                                                     clock: FakeClock,
                                                     events: EventService) -> None:
    engine, _listener = engine_with_listener(store, clock, window_scan_ms=1_000)
    ann = identify(events, "ann")
    svc.create({"key": "buyers", "condition": {"count": "purchased", "within": "30d"}})
    track(events, "ann", "purchased")
    engine.run_once()
    assert members(store, "buyers") == {ann}
    assert segment_events(store) == [(ann, "Segment Entered", "buyers")]
    clock.advance(20 * DAY)
    engine.run_once()
    assert members(store, "buyers") == {ann}
    clock.advance(11 * DAY)  # the purchase is 31 days old: the window scan notices
    engine.run_once()
    assert members(store, "buyers") == set()
    assert history(store, "buyers") == [(ann, "entered", "event"), (ann, "exited", "window")]
    assert svc.get("buyers").member_count == 0


def test_an_attribute_change_exits(svc: SegmentService, store: Store, clock: FakeClock,
                                   events: EventService) -> None:
    engine, _ = engine_with_listener(store, clock)
    ann = identify(events, "ann", plan="pro")
    svc.create({"key": "pros", "condition": {"attr": "plan", "eq": "pro"}})
    assert members(store, "pros") == {ann}
    identify(events, "ann", plan="basic")
    engine.run_once()
    assert members(store, "pros") == set()
    assert segment_events(store) == [(ann, "Segment Exited", "pros")]


def test_only_affected_segments_are_evaluated(svc: SegmentService, store: Store,
                                              clock: FakeClock,
                                              events: EventService) -> None:
    engine, listener = engine_with_listener(store, clock)
    identify(events, "ann", plan="basic")
    identify(events, "bob", plan="basic")
    svc.create({"key": "buyers", "condition": {"count": "purchased", "gte": 1}})
    svc.create({"key": "pros", "condition": {"attr": "plan", "eq": "pro"}})
    svc.create({"key": "vips", "condition": {"tag": "vip"}})
    svc.create({"key": "pro-buyers", "condition": {"all": [{"segment": "pros"},
                                                           {"segment": "buyers"}]}})

    def evaluations() -> int:
        before = listener.evaluations
        engine.run_once()
        return listener.evaluations - before

    engine.run_once()  # the identify calls above
    track(events, "ann", "viewed")
    assert evaluations() == 0  # nothing reads "viewed"
    identify(events, "ann", city="Oslo")
    assert evaluations() == 0  # nothing reads "city"
    track(events, "ann", "purchased")
    # buyers for ann; she entered it, so pro-buyers (which references it) too.
    assert evaluations() == 2
    assert members(store, "buyers") == {members(store, "buyers").pop()}
    identify(events, "bob", plan="pro")
    assert evaluations() == 2  # pros, then pro-buyers because bob entered pros
    assert members(store, "pro-buyers") == set()
    track(events, "bob", "purchased")
    assert evaluations() == 2
    bob = members(store, "pros").pop()
    assert members(store, "pro-buyers") == {bob}
    with store.begin() as conn:  # a journey tags ann: its writer queues the change
        conn.execute(schema.contact_tags.insert().values(
            contact_id=min(members(store, "buyers")), tag="vip", created_at=clock.now_ms()))
        changes.mark_changed(conn, members(store, "buyers") - {bob}, clock.now_ms())
    assert evaluations() == 2  # pros and vips read what a change can touch; buyers not
    assert len(members(store, "vips")) == 1


def test_segment_entry_starts_a_journey_end_to_end(svc: SegmentService, store: Store,
                                                   clock: FakeClock,
                                                   events: EventService) -> None:
    engine, _ = engine_with_listener(store, clock)
    insert_live_journey(store, clock, """
journey: welcome-buyer
entry: {segment: buyers}
steps:
  - {id: hello, send: {channel: log, template: hello}}
""")
    insert_live_journey(store, clock, """
journey: lost-buyer
entry: {segment: buyers, on: exit}
steps:
  - {id: bye, send: {channel: log, template: bye}}
""")
    svc.create({"key": "buyers", "condition": {"count": "purchased", "within": "1d"}})
    ann = identify(events, "ann")
    identify(events, "bob")
    # A client cannot fake the segments domain's events.
    events.ingest([{"type": "track", "userId": "bob", "event": "Segment Entered",
                    "messageId": "spoof", "properties": {"segment": "buyers"}}])
    track(events, "ann", "purchased")
    engine.run_once()  # the listener: ann enters, "Segment Entered" is logged
    engine.run_once()  # the engine: the event enters the journey
    enrolled = _enrollments(store)
    assert enrolled == [("welcome-buyer", ann)]
    clock.advance(2 * DAY)
    svc.recompute("buyers")  # the window closed: the recompute takes ann out
    engine.run_once()
    assert _enrollments(store) == [("lost-buyer", ann), ("welcome-buyer", ann)]
    with store.read() as conn:
        entry = conn.execute(sa.select(schema.outbox.c.payload)
                             .where(schema.outbox.c.template == "bye")).scalar_one()
    assert (entry if isinstance(entry, dict) else __import__("orjson").loads(entry)
            )["entry"] == {"segment": "buyers"}


def _enrollments(store: Store) -> list[tuple[str, int]]:
    e, j = schema.enrollments, schema.journeys
    with store.read() as conn:
        return sorted((k, int(c)) for k, c in conn.execute(
            sa.select(j.c.key, e.c.contact_id).join(j, j.c.id == e.c.journey_id)))


def test_recompute_reports_drift(svc: SegmentService, store: Store, clock: FakeClock,
                                 events: EventService) -> None:
    engine, _ = engine_with_listener(store, clock)
    ann = identify(events, "ann", plan="basic")
    bob = identify(events, "bob", plan="pro")
    svc.create({"key": "pros", "condition": {"attr": "plan", "eq": "pro"}})
    engine.run_once()
    with store.begin() as conn:  # behind the listener's back: no event, no queued change
        for cid, plan in ((ann, "pro"), (bob, "basic")):
            conn.execute(schema.contacts.update().where(schema.contacts.c.id == cid)
                         .values(attributes={"plan": plan}))
    engine.run_once()
    assert members(store, "pros") == {bob}  # real time could not know
    clock.advance(1_000)
    job = RecomputeJob(3_600_000)
    assert run_due_jobs(store, [job], clock.now_ms()) == ["segments-recompute"]
    assert members(store, "pros") == {ann}
    (drift,) = svc.drift("pros")
    assert (drift.members, drift.entered, drift.exited) == (1, 1, 1)
    assert sorted(history(store, "pros")[-2:]) == [(ann, "entered", "recompute"),
                                                   (bob, "exited", "recompute")]
    (again,) = svc.recompute("pros")
    assert (again.entered, again.exited) == (0, 0)
    assert [d.entered for d in svc.drift()] == [0, 1]


def test_listeners_from_settings(store_url: str) -> None:
    settings = Settings.load(database_url=store_url, segment_recompute_interval_s=120,
                             segment_window_scan_s=5)
    (listener,), (job,) = segment_listeners(settings)
    assert listener.name == "segments"
    assert listener.window_scan_ms == 5_000
    assert job.interval_ms == 120_000


def test_listener_without_segments_moves_on(store: Store, clock: FakeClock,
                                            events: EventService) -> None:
    engine, listener = engine_with_listener(store, clock)
    identify(events, "ann", plan="pro")
    engine.run_once()
    with store.read() as conn:
        top = conn.execute(sa.select(sa.func.max(schema.events.c.id))).scalar()
        positions = set(conn.execute(sa.select(schema.engine_cursors.c.position).where(
            schema.engine_cursors.c.name.like("segments:%"))).scalars())
    assert positions == {top}
    assert dumps(listener.evaluations) == "0"


def test_journey_tags_and_consent_changes_reach_segments(svc: SegmentService, store: Store,
                                                         clock: FakeClock,
                                                         events: EventService) -> None:
    from cadenza.contacts import ContactService

    engine, _ = engine_with_listener(store, clock)
    insert_live_journey(store, clock, """
journey: tagger
entry: {event: signed_up}
steps:
  - {id: mark, tag: {add: [vip]}}
""")
    svc.create({"key": "vips", "condition": {"tag": "vip"}})
    svc.create({"key": "mailable", "condition": {"consent": "email", "purpose": "marketing"}})
    ann = identify(events, "ann")
    track(events, "ann", "signed_up")
    engine.run_once()  # the journey tags ann and queues the change
    engine.run_once()  # the listener takes the queued change
    assert members(store, "vips") == {ann}
    ContactService(store, clock).set_consent(ann, "email", "marketing", "opted_in", "test")
    engine.run_once()
    assert members(store, "mailable") == {ann}
    assert history(store, "mailable") == [(ann, "entered", "change")]


def test_a_worker_applies_only_its_partitions(svc: SegmentService, store: Store,
                                              clock: FakeClock,
                                              events: EventService) -> None:
    from cadenza.segments import SegmentListener

    ann = identify(events, "ann")
    bob = identify(events, "bob")
    assert ann % schema.PARTITIONS != bob % schema.PARTITIONS
    svc.create({"key": "buyers", "condition": {"count": "purchased"}})
    listener = SegmentListener()
    mine, theirs = [ann % schema.PARTITIONS], [bob % schema.PARTITIONS]
    with store.begin() as conn:
        listener.apply(conn, mine + theirs, clock.now_ms(), 100)  # cursors at the log's end
    track(events, "ann", "purchased")
    track(events, "bob", "purchased")
    with store.begin() as conn:
        assert listener.apply(conn, mine, clock.now_ms(), 100) == 2
    assert members(store, "buyers") == {ann}
    with store.begin() as conn:
        listener.apply(conn, theirs, clock.now_ms(), 100)
    assert members(store, "buyers") == {ann, bob}
    with store.begin() as conn:  # each event once: nothing left for either
        listener.apply(conn, mine + theirs, clock.now_ms(), 100)
    assert [c for c, _, _ in history(store, "buyers")] == [ann, bob]


def test_a_new_contact_is_evaluated_against_every_segment(
        svc: SegmentService, store: Store, clock: FakeClock, events: EventService) -> None:
    engine, listener = engine_with_listener(store, clock)
    svc.create({"key": "not-churned", "condition": {"not": {"tag": "churned"}}})
    svc.create({"key": "buyers", "condition": {"count": "purchased"}})
    engine.run_once()
    before = listener.evaluations
    newcomer = track(events, "newcomer", "page viewed")  # an event no segment reads
    engine.run_once()
    assert members(store, "not-churned") == {newcomer}
    assert listener.evaluations - before == 2
    track(events, "newcomer", "page viewed")
    engine.run_once()
    assert listener.evaluations - before == 2  # known now: unrelated events cost nothing
