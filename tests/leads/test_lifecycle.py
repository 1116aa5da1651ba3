"""Lifecycle stages: configuration, transition rules (forward only unless backward), history,
events once, the listener on queued changes and on events, manual moves, apply to all."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.leads import STAGE_EVENT, LifecycleListener, LifecycleService
from cadenza.store import Store, schema
from cadenza.store.changes import mark_changed
from tests.leads.lifecycle_support import (
    contact,
    declare,
    named_events,
    rows,
    set_attributes,
    stage_of,
    stages_doc,
    track,
)

ALL_PARTS = list(range(schema.PARTITIONS))
RULES = {
    "subscriber": [{"name": "unsubscribed", "when": {"attr": "unsubscribed", "eq": True},
                    "backward": True}],
    "lead": [{"name": "some-fit", "when": {"attr": "fit", "gte": 10}}],
    "mql": [{"name": "fit", "when": {"attr": "fit", "gte": 60}},
            {"name": "demo", "when": {"count": "Demo Requested", "gte": 1}}],
    "customer": [{"when": {"count": "Purchased", "gte": 1}}],
}


@pytest.fixture
def service(store: Store, clock: FakeClock) -> LifecycleService:
    """Lifecycle service with the test rules saved and their fields declared."""
    declare(store, clock.now_ms(), "fit", kind="number")
    declare(store, clock.now_ms(), "unsubscribed", kind="boolean")
    svc = LifecycleService(store, clock)
    svc.set_stages(stages_doc(RULES))
    return svc


def run_listener(store: Store, clock: FakeClock) -> int:
    with store.begin() as conn:
        return LifecycleListener().apply(conn, ALL_PARTS, clock.now_ms(), 1000)


def test_defaults_then_edit_add_reorder_remove(store: Store, clock: FakeClock) -> None:
    svc = LifecycleService(store, clock)
    shown = svc.stages()
    assert not shown["stored"]
    assert [s["key"] for s in shown["stages"]] == [
        "subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist", "other"]
    svc.set_stages({"stages": [{"key": "lead"}, {"key": "trial", "name": "Trial"},
                               {"key": "customer", "name": "Customer"}]})
    assert [(s["key"], s["position"]) for s in svc.stages()["stages"]] == [
        ("lead", 0), ("trial", 1), ("customer", 2)]
    who = contact(store, clock.now_ms())
    svc.set_stage([who], "trial", "signed up for a trial")
    with pytest.raises(Conflict, match="'trial' holds 1 contact"):
        svc.set_stages({"stages": [{"key": "lead"}, {"key": "customer"}]})
    renamed = svc.rename("trial", "evaluating")
    assert renamed.keys() == ["lead", "evaluating", "customer"]
    assert stage_of(store, [who]) == {who: "evaluating"}


@pytest.mark.parametrize(("document", "field", "words"), [
    ({"stages": [{"key": "a"}, {"key": "a"}]}, "stages[1].key", "already the key"),
    ({"stages": [{"key": "Bad Key"}]}, "stages[0].key", "slug"),
    ({"stages": []}, "stages", "non-empty"),
    ({"stages": [{"key": "a", "rules": [{"when": {"attr": "nope", "eq": 1}}]}]},
     "stages[0].rules[0].when", "nope"),
    ({"stages": [{"key": "a", "rules": [{"when": {"count": "X", "gte": 1},
                                         "backward": "yes"}]}]},
     "stages[0].rules[0].backward", "true or false"),
    ({"stages": [{"key": "a", "rules": [{"name": "r", "when": {"count": "X", "gte": 1}},
                                        {"name": "r", "when": {"count": "Y", "gte": 1}}]}]},
     "stages[0].rules[1].name", "twice"),
    ({"stages": [{"key": "a", "rules": [{"name": "r"}]}]}, "stages[0].rules[0].when",
     "required"),
])
def test_bad_stage_documents(store: Store, clock: FakeClock, document: dict[str, object],
                             field: str, words: str) -> None:
    svc = LifecycleService(store, clock)
    with pytest.raises(ValidationFailed) as caught:
        svc.set_stages(document)
    assert caught.value.field.startswith(field)
    assert words in caught.value.reason
    assert not svc.stages()["stored"]  # nothing half-written


def test_forward_only_backward_explicit_history_and_events(
        store: Store, clock: FakeClock, service: LifecycleService) -> None:
    who = contact(store, clock.now_ms(), fit=70)
    with store.begin() as conn:
        mark_changed(conn, [who], clock.now_ms(), consumers=("lifecycle",))
    run_listener(store, clock)
    assert stage_of(store, [who]) == {who: "mql"}  # the furthest stage whose rule holds
    with store.read() as conn:  # segments and scores are told
        queued = set(conn.execute(sa.select(schema.contact_changes.c.consumer).where(
            schema.contact_changes.c.contact_id == who)).scalars())
    assert queued == {"segments", "scores"}

    clock.advance(1000)
    set_attributes(store, who, fit=20)  # the lead rule holds, but lead is behind mql
    with store.begin() as conn:
        mark_changed(conn, [who], clock.now_ms(), consumers=("lifecycle",))
    run_listener(store, clock)
    assert stage_of(store, [who]) == {who: "mql"}

    clock.advance(1000)
    set_attributes(store, who, unsubscribed=True)  # a backward rule may move it back
    with store.begin() as conn:
        mark_changed(conn, [who], clock.now_ms(), consumers=("lifecycle",))
    run_listener(store, clock)
    assert stage_of(store, [who]) == {who: "subscriber"}

    history = rows(store, schema.stage_history)
    assert [(h["from_stage"], h["to_stage"], h["cause"]) for h in history] == [
        (None, "mql", "rule"), ("mql", "subscriber", "rule")]
    assert history[0]["detail"]["rule"] == "fit"
    assert history[1]["detail"]["rule"] == "unsubscribed"
    emitted = named_events(store, STAGE_EVENT)
    assert [(e["properties"]["from"], e["properties"]["to"], e["properties"]["rule"])
            for e in emitted] == [(None, "mql", "fit"), ("mql", "subscriber", "unsubscribed")]
    assert [e["message_id"] for e in emitted] == [f"lifecycle:{h['id']}" for h in history]

    run_listener(store, clock)  # nothing queued: nothing repeats
    assert len(rows(store, schema.stage_history)) == 2
    assert len(named_events(store, STAGE_EVENT)) == 2


def test_listener_reads_events_named_by_rules(store: Store, clock: FakeClock,
                                              service: LifecycleService) -> None:
    who = contact(store, clock.now_ms())
    other = contact(store, clock.now_ms())
    run_listener(store, clock)  # cursors start at the end of the log
    track(store, who, "Page Viewed", "m-1", clock.now_ms())
    track(store, who, "Demo Requested", "m-2", clock.now_ms())
    track(store, other, "Page Viewed", "m-3", clock.now_ms())
    clock.advance(10)
    assert run_listener(store, clock) == 1  # only the event a rule counts is read
    assert stage_of(store, [who, other]) == {who: "mql"}
    track(store, who, "Purchased", "m-4", clock.now_ms())
    run_listener(store, clock)
    assert stage_of(store, [who]) == {who: "customer"}
    assert run_listener(store, clock) == 0
    assert [e["properties"]["to"] for e in named_events(store, STAGE_EVENT)] == [
        "mql", "customer"]


def test_manual_moves_need_a_reason(store: Store, clock: FakeClock,
                                    service: LifecycleService) -> None:
    who = contact(store, clock.now_ms())
    moved = service.set_stage([who], "customer", "signed the contract")
    assert [(m.from_stage, m.to_stage) for m in moved] == [(None, "customer")]
    back = service.set_stage([who], "lead", "contract cancelled", cause="cli")
    assert [(m.from_stage, m.to_stage) for m in back] == [("customer", "lead")]
    assert service.set_stage([who], "lead", "again") == []  # already there: no history
    shown = service.contact(who)
    assert shown["stage"] == "lead"
    assert [(h["to_stage"], h["cause"], h["detail"]["reason"]) for h in shown["history"]] == [
        ("lead", "cli", "contract cancelled"), ("customer", "api", "signed the contract")]
    with pytest.raises(ValidationFailed, match="reason"):
        service.set_stage([who], "mql", "  ")
    with pytest.raises(ValidationFailed, match="did you mean 'customer'"):
        service.set_stage([who], "custmer", "typo")
    with pytest.raises(NotFound):
        service.set_stage([who + 100], "mql", "nobody")


def test_apply_to_everyone_is_set_wise_and_idempotent(store: Store, clock: FakeClock,
                                                      service: LifecycleService) -> None:
    fits = [0, 15, 65, 90, 5, 61]
    ids = [contact(store, clock.now_ms(), fit=f) for f in fits]
    seen: list[tuple[int, int]] = []
    report = service.apply(progress=lambda done, total: seen.append((done, total)), chunk=4)
    assert report == {"evaluated": 6, "moved": 4}
    assert seen == [(4, 6), (6, 6)]
    assert stage_of(store, ids) == {ids[1]: "lead", ids[2]: "mql", ids[3]: "mql",
                                    ids[5]: "mql"}
    assert service.apply() == {"evaluated": 6, "moved": 0}


def test_listener_reacts_to_a_queued_score_change(store: Store, clock: FakeClock) -> None:
    svc = LifecycleService(store, clock)
    svc.set_stages(stages_doc({"mql": [{"name": "fit", "when": {"score": "fit", "gte": 60}}],
                               "sql": [{"name": "sales-ok",
                                        "when": {"all": [{"stage": "mql"},
                                                         {"grade": "fit", "eq": "A"}]}}]}))
    who = contact(store, clock.now_ms())
    now = clock.now_ms()
    with store.begin() as conn:  # what the scoring listener writes when a score changes
        model = conn.execute(sa.insert(schema.score_models).values(
            key="fit", name="Fit", kind="rules", definition={}, status="active",
            created_at=now, updated_at=now).returning(schema.score_models.c.id)).scalar_one()
        conn.execute(sa.insert(schema.contact_scores).values(
            model_id=model, contact_id=who, score=72.0, grade="B", explanation={}, as_of=now))
        mark_changed(conn, [who], now)
    run_listener(store, clock)
    assert stage_of(store, [who]) == {who: "mql"}
    assert rows(store, schema.stage_history)[0]["detail"]["seen"] == {"score.fit": 72.0}
    with store.begin() as conn:
        conn.execute(sa.update(schema.contact_scores).values(grade="A"))
        mark_changed(conn, [who], now, consumers=("lifecycle",))
    run_listener(store, clock)
    assert stage_of(store, [who]) == {who: "sql"}


@pytest.mark.parametrize(("rules", "words"), [
    ({"sql": [{"when": {"stage": "mqll"}}]}, "did you mean 'mql'"),
    ({"mql": [{"when": {"any": [{"stage": "mql"}, {"stage": "lead"}]}}]}, "a cycle"),
])
def test_stage_references_are_checked(store: Store, clock: FakeClock,
                                      rules: dict[str, list[dict[str, object]]],
                                      words: str) -> None:
    with pytest.raises(ValidationFailed, match=words):
        LifecycleService(store, clock).set_stages(stages_doc(rules))


def test_one_listener_sees_rule_changes(store: Store, clock: FakeClock,
                                        service: LifecycleService) -> None:
    listener = LifecycleListener()
    who = contact(store, clock.now_ms(), fit=30)
    with store.begin() as conn:
        mark_changed(conn, [who], clock.now_ms(), consumers=("lifecycle",))
        listener.apply(conn, ALL_PARTS, clock.now_ms(), 100)
    assert stage_of(store, [who]) == {who: "lead"}
    service.set_stages(stages_doc({"mql": [{"when": {"attr": "fit", "gte": 25}}]}))
    with store.begin() as conn:
        mark_changed(conn, [who], clock.now_ms(), consumers=("lifecycle",))
        listener.apply(conn, ALL_PARTS, clock.now_ms(), 100)
    assert stage_of(store, [who]) == {who: "mql"}
