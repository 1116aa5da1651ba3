"""Scoring contacts: points, caps, decay, grades, the matrix, thresholds, explanations and
the real-time listener."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza.clock import FakeClock
from cadenza.leads.score_queries import GRADE_EVENT, THRESHOLD_EVENT
from cadenza.leads.score_service import ScoreService
from cadenza.leads.scoring import ScoreListener, scoring_listeners
from cadenza.store import Store, schema
from cadenza.store.changes import mark_changed, take_changed
from tests.leads.scoring_support import (
    DAY,
    NOW,
    add_contacts,
    add_events,
    declare,
    log,
    scores,
)

PARTS = list(range(schema.PARTITIONS))
FIT = {"key": "fit", "rules": [
    {"id": "pro", "when": {"attr": "plan", "eq": "pro"}, "points": 30},
    {"id": "free", "when": {"attr": "plan", "eq": "free"}, "points": -10},
    {"id": "big", "when": {"attr": "employees", "gte": 500}, "points": 15}],
    "grades": [{"grade": "A", "min": 40}, {"grade": "B", "min": 10}, {"grade": "C"}]}
ENGAGEMENT = {"key": "engagement", "rules": [
    {"id": "pricing", "event": "Page Viewed", "where": {"path": "/pricing"}, "points": 5,
     "cap": {"points": 20, "per": "1d"}},
    {"id": "demo", "event": "Demo Requested", "points": 25},
    {"id": "unsubscribed", "event": "Email Unsubscribed", "points": -15}],
    "grades": [{"grade": "1", "min": 40}, {"grade": "2", "min": 10}, {"grade": "3"}]}


@pytest.fixture
def service(store: Store, clock: FakeClock) -> ScoreService:
    clock.set(NOW)
    declare(store, plan="string", employees="number")
    return ScoreService(store, clock)


def test_attribute_points_add_and_remove(store: Store, service: ScoreService) -> None:
    add_contacts(store, {1: {"plan": "pro", "employees": 900}, 2: {"plan": "free"},
                         3: {"plan": "pro"}, 4: {}})
    service.save(FIT)
    service.score_all("fit")
    assert scores(store, "fit") == {1: (45.0, "A"), 2: (-10.0, "C"), 3: (30.0, "B"),
                                    4: (0.0, "C")}


def test_floor_and_ceiling_bound_the_score(store: Store, service: ScoreService) -> None:
    add_contacts(store, {1: {"plan": "pro", "employees": 900}, 2: {"plan": "free"}})
    service.save({**FIT, "floor": 0, "ceiling": 40})
    service.score_all("fit")
    assert scores(store, "fit") == {1: (40.0, "A"), 2: (0.0, "C")}


def test_event_points_per_occurrence_with_filters_and_negative_points(
        store: Store, service: ScoreService) -> None:
    add_contacts(store, {1: {}, 2: {}})
    add_events(store, [(1, "Page Viewed", NOW - DAY, {"path": "/pricing"}),
                       (1, "Page Viewed", NOW - DAY, {"path": "/"}),
                       (1, "Demo Requested", NOW - DAY, {}),
                       (2, "Email Unsubscribed", NOW - DAY, {}),
                       (2, "Page Viewed", NOW - DAY, {"path": ["/pricing"]})])
    service.save(ENGAGEMENT)
    service.score_all("engagement")
    assert scores(store, "engagement") == {1: (30.0, "2"), 2: (-15.0, "3")}


def test_a_cap_limits_points_per_period(store: Store, service: ScoreService) -> None:
    add_contacts(store, {1: {}})
    # Ten pricing views on one UTC day, two on the next: 20 (capped) + 10.
    day = (NOW // DAY - 3) * DAY
    add_events(store, [(1, "Page Viewed", day + i * 60_000, {"path": "/pricing"})
                       for i in range(10)]
               + [(1, "Page Viewed", day + DAY + i, {"path": "/pricing"}) for i in range(2)])
    service.save(ENGAGEMENT)
    service.score_all()
    assert scores(store, "engagement")[1][0] == 30.0


def test_a_model_wide_cap_scales_the_periods_net_points(store: Store,
                                                        service: ScoreService) -> None:
    add_contacts(store, {1: {}})
    day = (NOW // DAY - 2) * DAY
    add_events(store, [(1, "Demo Requested", day + i, {}) for i in range(4)])
    service.save({**ENGAGEMENT, "cap": {"points": 60, "per": "1d"}})
    service.score_all()
    assert scores(store, "engagement")[1][0] == 60.0


def test_points_decay_with_the_half_life(store: Store, service: ScoreService,
                                         clock: FakeClock) -> None:
    add_contacts(store, {1: {"plan": "pro"}})
    add_events(store, [(1, "Demo Requested", NOW, {})])
    service.save({**ENGAGEMENT, "half_life": "7d",
                  "rules": [*ENGAGEMENT["rules"],  # type: ignore[misc]
                            {"id": "pro", "when": {"attr": "plan", "eq": "pro"},
                             "points": 10}]})
    service.score_all()
    assert scores(store, "engagement")[1][0] == 35.0
    clock.advance(7 * DAY)
    service.score_all()
    assert scores(store, "engagement")[1][0] == 22.5  # attribute points never decay
    clock.advance(14 * DAY)
    service.score_all()
    assert scores(store, "engagement")[1][0] == pytest.approx(13.13, abs=0.01)


def test_matrix_combines_grades(store: Store, service: ScoreService) -> None:
    add_contacts(store, {1: {"plan": "pro", "employees": 900}, 2: {"plan": "free"},
                         3: {"plan": "pro"}})
    add_events(store, [(1, "Demo Requested", NOW, {}), (1, "Demo Requested", NOW - 1, {}),
                       (3, "Demo Requested", NOW, {})])
    service.save(FIT)
    service.save(ENGAGEMENT)
    service.save({"key": "lead", "kind": "matrix", "rows": "fit", "columns": "engagement"})
    service.score_all()
    grades = {cid: grade for cid, (_, grade) in scores(store, "lead").items()}
    assert grades == {1: "A1", 2: "C3", 3: "B2"}
    top = service.top("lead", 3)
    assert [t["contact_id"] for t in top] == [1, 3, 2]


def test_thresholds_and_grade_changes_emit_events_once(store: Store, service: ScoreService,
                                                       clock: FakeClock) -> None:
    add_contacts(store, {1: {}, 2: {}})
    add_events(store, [(1, "Demo Requested", NOW, {}), (1, "Demo Requested", NOW, {})])
    service.save({**ENGAGEMENT, "half_life": "7d", "thresholds": [30],
                  "grade_events": True})
    service.score_all()
    crossed = log(store, THRESHOLD_EVENT)
    assert crossed == [(1, {"model": "engagement", "threshold": 30.0, "direction": "up",
                            "score": 50.0, "previous_score": 0.0})]
    assert log(store, GRADE_EVENT) == [(1, {"model": "engagement", "from": "3", "to": "1",
                                            "score": 50.0})]
    service.score_all()  # nothing moved: nothing new
    assert len(log(store, THRESHOLD_EVENT)) == 1
    assert len(log(store, GRADE_EVENT)) == 1
    clock.advance(7 * DAY)  # 25 points: below the threshold, grade 2
    service.score_all()
    assert log(store, THRESHOLD_EVENT)[-1][1]["direction"] == "down"
    assert log(store, GRADE_EVENT)[-1][1] == {"model": "engagement", "from": "1", "to": "2",
                                              "score": 25.0}
    assert len(log(store, THRESHOLD_EVENT)) == 2


def test_explanation_says_what_each_rule_matched(store: Store, service: ScoreService) -> None:
    add_contacts(store, {1: {"plan": "pro", "employees": 20}})
    add_events(store, [(1, "Page Viewed", NOW - DAY // 2 - 1000 * i, {"path": "/pricing"})
                       for i in range(6)])
    service.save(FIT)
    service.save(ENGAGEMENT)
    service.score_all()
    found = {m["model"]: m for m in service.contact_scores(1)["models"]}
    fit = {r["rule"]: r for r in found["fit"]["rules"]}
    assert found["fit"]["score"] == 30.0
    assert found["fit"]["grade"] == "B"
    assert fit["pro"]["matched"]
    assert fit["pro"]["points"] == 30.0
    assert not fit["big"]["matched"]
    assert fit["big"]["seen"] == {"attr.employees": 20}
    pricing = {r["rule"]: r for r in found["engagement"]["rules"]}["pricing"]
    assert pricing["events"] == 6
    assert pricing["raw_points"] == 30.0
    assert pricing["points"] == 20.0  # capped per day


def test_distribution_buckets_every_contact(store: Store, service: ScoreService) -> None:
    add_contacts(store, {i: {"plan": "pro" if i % 2 else "free"} for i in range(1, 11)})
    service.save(FIT)
    service.score_all()
    found = service.distribution("fit", 4)
    assert found["contacts"] == 10
    assert sum(b["contacts"] for b in found["buckets"]) == 10
    assert found["grades"] == [{"grade": "B", "contacts": 5}, {"grade": "C", "contacts": 5}]


def _pass(store: Store, now: int, limit: int = 1000) -> int:
    with store.begin() as conn:
        return ScoreListener().apply(conn, PARTS, now, limit)


def test_listener_scores_new_events_and_queued_changes(store: Store, service: ScoreService,
                                                       clock: FakeClock) -> None:
    add_contacts(store, {1: {"plan": "free"}, 2: {}})
    service.save(FIT)
    service.save({**ENGAGEMENT, "thresholds": [20]})
    _pass(store, NOW)  # cursors start at the end of the log
    add_events(store, [(1, "Demo Requested", NOW, {})])
    assert _pass(store, NOW) == 1
    assert scores(store, "engagement") == {1: (25.0, "2")}
    assert len(log(store, THRESHOLD_EVENT)) == 1
    # The ledger holds one row per scored event; a repeated pass adds nothing.
    with store.begin() as conn:
        from cadenza.store import fetch

        ledger = fetch(conn, "SELECT contact_id, rule, points FROM score_ledger")
        assert ledger == [(1, "demo", 25.0)]
        # Segments and lifecycle hear about the change.
        assert take_changed(conn, "segments", PARTS, 10) == [1]
        assert take_changed(conn, "lifecycle", PARTS, 10) == [1]
    assert _pass(store, NOW) == 1  # its own threshold event: read, and it changes nothing
    assert _pass(store, NOW) == 0
    assert scores(store, "engagement") == {1: (25.0, "2")}
    assert len(log(store, THRESHOLD_EVENT)) == 1
    # An attribute change made outside the log arrives through the change queue.
    with store.begin() as conn:
        conn.exec_driver_sql("UPDATE contacts SET attributes = '{\"plan\": \"pro\"}' "
                             "WHERE id = 2" if store.is_sqlite else
                             "UPDATE contacts SET attributes = '{\"plan\": \"pro\"}'::jsonb "
                             "WHERE id = 2")
        mark_changed(conn, [2], NOW, consumers=("scores",))
    assert _pass(store, NOW) == 1
    assert scores(store, "fit") == {1: (-10.0, "C"), 2: (30.0, "B")}


def test_listener_and_score_all_agree(store: Store, service: ScoreService,
                                      clock: FakeClock) -> None:
    add_contacts(store, {i: {"plan": ["pro", "free", "x"][i % 3], "employees": i * 100}
                         for i in range(1, 9)})
    service.save(FIT)
    service.save({**ENGAGEMENT, "half_life": "3d", "cap": {"points": 45, "per": "1w"}})
    service.save({"key": "lead", "kind": "matrix", "rows": "fit", "columns": "engagement"})
    _pass(store, NOW)
    stream: list[tuple[int, str, int, dict[str, Any]]] = []
    for step in range(30):
        cid = 1 + (step * 5) % 8
        name = ["Page Viewed", "Demo Requested", "Email Unsubscribed"][step % 3]
        stream.append((cid, name, NOW + step * DAY // 4, {"path": "/pricing"}))
    for start in range(0, len(stream), 7):
        add_events(store, stream[start:start + 7])
        clock.advance(DAY)
        _pass(store, clock.now_ms(), limit=5)
    while _pass(store, clock.now_ms()):
        pass
    incremental = {k: scores(store, k) for k in ("fit", "engagement", "lead")}
    service.score_all()
    assert {k: scores(store, k) for k in ("fit", "engagement", "lead")} == incremental


def test_wiring_gives_a_listener_and_a_refresh_job() -> None:
    class Settings:
        score_refresh_interval_s = 60

    listeners, jobs = scoring_listeners(Settings())
    assert [x.name for x in listeners] == ["scores"]
    assert [(j.name, j.interval_ms) for j in jobs] == [("scores-refresh", 60_000)]
