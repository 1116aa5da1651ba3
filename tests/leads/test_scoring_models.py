"""Score model documents: what is accepted, and a clear error for every kind of bad input."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza.clock import FakeClock
from cadenza.errors import Conflict, ValidationFailed
from cadenza.leads.models import RulesModel, parse_model
from cadenza.leads.score_service import ScoreService
from cadenza.store import Store
from tests.leads.scoring_support import declare

FIELDS = {"plan": "string", "employees": "number", "vip": "boolean"}


def model(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key": "fit", "rules": [
            {"id": "pro", "when": {"attr": "plan", "eq": "pro"}, "points": 20},
            {"id": "big", "when": {"attr": "employees", "gte": 500}, "points": 15},
            {"id": "pricing", "event": "Page Viewed", "where": {"path": "/pricing"},
             "points": 5, "cap": {"points": 20, "per": "1d"}}],
        "grades": [{"grade": "A", "min": 30}, {"grade": "B", "min": 10}, {"grade": "C"}]}
    base.update(changes)
    return base


def refused(document: Any, field: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_model(document, FIELDS)
    assert caught.value.field == field, caught.value
    assert words in caught.value.reason, caught.value.reason


def test_a_model_round_trips_through_its_json() -> None:
    parsed = parse_model(model(half_life="14d", floor=-50, ceiling=100, thresholds=[50, 20],
                               cap={"points": 40, "per": "1w"}), FIELDS)
    assert isinstance(parsed, RulesModel)
    assert parsed.thresholds == (20.0, 50.0)
    assert parse_model(parsed.to_json(), FIELDS) == parsed


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"rules": [{"id": "x", "event": "A", "points": 1, "pionts": 2}]}, "rules.0.pionts",
     "did you mean 'points'"),
    ({"colour": "red"}, "colour", "unknown field"),
    ({"half_life": "0d"}, "half_life", "longer than 0"),
    ({"half_life": "-3d"}, "half_life", "negative"),
    ({"rules": [{"id": "x", "event": "A", "points": 1, "cap": {"points": 0, "per": "1d"}}]},
     "rules.0.cap.points", "above 0"),
    ({"rules": [{"id": "x", "event": "A", "points": 1, "cap": {"points": -5, "per": "1d"}}]},
     "rules.0.cap.points", "above 0"),
    ({"grades": [{"grade": "A", "min": 10}, {"grade": "B", "min": 30}]}, "grades.1.min",
     "not below"),
    ({"grades": [{"grade": "A"}, {"grade": "B", "min": 3}]}, "grades.0.min",
     "only the last band"),
    ({"grades": [{"grade": "A", "min": 3}, {"grade": "A"}]}, "grades.1.grade", "already"),
    ({"rules": [{"id": "x", "event": "A", "points": 1},
                {"id": "x", "event": "B", "points": 1}]}, "rules.1.id", "already the id"),
    ({"rules": [{"id": "x", "when": {"attr": "colour", "eq": "red"}, "points": 1}]},
     "rules.0.when.attr", "declared"),
    ({"rules": [{"id": "x", "when": {"attr": "employees", "eq": "many"}, "points": 1}]},
     "rules.0.when.eq", "number"),
    ({"rules": [{"id": "x", "event": "A", "points": "five"}]}, "rules.0.points", "number"),
    ({"rules": [{"id": "x", "event": "A", "points": 0}]}, "rules.0.points", "is 0"),
    ({"rules": [{"id": "x", "event": "A", "when": {"attr": "plan", "eq": "a"},
                 "points": 1}]}, "rules.0", "exactly one of event"),
    ({"rules": []}, "rules", "non-empty"),
    ({"floor": 10, "ceiling": 5}, "ceiling", "above the floor"),
    ({"key": "Fit Model"}, "key", "slug"),
    ({"thresholds": [5, 5]}, "thresholds", "twice"),
    ({"grades": [], "grade_events": True}, "grade_events", "needs grades"),
    ({"rules": [{"id": "x", "when": {"prop": "total", "gt": 1}, "points": 1}]},
     "rules.0.when", "event being handled"),
])
def test_bad_documents_name_the_field(changes: dict[str, Any], field: str, words: str) -> None:
    refused(model(**changes), field, words)


@pytest.mark.parametrize("rules", [
    [{"id": "a", "when": {"attr": "plan", "eq": "pro"}, "points": 5},
     {"id": "b", "when": {"attr": "plan", "in": ["pro", "enterprise"]}, "points": 5}],
    [{"id": "a", "when": {"attr": "employees", "gte": 100}, "points": 5},
     {"id": "b", "when": {"attr": "employees", "lt": 500}, "points": 5}],
    [{"id": "a", "event": "Page Viewed", "points": 1},
     {"id": "b", "event": "Page Viewed", "where": {"path": "/pricing"}, "points": 4}],
    [{"id": "a", "event": "Page Viewed", "where": {"path": ["/", "/pricing"]}, "points": 1},
     {"id": "b", "event": "Page Viewed", "where": {"path": "/pricing"}, "points": 4}],
    [{"id": "a", "when": {"any": [{"attr": "plan", "eq": "a"}, {"attr": "vip", "eq": True}]},
      "points": 1},
     {"id": "b", "when": {"attr": "plan", "eq": "b"}, "points": 4}],
])
def test_overlapping_rules_are_refused_naming_both(rules: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_model(model(rules=rules), FIELDS)
    assert caught.value.field == "rules.1"
    assert "'b' overlaps rule 'a'" in caught.value.reason
    assert "stack: true" in caught.value.reason
    rules[1]["stack"] = True
    assert parse_model(model(rules=rules), FIELDS)  # declared on purpose: accepted


@pytest.mark.parametrize("rules", [
    [{"id": "a", "when": {"attr": "plan", "eq": "pro"}, "points": 5},
     {"id": "b", "when": {"attr": "plan", "in": ["free", "starter"]}, "points": -5}],
    [{"id": "a", "when": {"attr": "employees", "gte": 500}, "points": 5},
     {"id": "b", "when": {"attr": "employees", "lt": 500}, "points": 1}],
    [{"id": "a", "when": {"attr": "plan", "eq": "pro"}, "points": 5},
     {"id": "b", "when": {"attr": "employees", "gt": 10}, "points": 5}],
    [{"id": "a", "event": "Page Viewed", "where": {"path": "/"}, "points": 1},
     {"id": "b", "event": "Page Viewed", "where": {"path": "/pricing"}, "points": 4}],
    [{"id": "a", "event": "Page Viewed", "points": 1},
     {"id": "b", "event": "Demo Requested", "points": 4}],
])
def test_disjoint_rules_are_accepted(rules: list[dict[str, Any]]) -> None:
    assert parse_model(model(rules=rules), FIELDS)


def test_matrix_needs_two_active_graded_models(store: Store, clock: FakeClock) -> None:
    declare(store, **FIELDS)
    service = ScoreService(store, clock)
    matrix = {"key": "lead", "kind": "matrix", "rows": "fit", "columns": "engagement"}
    with pytest.raises(ValidationFailed) as caught:
        service.save(matrix)
    assert caught.value.field == "rows"
    assert "not an active score model" in caught.value.reason
    service.save(model())
    service.save({"key": "engagement", "rules": [{"id": "d", "event": "Demo", "points": 9}]})
    with pytest.raises(ValidationFailed) as caught:
        service.save(matrix)
    assert caught.value.field == "columns"
    assert "no grades" in caught.value.reason
    with pytest.raises(ValidationFailed):
        service.save({**matrix, "columns": "fit"})
    service.save({"key": "engagement", "rules": [{"id": "d", "event": "Demo", "points": 9}],
                  "grades": [{"grade": "1", "min": 9}, {"grade": "2"}]})
    stored, created = service.save(matrix)
    assert created
    assert stored.model.kind == "matrix"
    with pytest.raises(Conflict):
        service.archive("fit")  # the matrix uses it
    with pytest.raises(Conflict):
        service.create(model())  # duplicate key
    service.archive("lead")
    assert service.archive("fit").status == "archived"


@pytest.mark.parametrize("rules", [
    [{"id": "a", "when": {"tag": "vip"}, "points": 5},
     {"id": "b", "when": {"all": [{"tag": "vip"}, {"attr": "plan", "eq": "pro"}]}, "points": 5}],
    [{"id": "a", "when": {"count": "Logged In", "within": "7d", "gte": 3}, "points": 5},
     {"id": "b", "when": {"count": "Logged In", "within": "30d", "gte": 10}, "points": 5}],
    [{"id": "a", "when": {"company_attr": "employees", "gte": 100}, "points": 5},
     {"id": "b", "when": {"company_attr": "employees", "gte": 500}, "points": 5}],
])
def test_same_fact_in_other_kinds_overlaps(rules: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_model(model(rules=rules), FIELDS, {"employees": "number"})
    assert "'b' overlaps rule 'a'" in caught.value.reason


def test_company_size_bands_are_apart() -> None:
    rules = [{"id": "small", "when": {"company_attr": "employees", "lt": 50}, "points": 1},
             {"id": "large", "when": {"company_attr": "employees", "gte": 50}, "points": 9}]
    assert parse_model(model(rules=rules), FIELDS, {"employees": "number"})
