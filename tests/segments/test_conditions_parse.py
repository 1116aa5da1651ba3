"""Parsing the segments issue's kinds: shapes, round trips and every refusal's wording."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza.errors import ValidationFailed
from cadenza.segments import (
    Aggregate,
    CountCondition,
    EventPropertyCondition,
    LastSeenCondition,
    SumCondition,
    parse_condition,
    referenced_segments,
)

DAY = 86_400_000


def refused(shape: Any, **kwargs: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        parse_condition(shape, "when", **kwargs)
    return caught.value


@pytest.mark.parametrize("shape", [
    {"company_attr": "industry", "eq": "saas"},
    {"company_attr": "domain", "starts_with": "acme"},
    {"segment": "trial-users"},
    {"count": "viewed", "between": ["30d", "7d"], "gte": 2},
    {"count": "viewed", "within": "7d", "where": {"any": [{"event_prop": "plan", "eq": "pro"},
                                                          {"not": {"event_prop": "x",
                                                                   "exists": True}}]},
     "eq": 0},
    {"sum": "Order Completed", "of": "revenue", "within": "90d", "gte": 500},
    {"sum": "Order Completed", "of": "items.0.price", "between": ["60d", "30d"], "lt": 2.5},
    {"last_seen": "*", "within": "7d"},
    {"last_seen": "Logged In", "before": "30d"},
    {"score": "fit", "gte": 50},
    {"score": "fit", "in": [1, 2.5]},
    {"score": "fit", "exists": False},
    {"grade": "fit", "in": ["A", "B"]},
    {"stage": "mql"},
    {"stage": ["mql", "sql"]},
])
def test_new_kinds_round_trip(shape: dict[str, Any]) -> None:
    parsed = parse_condition(shape, "when")
    assert parsed.to_json() == shape
    assert parse_condition(parsed.to_json(), "when") == parsed


def test_windows_and_filters_become_fields() -> None:
    count = parse_condition({"count": "viewed", "between": ["30d", "7d"],
                             "where": {"event_prop": "plan", "eq": "pro"}}, "w")
    assert count == CountCondition("viewed", 30 * DAY, "gte", 1, 7 * DAY,
                                   EventPropertyCondition("plan", "eq", "pro"))
    assert count.key == 'count.viewed.30d-7d where {"eq":"pro","event_prop":"plan"}'
    assert count.needs().aggregates == {Aggregate("count", "viewed", 30 * DAY, 7 * DAY, None,
                                                  count.where)}
    plain = parse_condition({"count": "viewed", "within": "30d"}, "w")
    assert plain.needs().counts == {("viewed", 30 * DAY)}  # plain counts load as before
    total = parse_condition({"sum": "paid", "of": "revenue", "gte": 1}, "w")
    assert total == SumCondition("paid", "revenue", 0, "gte", 1)
    assert parse_condition({"last_seen": "*", "before": "30d"}, "w") == \
        LastSeenCondition("*", 30 * DAY, before=True)


@pytest.mark.parametrize(("shape", "field", "words"), [
    ({"count": "v", "within": "7d", "between": ["30d", "7d"]}, "when", "both within and between"),
    ({"count": "v", "between": ["7d", "30d"]}, "when.between", "did you mean ['30d', '7d']"),
    ({"count": "v", "between": ["7d", "7d"]}, "when.between", "empty window"),
    ({"count": "v", "between": ["7d", "0s"]}, "when.between.1", "use within"),
    ({"count": "v", "between": ["4000d", "7d"]}, "when.between.0", "longer than 10 years"),
    ({"count": "v", "between": "30d"}, "when.between", "two durations ago"),
    ({"count": "v", "between": ["30d", "7d", "1d"]}, "when.between", "two durations ago"),
    ({"count": "v", "where": {"attr": "plan", "eq": "pro"}}, "when.where",
     "only use event_prop"),
    ({"count": "v", "where": {"all": [{"event_prop": "a", "eq": 1}, {"tag": "x"}]}},
     "when.where", "not tag"),
    ({"count": "v", "contains": 1}, "when.contains", "does not apply to a count"),
    ({"sum": "paid", "gte": 1}, "when", "needs the property to add up"),
    ({"sum": "paid", "of": "revenue"}, "when", "needs an operator"),
    ({"sum": "paid", "of": "revenue", "gte": "500"}, "when.gte", "must be a number"),
    ({"sum": "paid", "of": "revenue", "gte": True}, "when.gte", "must be a number"),
    ({"sum": "paid", "of": "a..b", "gte": 1}, "when.of", "empty part"),
    ({"last_seen": "*"}, "when", "exactly one of within"),
    ({"last_seen": "*", "within": "7d", "before": "30d"}, "when", "exactly one of within"),
    ({"last_seen": "*", "within": "0s"}, "when.within", "longer than 0"),
    ({"last_seen": "*", "within": "7d", "eq": 1}, "when.eq", "unknown key"),
    ({"segment": ""}, "when.segment", "must name a segment key"),
    ({"segment": "x" * 129}, "when.segment", "longer than 128"),
    ({"segment": "a", "eq": 1}, "when.eq", "takes no other key"),
    ({"score": "fit", "gte": "50"}, "when.gte", "a score is a number"),
    ({"score": "fit", "in": [1, "2"]}, "when.in", "a score is a number"),
    ({"score": "fit", "contains": 1}, "when.contains", "does not apply to a score"),
    ({"score": "fit"}, "when", "needs an operator"),
    ({"grade": "fit", "eq": 1}, "when.eq", "a grade is a string"),
    ({"grade": "fit", "gt": "A"}, "when.gt", "does not apply to a grade"),
    ({"stage": []}, "when.stage", "empty list"),
    ({"stage": ["mql", 3]}, "when.stage.1", "must name a lifecycle stage"),
    ({"stage": {"in": ["mql"]}}, "when.stage", "must name a lifecycle stage"),
    ({"company_attr": "industry"}, "when", "needs an operator"),
    ({"company_attr": "industry", "eq": "saas", "tag": "x"}, "when", "mixes"),
])
def test_refusals_name_the_field_and_the_fix(shape: dict[str, Any], field: str,
                                             words: str) -> None:
    error = refused(shape)
    assert error.field == field
    assert words in error.reason


FIELDS = {"age": "number", "vip": "boolean", "plan": "enum", "interests": "list",
          "signup": "date", "bio": "string"}


@pytest.mark.parametrize(("shape", "words"), [
    ({"attr": "age", "eq": "30"}, "'age' is a number field; compare it with a number, not the "
                                  "string '30'"),
    ({"attr": "age", "in": [1, True]}, "compare it with a number, not true"),
    ({"attr": "age", "contains": 3}, "contains applies to strings and lists"),
    ({"attr": "vip", "gt": 1}, "gt does not apply"),
    ({"attr": "vip", "gte": 1}, "gte does not apply, use eq: true"),
    ({"attr": "vip", "eq": 1}, "compare it with true or false"),
    ({"attr": "plan", "eq": 3}, "compare it with a string"),
    ({"attr": "signup", "lt": 20260101}, "an ISO date such as"),
    ({"attr": "interests", "eq": "golf"}, "test its items with contains"),
    ({"attr": "email", "eq": 5}, "'email' is a string field"),
    ({"attr": "agee", "eq": 3}, "did you mean 'age'?"),
])
def test_declared_field_types_refuse_tests_that_cannot_hold(shape: dict[str, Any],
                                                            words: str) -> None:
    error = refused(shape, fields=FIELDS)
    assert error.field.startswith("when")
    assert words in error.reason


@pytest.mark.parametrize("shape", [
    {"attr": "age", "gte": 18}, {"attr": "age", "in": [1, 2.5]}, {"attr": "vip", "eq": False},
    {"attr": "plan", "in": ["pro", "free"]}, {"attr": "signup", "lt": "2026-01-01"},
    {"attr": "interests", "contains": "golf"}, {"attr": "bio", "contains": "ceo"},
    {"attr": "age", "exists": False}, {"attr": "email", "starts_with": "ann"},
])
def test_declared_field_types_accept_tests_that_fit(shape: dict[str, Any]) -> None:
    assert parse_condition(shape, "when", fields=FIELDS).to_json() == shape


def test_fields_are_optional_and_attributes_still_work() -> None:
    # Without declarations nothing is refused for its type: undeclared traits are stored
    # as sent, so any comparison may hold.
    assert parse_condition({"attr": "age", "eq": "30"}, "w")
    assert refused({"attr": "nope", "eq": 1}, attributes=["age"]).field == "when.attr"
    # Declared names from both arguments count.
    assert parse_condition({"attr": "extra", "eq": 1}, "w", ["extra"], fields=FIELDS)


def test_company_fields_check_company_attributes() -> None:
    company = {"employees": "number"}
    assert parse_condition({"company_attr": "employees", "gte": 10}, "w",
                           company_fields=company)
    assert parse_condition({"company_attr": "domain", "eq": "acme.io"}, "w",
                           company_fields=company)
    error = refused({"company_attr": "employes", "gte": 10}, company_fields=company)
    assert error.field == "when.company_attr"
    assert "did you mean 'employees'?" in error.reason
    error = refused({"company_attr": "employees", "eq": "ten"}, company_fields=company)
    assert "number field" in error.reason
    # Contact fields do not cover company attributes.
    assert parse_condition({"company_attr": "anything", "eq": 1}, "w", fields=FIELDS)


def test_referenced_segments_walks_the_whole_tree() -> None:
    condition = parse_condition({"all": [{"segment": "a"}, {"any": [
        {"not": {"segment": "b"}}, {"tag": "c"}]}, {"count": "x", "where": {
            "event_prop": "segment", "eq": "z"}}]}, "w")
    assert referenced_segments(condition) == {"a", "b"}
    assert referenced_segments(parse_condition({"tag": "a"}, "w")) == set()
