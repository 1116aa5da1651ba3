"""Versions: draft -> publish -> live edit -> publish -> rollback; immutability, content
hashes, shadow, pause/resume/archive, and the errors for unknown and illegal moves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.contacts import FieldSpec, declare_field
from cadenza.errors import Conflict, NotFound
from cadenza.journeys import JourneyInvalid, JourneyService, content_hash
from cadenza.store import Store, schema
from tests.journeys.conftest import EXAMPLE, enrollments, minimal

YAML = """\
journey: welcome-flow
name: Welcome
entry: {event: signed_up}
steps:
  - {id: welcome, send: {channel: email, template: welcome}}
  - {id: settle, wait: 2d}
  - {id: nudge, send: {channel: email, template: nudge}}
"""


def stored_versions(store: Store) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.journey_versions)
                                               .order_by(schema.journey_versions.c.id))
                .mappings()]


def test_the_version_lifecycle(journeys: JourneyService, clock: FakeClock, store: Store,
                               templates: None) -> None:
    draft = journeys.save_draft(YAML)
    assert (draft.key, draft.number, draft.status, draft.content_hash) == \
        ("welcome-flow", 1, "draft", None)
    journey = journeys.get("welcome-flow")
    assert (journey.status, journey.name, journey.live_version, journey.draft_version) == \
        ("draft", "Welcome", None, 1)

    # Saving again replaces the open draft.
    clock.advance(1000)
    again = journeys.save_draft(YAML.replace("2d", "3d"))
    assert (again.number, again.id) == (1, draft.id)
    assert again.definition["steps"][1]["wait"] == "3d"

    published = journeys.publish("welcome-flow")
    assert (published.number, published.status, published.live) == (1, "published", True)
    assert published.content_hash == content_hash(again.definition)
    assert published.published_at == clock.now_ms()
    journey = journeys.get("welcome-flow")
    assert (journey.status, journey.live_version, journey.draft_version) == ("live", 1, None)
    assert journey.live_version_id == published.id

    # A live edit is a new version; the published one does not change.
    edit = journeys.save_draft(YAML.replace("Welcome", "Welcome v2"))
    assert (edit.number, edit.status) == (2, "draft")
    assert journeys.version("welcome-flow", 1).definition == published.definition
    assert journeys.get("welcome-flow").name == "Welcome"  # the draft is not live yet
    second = journeys.publish("welcome-flow")
    assert (second.number, second.live) == (2, True)
    journey = journeys.get("welcome-flow")
    assert (journey.live_version, journey.name) == (2, "Welcome v2")
    assert [(v.number, v.status, v.live) for v in journeys.versions("welcome-flow")] == [
        (1, "published", False), (2, "published", True)]

    back = journeys.rollback("welcome-flow", 1)
    assert (back.live_version, back.status) == (1, "live")
    assert journeys.version("welcome-flow").number == 1  # show's default: the live one
    assert [row["status"] for row in stored_versions(store)] == ["published", "published"]


def test_published_versions_are_immutable(journeys: JourneyService, store: Store,
                                          templates: None) -> None:
    journeys.save_draft(YAML)
    first = journeys.publish("welcome-flow")
    with pytest.raises(Conflict, match="already published; to make it live again, roll back"):
        journeys.publish("welcome-flow", 1)
    with pytest.raises(Conflict, match="no draft to publish; save one first"):
        journeys.publish("welcome-flow")
    before = stored_versions(store)
    # Even a direct write through the queries refuses a published row.
    from cadenza.journeys import queries

    with store.begin() as conn:
        assert queries.replace_draft(conn, first.id, minimal()) == 0
        assert queries.publish_version(conn, first.id, "0" * 64, 1) == 0
    assert stored_versions(store) == before


def test_content_hash_is_stable_across_key_order_and_format(journeys: JourneyService,
                                                             templates: None) -> None:
    definition = minimal(name="Welcome")
    journeys.save_draft(definition)
    one = journeys.publish("welcome-flow")
    reordered = {key: definition[key] for key in reversed(list(definition))}
    journeys.save_draft(reordered)
    two = journeys.publish("welcome-flow")
    import json

    journeys.save_draft(json.dumps(definition, indent=3))
    three = journeys.publish("welcome-flow")
    assert one.content_hash == two.content_hash == three.content_hash
    assert journeys.diff("welcome-flow", 1, 2) == ""


def test_diff_is_a_unified_yaml_diff(journeys: JourneyService, templates: None) -> None:
    journeys.save_draft(YAML)
    journeys.publish("welcome-flow")
    journeys.save_draft(YAML.replace("2d", "3d"))
    text = journeys.diff("welcome-flow", 1, 2)
    assert text.startswith("--- welcome-flow v1\n+++ welcome-flow v2\n")
    assert "-  wait: 2d\n+  wait: 3d\n" in text


def test_publish_runs_the_full_validation(journeys: JourneyService, store: Store,
                                          clock: FakeClock,
                                          add_templates: Callable[..., None]) -> None:
    definition = minimal(entry={"event": "x", "where": {"attr": "plan", "eq": "pro"}},
                         steps=[{"id": "a", "send": {"channel": "email", "template": "welcom"}},
                                {"id": "b", "enroll": {"journey": "win-bak"}},
                                {"id": "c", "update": {"score": "high"}}])
    journeys.save_draft(definition)  # drafts need no templates, fields or other journeys
    add_templates(("welcome", "email"))
    journeys.save_draft(minimal("win-back"))
    with store.begin() as conn:
        declare_field(conn, FieldSpec("plann", "string"), clock.now_ms())
        declare_field(conn, FieldSpec("score", "number"), clock.now_ms())
    with pytest.raises(JourneyInvalid) as caught:
        journeys.publish("welcome-flow")
    assert [(p.step, p.field) for p in caught.value.problems] == [
        (None, "entry.where.attr"), ("a", "send.template"), ("b", "enroll.journey"),
        ("c", "update.score")]
    journey = journeys.get("welcome-flow")
    assert (journey.status, journey.draft_version, journey.live_version) == ("draft", 1, None)
    with pytest.raises(JourneyInvalid):
        journeys.validate(definition)
    assert journeys.validate(definition, against_store=False).key == "welcome-flow"


def test_save_refuses_invalid_definitions_and_writes_nothing(journeys: JourneyService,
                                                             store: Store) -> None:
    with pytest.raises(JourneyInvalid, match="names no step"):
        journeys.save_draft(minimal(steps=[{"id": "a", "send": {"channel": "log"},
                                            "goto": "b"}]))
    assert journeys.list() == []
    assert stored_versions(store) == []


def test_pause_resume_archive(journeys: JourneyService, store: Store, templates: None,
                              enroll: Callable[..., list[int]], clock: FakeClock) -> None:
    journeys.save_draft(YAML)
    with pytest.raises(Conflict, match="never been published"):
        journeys.pause("welcome-flow")
    version = journeys.publish("welcome-flow")
    assert journeys.pause("welcome-flow").status == "paused"
    assert journeys.pause("welcome-flow").status == "paused"  # again: no change
    # Publishing while paused keeps the journey paused.
    journeys.save_draft(YAML.replace("2d", "1d"))
    journeys.publish("welcome-flow")
    assert journeys.get("welcome-flow").status == "paused"
    assert journeys.resume("welcome-flow").status == "live"

    active = enroll(version.id, "settle", 3, wake_at=clock.now_ms() + 1000)
    with store.begin() as conn:
        conn.execute(sa.update(schema.enrollments).where(schema.enrollments.c.id == active[2])
                     .values(status="completed", active_slot=None, outcome="completed"))
    clock.advance(5000)
    assert journeys.archive("welcome-flow") == 2
    rows = enrollments(store)
    assert [(r["status"], r["outcome"]) for r in rows] == [
        ("exited", "archived"), ("exited", "archived"), ("completed", "completed")]
    assert rows[0]["ended_at"] == clock.now_ms()
    assert rows[0]["active_slot"] is None
    assert rows[0]["seq"] == 4  # an engine pass that read it cannot write it back
    assert journeys.get("welcome-flow").status == "archived"
    assert journeys.archive("welcome-flow") == 0
    for action in (lambda: journeys.publish("welcome-flow"),
                   lambda: journeys.save_draft(YAML),
                   lambda: journeys.pause("welcome-flow"),
                   lambda: journeys.resume("welcome-flow"),
                   lambda: journeys.rollback("welcome-flow", 1)):
        with pytest.raises(Conflict, match="archived"):
            action()


def test_shadow(journeys: JourneyService, templates: None) -> None:
    journeys.save_draft(YAML)
    with pytest.raises(Conflict, match="no live version for a shadow"):
        journeys.publish("welcome-flow", shadow=True)
    journeys.publish("welcome-flow")
    journeys.save_draft(YAML.replace("2d", "1d"))
    with pytest.raises(Conflict, match="is a draft; publish it in shadow"):
        journeys.set_shadow("welcome-flow", 2)
    shadowed = journeys.publish("welcome-flow", shadow=True)
    assert (shadowed.number, shadowed.shadow, shadowed.live) == (2, True, False)
    journey = journeys.get("welcome-flow")
    assert (journey.live_version, journey.shadow_version) == (1, 2)
    with pytest.raises(Conflict, match="is the live version"):
        journeys.set_shadow("welcome-flow", 1)
    assert journeys.set_shadow("welcome-flow", None).shadow_version is None
    assert journeys.set_shadow("welcome-flow", 2).shadow_version == 2
    # Rolling forward onto the shadow version makes it live and ends the shadow.
    journey = journeys.rollback("welcome-flow", 2)
    assert (journey.live_version, journey.shadow_version) == (2, None)


def test_unknown_journeys_and_versions(journeys: JourneyService, templates: None) -> None:
    for action in (lambda: journeys.get("nope"), lambda: journeys.publish("nope"),
                   lambda: journeys.versions("nope"), lambda: journeys.pause("nope"),
                   lambda: journeys.archive("nope"), lambda: journeys.diff("nope", 1, 2)):
        with pytest.raises(NotFound, match="journey 'nope' not found"):
            action()
    journeys.save_draft(YAML)
    with pytest.raises(NotFound, match="welcome-flow v7"):
        journeys.publish("welcome-flow", 7)
    with pytest.raises(NotFound):
        journeys.rollback("welcome-flow", 7)
    with pytest.raises(Conflict, match="is a draft; publish it instead"):
        journeys.rollback("welcome-flow", 1)
    with pytest.raises(NotFound):
        journeys.spec(10_000)


def test_spec_is_compiled_once_per_published_version(journeys: JourneyService, store: Store,
                                                     clock: FakeClock,
                                                     add_templates: Callable[..., None]) -> None:
    add_templates(("welcome", "email"), ("pro-tips", "email"), ("thanks", "email"))
    with store.begin() as conn:
        for name, kind in (("plan", "string"), ("country", "string"), ("renewal_date", "date")):
            declare_field(conn, FieldSpec(name, kind), clock.now_ms())
    journeys.save_draft(minimal("sales-follow-up"))
    journeys.save_draft(EXAMPLE.read_text())
    draft = journeys.version("trial-onboarding")
    assert journeys.spec(draft.id) is not journeys.spec(draft.id)  # drafts may change
    published = journeys.publish("trial-onboarding")
    spec = journeys.spec(published.id)
    assert spec.key == "trial-onboarding"
    assert journeys.spec(published.id) is spec
    assert JourneyService(journeys.store, journeys.clock).spec(published.id) == spec


def test_list_orders_by_key(journeys: JourneyService) -> None:
    journeys.save_draft(minimal("b-journey"))
    journeys.save_draft(minimal("a-journey"))
    assert [j.key for j in journeys.list()] == ["a-journey", "b-journey"]
    assert journeys.list()[0].to_dict()["draft_version"] == 1
