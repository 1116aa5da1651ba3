"""Parsing: every kind of condition, and every mistake refused with its field and a fix."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml

from cadenza.errors import ValidationFailed
from cadenza.segments import (
    MAX_DEPTH,
    MAX_ITEMS,
    AllOf,
    AnyOf,
    AttributeCondition,
    ConsentCondition,
    CountCondition,
    EventPropertyCondition,
    Not,
    PropertyCondition,
    TagCondition,
    parse_condition,
)

WHEN = "steps.by-plan.branch.0.when"
DAY = 86_400_000


def refused(value: Any, attributes: list[str] | None = None,
            where: str = WHEN) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        parse_condition(value, where, attributes)
    return caught.value


def test_every_kind_parses_to_its_node() -> None:
    text = """
    all:
      - {attr: plan, eq: pro}
      - {prop: order.total, gt: 100}
      - {event_prop: order_id, eq: A1}
      - {count: purchased, within: 30d, gte: 1}
      - {consent: email, purpose: marketing}
      - {consent: sms, purpose: marketing, status: none}
      - any: [{tag: vip}, {not: {attr: churned, exists: true}}]
    """
    parsed = parse_condition(yaml.safe_load(text), "when")
    assert parsed == AllOf((
        AttributeCondition("plan", "eq", "pro"),
        PropertyCondition("order.total", "gt", 100),
        EventPropertyCondition("order_id", "eq", "A1"),
        CountCondition("purchased", 30 * DAY, "gte", 1),
        ConsentCondition("email", "marketing"),
        ConsentCondition("sms", "marketing", "none"),
        AnyOf((TagCondition("vip"), Not(AttributeCondition("churned", "exists", True)))),
    ))


@pytest.mark.parametrize(("value", "op", "operand"), [
    ({"attr": "plan", "eq": "pro"}, "eq", "pro"),
    ({"attr": "plan", "ne": 3}, "ne", 3),
    ({"attr": "plan", "in": ["a", "b"]}, "in", ("a", "b")),
    ({"attr": "plan", "not_in": [1, 2.5, True]}, "not_in", (1, 2.5, True)),
    ({"attr": "age", "gt": 18}, "gt", 18),
    ({"attr": "age", "gte": 1.5}, "gte", 1.5),
    ({"attr": "signup", "lt": "2026-01-01"}, "lt", "2026-01-01"),
    ({"attr": "signup", "lte": dt.date(2026, 1, 31)}, "lte", "2026-01-31"),
    ({"attr": "seen", "gt": dt.datetime(2026, 1, 31, 10, 0, tzinfo=dt.timezone(
        dt.timedelta(hours=2)))}, "gt", "2026-01-31T08:00:00Z"),
    ({"attr": "plan", "exists": False}, "exists", False),
    ({"attr": "interests", "contains": "golf"}, "contains", "golf"),
    ({"attr": "email", "starts_with": "ann"}, "starts_with", "ann"),
])
def test_operators_and_their_operands(value: dict[str, Any], op: str, operand: Any) -> None:
    parsed = parse_condition(value, "w")
    assert isinstance(parsed, AttributeCondition)
    assert (parsed.op, parsed.value) == (op, operand)


def test_count_defaults_to_at_least_one_over_all_time() -> None:
    assert parse_condition({"count": "purchased"}, "w") == CountCondition("purchased", 0,
                                                                           "gte", 1)
    assert parse_condition({"count": "opened", "within": "1d12h", "lt": 3}, "w") == \
        CountCondition("opened", 36 * 3_600_000, "lt", 3)


# --- structure -------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "field", "reason"), [
    ("plan == pro", WHEN, "must be a condition such as {attr: plan, eq: pro}, not the string"),
    ([{"tag": "vip"}], WHEN, "not a list"),
    (None, WHEN, "not null"),
    ({}, WHEN, "is empty"),
    ({"atr": "plan", "eq": "pro"}, f"{WHEN}.atr", "unknown key 'atr' (did you mean 'attr'?)"),
    ({"nott": {"tag": "x"}}, f"{WHEN}.nott", "(did you mean 'not'?)"),
    ({"zzz": 1}, WHEN, "names no kind of condition; start it with one of attr, prop"),
    ({1: "x"}, WHEN, "is not a string"),
    ({"attr": "plan", "tag": "vip"}, WHEN, "mixes 'attr' and 'tag'"),
    ({"all": {"tag": "vip"}}, f"{WHEN}.all", "must be a list of conditions"),
    ({"any": []}, f"{WHEN}.any", "empty list"),
    ({"all": [{"tag": "a"}], "any": [{"tag": "b"}]}, WHEN, "mixes 'all' and 'any'"),
    ({"all": [{"tag": "a"}], "tag": "b"}, WHEN, "mixes"),
    ({"all": [{"tag": "a"}], "eq": 1}, f"{WHEN}.eq", "an all condition takes no other key"),
    ({"not": [{"tag": "a"}]}, f"{WHEN}.not", "not a list"),
    ({"not": {"tag": "a"}, "why": "x"}, f"{WHEN}.why", "takes no other key"),
    ({"tag": "vip", "eq": True}, f"{WHEN}.eq", "a tag condition takes no other key"),
])
def test_structure_mistakes(value: Any, field: str, reason: str) -> None:
    error = refused(value)
    assert (error.field, reason in error.reason) == (field, True), error.reason


def test_field_paths_go_through_combinators() -> None:
    value = {"all": [{"tag": "vip"}, {"any": [{"not": {"attr": "plan", "equals": "pro"}}]}]}
    error = refused(value)
    assert error.field == f"{WHEN}.all.1.any.0.not.equals"
    assert error.reason == "unknown operator 'equals' (did you mean 'eq'?)"
    assert str(error) == f"{WHEN}.all.1.any.0.not.equals: {error.reason}"


def test_an_empty_where_gives_bare_paths() -> None:
    assert refused({"all": [{"attr": "x"}]}, where="").field == "all.0"


# --- attr, prop, event_prop ------------------------------------------------------------------

@pytest.mark.parametrize(("key", "meant"), [
    ("equals", "eq"), ("Equals", "eq"), ("eqq", "eq"), ("==", "eq"), ("neq", "ne"),
    ("notIn", "not_in"), ("not-in", "not_in"), ("greater_than", "gt"), (">=", "gte"),
    ("startsWith", "starts_with"), ("includes", "contains"), ("exist", "exists"),
])
def test_unknown_operators_get_a_suggestion(key: str, meant: str) -> None:
    error = refused({"attr": "plan", key: "pro"})
    assert error.field == f"{WHEN}.{key}"
    assert error.reason == f"unknown operator {key!r} (did you mean {meant!r}?)"


def test_an_operator_nothing_like_any_lists_them_all() -> None:
    error = refused({"prop": "x", "frobnicate": 1})
    assert error.reason.startswith("unknown operator 'frobnicate'; use one of eq, ne, in")


@pytest.mark.parametrize(("value", "field", "reason"), [
    ({"attr": "plan"}, WHEN, "needs an operator: one of eq, ne"),
    ({"attr": "age", "gte": 18, "lt": 65}, WHEN, "several operators (gte, lt)"),
    ({"attr": "", "eq": 1}, f"{WHEN}.attr", "must name an attribute"),
    ({"attr": 3, "eq": 1}, f"{WHEN}.attr", "must name an attribute"),
    ({"attr": "x" * 300, "eq": 1}, f"{WHEN}.attr", "longer than 256"),
    ({"prop": "order..total", "eq": 1}, f"{WHEN}.prop", "has an empty part"),
    ({"event_prop": None, "eq": 1}, f"{WHEN}.event_prop", "must name a property path"),
    ({"attr": "plan", "eq": None}, f"{WHEN}.eq", "to test for a missing value use exists"),
    ({"attr": "plan", "eq": ["a", "b"]}, f"{WHEN}.eq", "use in: [...]"),
    ({"attr": "plan", "ne": ["a", "b"]}, f"{WHEN}.ne", "use not_in: [...]"),
    ({"attr": "plan", "eq": {"a": 1}}, f"{WHEN}.eq", "must be a string, a number or true"),
    ({"attr": "plan", "eq": float("nan")}, f"{WHEN}.eq", "not float"),
    ({"attr": "plan", "in": "pro"}, f"{WHEN}.in", "must be a list of values"),
    ({"attr": "plan", "not_in": 3}, f"{WHEN}.not_in", "for one value use ne"),
    ({"attr": "plan", "in": []}, f"{WHEN}.in", "empty list"),
    ({"attr": "plan", "in": ["a", None]}, f"{WHEN}.in.1", "not null"),
    ({"attr": "plan", "in": ["a", ["b"]]}, f"{WHEN}.in.1", "not a list"),
    ({"attr": "age", "gt": [18]}, f"{WHEN}.gt", "must be a number or a string"),
    ({"attr": "age", "lte": True}, f"{WHEN}.lte", "must be a number or a string"),
    ({"attr": "age", "gte": None}, f"{WHEN}.gte", "must be a number or a string"),
    ({"attr": "age", "lt": float("inf")}, f"{WHEN}.lt", "must be a number or a string"),
    ({"attr": "plan", "exists": "yes"}, f"{WHEN}.exists", "must be true or false"),
    ({"attr": "plan", "exists": 1}, f"{WHEN}.exists", "must be true or false"),
    ({"attr": "plan", "contains": ["a"]}, f"{WHEN}.contains", "not a list"),
    ({"attr": "plan", "starts_with": 1}, f"{WHEN}.starts_with", "must be a string"),
])
def test_value_test_mistakes(value: dict[str, Any], field: str, reason: str) -> None:
    error = refused(value)
    assert (error.field, reason in error.reason) == (field, True), error.reason


def test_declared_attributes_are_checked_with_a_suggestion() -> None:
    declared = ["plan", "lifetime_value"]
    parse_condition({"attr": "plan", "eq": "pro"}, "w", declared)
    for builtin in ("email", "phone", "user_id", "timezone", "locale"):
        parse_condition({"attr": builtin, "exists": True}, "w", declared)
    error = refused({"all": [{"tag": "vip"}, {"attr": "paln", "eq": "pro"}]}, declared)
    assert error.field == f"{WHEN}.all.1.attr"
    assert error.reason == "attribute 'paln' is neither built in nor declared " \
                           "(did you mean 'plan'?)"
    error = refused({"attr": "emial", "exists": True}, declared)
    assert "(did you mean 'email'?)" in error.reason
    error = refused({"attr": "zzzz", "exists": True}, declared)
    assert error.reason.endswith("declare it as a field first, or check the spelling")


def test_without_declared_attributes_any_name_goes_but_an_empty_list_declares_none() -> None:
    assert parse_condition({"attr": "anything", "eq": 1}, "w") == \
        AttributeCondition("anything", "eq", 1)
    with pytest.raises(ValidationFailed):
        parse_condition({"attr": "anything", "eq": 1}, "w", [])


# --- count, consent, tag ---------------------------------------------------------------------

@pytest.mark.parametrize(("value", "field", "reason"), [
    ({"count": "", "gte": 1}, f"{WHEN}.count", "must name an event"),
    ({"count": "x", "within": "3x"}, f"{WHEN}.within", "is not a duration"),
    ({"count": "x", "within": "-1d"}, f"{WHEN}.within", "negative"),
    ({"count": "x", "within": "0s"}, f"{WHEN}.within", "leave within out to count all time"),
    ({"count": "x", "within": "20y"}, f"{WHEN}.within", "not a duration"),
    ({"count": "x", "within": "4000d"}, f"{WHEN}.within", "longer than 10 years"),
    ({"count": "x", "in": [1]}, f"{WHEN}.in", "'in' does not apply to a count"),
    ({"count": "x", "exists": True}, f"{WHEN}.exists", "does not apply to a count"),
    ({"count": "x", "witin": "1d"}, f"{WHEN}.witin", "(did you mean 'within'?)"),
    ({"count": "x", "gte": 1, "lt": 5}, WHEN, "several operators (gte, lt)"),
    ({"count": "x", "gte": -1}, f"{WHEN}.gte", "whole number of events"),
    ({"count": "x", "gte": 1.5}, f"{WHEN}.gte", "whole number of events"),
    ({"count": "x", "eq": True}, f"{WHEN}.eq", "whole number of events"),
    ({"count": "x", "eq": "2"}, f"{WHEN}.eq", "whole number of events"),
    ({"consent": "emial", "purpose": "marketing"}, f"{WHEN}.consent",
     "'emial' is not a channel (did you mean 'email'?)"),
    ({"consent": ["email"], "purpose": "marketing"}, f"{WHEN}.consent", "is not a channel"),
    ({"consent": "email"}, WHEN, "needs a purpose"),
    ({"consent": "email", "purpose": "Marketing!"}, f"{WHEN}.purpose", "lower-case slug"),
    ({"consent": "email", "purpose": "marketing", "status": "optedin"}, f"{WHEN}.status",
     "(did you mean 'opted_in'?)"),
    ({"consent": "email", "purpose": "marketing", "stauts": "pending"}, f"{WHEN}.stauts",
     "(did you mean 'status'?)"),
    ({"tag": ""}, f"{WHEN}.tag", "must name a tag"),
    ({"tag": "x" * 129}, f"{WHEN}.tag", "longer than 128"),
])
def test_count_consent_tag_mistakes(value: dict[str, Any], field: str, reason: str) -> None:
    error = refused(value)
    assert (error.field, reason in error.reason) == (field, True), error.reason


# --- hostile input ---------------------------------------------------------------------------

def test_deep_nesting_is_refused_without_recursion_error() -> None:
    value: Any = {"tag": "vip"}
    for _ in range(100_000):
        value = {"not": value}
    error = refused(value)
    assert f"nested more than {MAX_DEPTH} levels" in error.reason
    assert error.field == WHEN + ".not" * MAX_DEPTH


def test_nesting_up_to_the_cap_is_fine() -> None:
    value: Any = {"tag": "vip"}
    for _ in range(MAX_DEPTH - 1):
        value = {"all": [value]}
    assert parse_condition(value, "w").to_json() == value


def test_deeply_nested_operand_is_refused_without_recursion() -> None:
    operand: Any = []
    for _ in range(100_000):
        operand = [operand]
    assert refused({"attr": "x", "in": operand}).field == f"{WHEN}.in.0"


@pytest.mark.parametrize("kind", ["in", "not_in"])
def test_huge_value_lists_are_refused(kind: str) -> None:
    parse_condition({"attr": "x", kind: list(range(MAX_ITEMS))}, "w")
    error = refused({"attr": "x", kind: list(range(MAX_ITEMS + 1))})
    assert error.field == f"{WHEN}.{kind}"
    assert f"at most {MAX_ITEMS}" in error.reason


def test_huge_combinator_lists_are_refused() -> None:
    error = refused({"any": [{"tag": "t"}] * (MAX_ITEMS + 1)})
    assert (error.field, f"at most {MAX_ITEMS}" in error.reason) == (f"{WHEN}.any", True)


def test_huge_keys_are_shown_short() -> None:
    error = refused({"attr": "x", "q" * 1_000_000: 1})
    assert len(error.reason) < 300
