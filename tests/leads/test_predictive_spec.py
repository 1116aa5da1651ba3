"""Predictive model definitions: what parses, and every refusal names its field."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza.errors import ValidationFailed
from cadenza.leads.predictive import Feature, parse_model
from tests.leads.predictive_data import definition


def test_a_full_definition_round_trips() -> None:
    spec = parse_model(definition(schedule={"retrain_every_days": 7}))
    assert spec.key == "buyers"
    assert spec.horizon_days == 30
    assert spec.outcome.where == (("plan", "pro"),)
    assert spec.features[3] == Feature("count", "Pricing Viewed", windows=(7, 30, 90))
    assert spec.features[4].cap == 60
    assert spec.features[5].prop == "total"
    assert spec.schedule.retrain_every_days == 7
    assert parse_model(spec.to_json()) == spec


def test_defaults() -> None:
    spec = parse_model({"key": "k", "outcome": {"event": "x"}, "horizon_days": 1,
                        "features": [{"count": "a"}, {"days_since": "b"},
                                     {"sum": "c", "property": "total"}]})
    assert [f.windows for f in spec.features] == [(7, 30, 90), (), (90,)]
    assert spec.features[1].cap == 90
    assert spec.name == "k"
    assert spec.seed == 7


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"horizon_days": 0}, "horizon_days", "outside 1..365"),
    ({"horizon_days": 366}, "horizon_days", "outside 1..365"),
    ({"horizon_days": "30"}, "horizon_days", "valid integer"),
    ({"key": "Bad Key"}, "key", "slug"),
    ({"outcome": {"event": ""}}, "outcome.event", "at least 1"),
    ({"outcome": {"event": "x", "where": {"a": [1]}}}, "outcome.where.a", "true/false"),
    ({"outcome": {"event": "x", "where": {"a..b": 1}}}, "outcome.where.a..b", "dotted"),
    ({"features": []}, "features", "at least 1"),
    ({"features": [{"attr": "plan"}]}, "features.0", "needs a type"),
    ({"features": [{"attr": "plan", "type": "text"}]}, "features.0.type", "number"),
    ({"features": [{"attr": "a", "type": "number", "count": "b"}]}, "features.0",
     "exactly one of attr, count, days_since or sum (found attr and count)"),
    ({"features": [{"type": "number"}]}, "features.0", "found none"),
    ({"features": [{"count": "a", "windows": [400]}]}, "features.0", "outside 1..365"),
    ({"features": [{"count": "a", "cap": 3}]}, "features.0", "'cap' does not apply"),
    ({"features": [{"sum": "a"}]}, "features.0", "needs the numeric event property"),
    ({"features": [{"attr": "a", "type": "number", "values": ["x"]}]}, "features.0",
     "type enum only"),
    ({"features": [{"count": "a"}, {"count": "a", "windows": [1]}]}, "features.1",
     "declared twice"),
    ({"features": [{"count": "a", "extra": 1}]}, "features.0.extra", "not permitted"),
    ({"schedule": {"retrain_every_days": -1}}, "schedule.retrain_every_days", "0"),
])
def test_bad_definitions_name_the_field(change: dict[str, Any], field: str,
                                        reason: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_model(definition(**change))
    assert caught.value.field == field
    assert reason.lower() in caught.value.reason.lower()


def test_key_from_the_request() -> None:
    assert parse_model({k: v for k, v in definition().items() if k != "key"}, "other").key == \
        "other"
    with pytest.raises(ValidationFailed, match="document says 'buyers'"):
        parse_model(definition(), "other")
    with pytest.raises(ValidationFailed, match="must be a mapping"):
        parse_model([1, 2])
