"""SegmentService: definitions, checks, cycles, compute on save, preview, static lists,
history, members and export."""

from __future__ import annotations

import csv
import io

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from cadenza.events import EventService
from cadenza.segments import SegmentService
from cadenza.store import Store, schema
from tests.segments.segment_support import (
    declare,
    history,
    identify,
    members,
    segment_events,
    service,
)

PROS = {"key": "pros", "name": "Pros", "condition": {"attr": "plan", "eq": "pro"}}


@pytest.fixture
def svc(store: Store, clock: FakeClock) -> SegmentService:
    declare(store, clock, plan="string", age="number", name="string")
    return service(store, clock)


def test_create_fills_the_segment_quietly(svc: SegmentService, store: Store,
                                          events: EventService) -> None:
    ann = identify(events, "ann", plan="pro")
    identify(events, "bob", plan="basic")
    segment = svc.create(PROS)
    assert segment.member_count == 1
    assert segment.kind == "dynamic"
    assert members(store, "pros") == {ann}
    assert history(store, "pros") == [(ann, "entered", "edit")]
    # The first fill is the segment beginning, not people entering: no entry events.
    assert segment_events(store) == []
    assert [s.key for s in svc.all()] == ["pros"]
    assert svc.get("pros").to_dict()["condition"] == {"attr": "plan", "eq": "pro"}


def test_update_recomputes_with_events(svc: SegmentService, store: Store,
                                       events: EventService) -> None:
    ann = identify(events, "ann", plan="pro")
    bob = identify(events, "bob", plan="basic")
    svc.create(PROS)
    svc.update("pros", {"name": "Basics", "condition": {"attr": "plan", "eq": "basic"}})
    assert members(store, "pros") == {bob}
    assert sorted(segment_events(store)) == [(ann, "Segment Exited", "pros"),
                                             (bob, "Segment Entered", "pros")]
    assert svc.get("pros").name == "Basics"
    with pytest.raises(ValidationFailed, match="cannot change kind"):
        svc.update("pros", {"kind": "static"})
    with pytest.raises(ValidationFailed, match="keys cannot be renamed"):
        svc.update("pros", {"key": "other", "condition": {"tag": "x"}})


def test_duplicate_key_is_a_conflict(svc: SegmentService) -> None:
    svc.create(PROS)
    with pytest.raises(Conflict, match="already exists"):
        svc.create(PROS)


@pytest.mark.parametrize(("document", "field", "words"), [
    ({"key": "x", "condition": {"attr": "paln", "eq": "pro"}}, "condition.attr", "plan"),
    ({"key": "x", "condition": {"attr": "age", "eq": "old"}}, "condition", "number"),
    ({"key": "x", "condition": {"prop": "total", "gt": 1}}, "condition", "a segment has none"),
    ({"key": "x", "condition": {"all": [{"tag": "a"}, {"event_prop": "sku", "eq": "b"}]}},
     "condition", "a segment has none"),
    ({"key": "x", "condition": {"count": "paid", "between": ["7d", "30d"]}}, "condition",
     ""),
    ({"key": "x", "condition": {"count": "paid", "within": "-3d"}}, "condition", "negative"),
    ({"key": "Bad Key", "condition": {"tag": "a"}}, "key", "slug"),
    ({"key": "x", "colour": "red", "condition": {"tag": "a"}}, "colour", "unknown field"),
    ({"key": "x"}, "condition", "missing"),
    ({"key": "x", "kind": "static", "condition": {"tag": "a"}}, "condition", "static"),
    ({"key": "x", "kind": "smart", "condition": {"tag": "a"}}, "kind", "dynamic or static"),
    ("key: x", "", "mapping"),
])
def test_bad_definitions_are_refused(svc: SegmentService, store: Store, document: object,
                                     field: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        svc.create(document)
    assert caught.value.field.startswith(field), caught.value
    assert words.lower() in caught.value.message.lower(), caught.value
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.segments)
                            ).scalar() == 0


def test_cycles_and_references(svc: SegmentService) -> None:
    svc.create({"key": "a", "condition": {"tag": "a"}})
    svc.create({"key": "b", "condition": {"segment": "a"}})
    svc.create({"key": "c", "condition": {"all": [{"segment": "b"}, {"tag": "c"}]}})
    with pytest.raises(ValidationFailed, match=r"cycle: a -> c -> b -> a"):
        svc.update("a", {"condition": {"any": [{"tag": "a"}, {"segment": "c"}]}})
    with pytest.raises(ValidationFailed, match=r"cycle: d -> d"):
        svc.create({"key": "d", "condition": {"segment": "d"}})
    with pytest.raises(ValidationFailed, match="'nope', which does not exist"):
        svc.create({"key": "e", "condition": {"segment": "nope"}})
    with pytest.raises(Conflict, match="referenced by b"):
        svc.archive("a")
    svc.archive("c")
    with pytest.raises(ValidationFailed, match="'c', which is archived"):
        svc.create({"key": "f", "condition": {"segment": "c"}})
    assert svc.get("b").depends_on == ("a",)
    assert [s.key for s in svc.all("archived")] == ["c"]


def test_dependents_follow_an_edit(svc: SegmentService, store: Store,
                                   events: EventService) -> None:
    ann = identify(events, "ann", plan="pro")
    svc.create({"key": "a", "condition": {"attr": "plan", "eq": "basic"}})
    svc.create({"key": "b", "condition": {"segment": "a"}})
    assert members(store, "b") == set()
    svc.update("a", {"condition": {"attr": "plan", "eq": "pro"}})
    assert members(store, "a") == members(store, "b") == {ann}
    with store.begin() as conn:  # behind Cadenza's back
        conn.execute(schema.contacts.update().values(attributes={"plan": "basic"}))
    drift = svc.recompute("a")  # and what references it, after it
    assert [(d.segment, d.exited) for d in drift] == [("a", 1), ("b", 1)]
    assert members(store, "b") == set()


def test_estimate_saves_nothing(svc: SegmentService, store: Store,
                                events: EventService) -> None:
    ann = identify(events, "ann", plan="pro", email="ann@example.com", name="Ann")
    identify(events, "bob", plan="basic")
    result = svc.estimate({"attr": "plan", "eq": "pro"}, sample=5)
    assert result.count == 1
    assert result.sample == [{"contact_id": ann, "email": "ann@example.com",
                              "user_id": "ann", "name": "Ann"}]
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.segments)
                            ).scalar() == 0
    with pytest.raises(ValidationFailed, match="sample"):
        svc.estimate({"tag": "x"}, sample=1000)
    with pytest.raises(ValidationFailed):
        svc.estimate({"attr": "undeclared", "eq": 1})


def test_static_lists(svc: SegmentService, store: Store, events: EventService) -> None:
    ann = identify(events, "ann", email="ann@example.com")
    bob = identify(events, "bob")
    svc.create({"key": "vips", "kind": "static"})
    report = svc.add("vips", contact_ids=[ann], emails=["ANN@example.com"],
                     user_ids=["bob", "nobody"])
    assert (report.changed, report.unchanged) == (2, 0)
    assert report.unknown == [{"kind": "user_id", "value": "nobody",
                               "reason": "no contact has this user id"}]
    assert members(store, "vips") == {ann, bob}
    assert svc.add("vips", contact_ids=[ann]).unchanged == 1
    assert svc.remove("vips", user_ids=["ann"]).changed == 1
    assert members(store, "vips") == {bob}
    assert history(store, "vips") == [(ann, "entered", "api"), (bob, "entered", "api"),
                                      (ann, "exited", "api")]
    assert [e[1] for e in segment_events(store)] == ["Segment Entered"] * 2 + [
        "Segment Exited"]
    assert svc.get("vips").member_count == 1
    with pytest.raises(ValidationFailed, match=r"emails\.0"):
        svc.add("vips", emails=["not an email"])
    with pytest.raises(PayloadTooLarge, match="at most 10000"):
        svc.add("vips", contact_ids=list(range(1, 10_002)))
    svc.create(PROS)
    with pytest.raises(ValidationFailed, match="only static segments take lists"):
        svc.add("pros", contact_ids=[ann])
    with pytest.raises(NotFound):
        svc.add("nope", contact_ids=[ann])


def test_upload_reports_unknown_rows(svc: SegmentService, store: Store,
                                     events: EventService) -> None:
    ann = identify(events, "ann", email="ann@example.com")
    svc.create({"key": "list", "kind": "static"})
    data = (b"name,Email\nAnn,ann@example.com\nX,=cmd|'/c calc'!A1\nZed,zed@example.com\n"
            b",\n")
    report = svc.upload("list", data)
    assert report.changed == 1
    assert [(u["row"], u["kind"]) for u in report.unknown] == [(3, "email"), (4, "email")]
    assert members(store, "list") == {ann}
    assert svc.upload("list", b"email\nann@example.com\n", remove=True).changed == 1
    with pytest.raises(ValidationFailed, match="no column named email"):
        svc.upload("list", b"name\nAnn\n")
    with pytest.raises(ValidationFailed, match="UTF-8"):
        svc.upload("list", b"email\n\xff\xfe\n")
    with pytest.raises(PayloadTooLarge, match="MiB"):
        svc.upload("list", b"email\n" + b"a" * (21 * 1024 * 1024))


def test_members_history_and_contact_segments(svc: SegmentService, store: Store,
                                              events: EventService) -> None:
    ids = [identify(events, f"u{i}", plan="pro") for i in range(5)]
    svc.create(PROS)
    first = svc.members("pros", limit=2)
    assert [m["contact_id"] for m in first.items] == ids[:2]
    second = svc.members("pros", cursor=first.next_cursor, limit=2)
    assert [m["contact_id"] for m in second.items] == ids[2:4]
    last = svc.members("pros", cursor=second.next_cursor, limit=2)
    assert [m["contact_id"] for m in last.items] == ids[4:]
    assert last.next_cursor is None
    page = svc.history("pros", limit=3)
    assert len(page.items) == 3
    assert page.next_cursor
    assert len(svc.history("pros", cursor=page.next_cursor, limit=3).items) == 2
    assert [h["segment"] for h in svc.history(contact_id=ids[0]).items] == ["pros"]
    assert [s["key"] for s in svc.contact_segments(ids[0])] == ["pros"]
    with pytest.raises(NotFound):
        svc.contact_segments(99_999)
    with pytest.raises(ValidationFailed, match="cursor"):
        svc.members("pros", cursor="garbage!")


def test_export_neutralises_formulas(svc: SegmentService, events: EventService) -> None:
    hostile = ["=HYPERLINK(\"http://evil\")", "+1+1", "-2", "@SUM(A1)", "\tx", "\rx", "ok"]
    for i, value in enumerate(hostile):
        identify(events, f"u{i}", plan="pro", name=value)
    identify(events, "=evil-user", plan="pro", name="plain")
    svc.create(PROS)
    text = "".join(svc.export("pros", ["name", "plan", "missing"]))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["contact_id", "email", "user_id", "name", "plan", "missing"]
    names = [r[3] for r in rows[1:]]
    assert names == ["'" + v for v in hostile[:-1]] + ["ok", "plain"]
    assert rows[-1][2] == "'=evil-user"
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    with pytest.raises(ValidationFailed, match="attribute name"):
        svc.export("pros", ["bad name"])


def test_list_changes_reach_segments_that_reference_the_list(
        svc: SegmentService, store: Store, events: EventService) -> None:
    ann = identify(events, "ann", plan="pro")
    bob = identify(events, "bob", plan="basic")
    svc.create({"key": "vips", "kind": "static"})
    svc.create({"key": "pro-vips", "condition": {"all": [{"segment": "vips"},
                                                         {"attr": "plan", "eq": "pro"}]}})
    svc.add("vips", contact_ids=[ann, bob])
    assert members(store, "pro-vips") == {ann}
    svc.remove("vips", contact_ids=[ann])
    assert members(store, "pro-vips") == set()
    assert history(store, "pro-vips") == [(ann, "entered", "api"), (ann, "exited", "api")]
    (drift,) = svc.recompute("pro-vips")
    assert (drift.entered, drift.exited) == (0, 0)
