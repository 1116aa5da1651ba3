"""Evaluation: what each operator means, what missing values do, and what `seen` records."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza.segments import Facts, Needs, parse_condition

DAY = 86_400_000

ATTRIBUTES = {
    "plan": "pro", "age": 30, "ratio": 0.5, "vip": True, "signup": "2026-01-15",
    "interests": ["golf", "chess", 3], "nothing": None, "address": {"city": "Oslo"},
}


def holds(condition: dict[str, Any], facts: Facts | None = None) -> bool:
    return parse_condition(condition, "w").evaluate(facts or Facts(1, attributes=ATTRIBUTES))


@pytest.mark.parametrize(("condition", "expected"), [
    ({"attr": "plan", "eq": "pro"}, True),
    ({"attr": "plan", "eq": "Pro"}, False),
    ({"attr": "age", "eq": 30.0}, True),
    ({"attr": "age", "eq": "30"}, False),          # no string/number coercion
    ({"attr": "vip", "eq": True}, True),
    ({"attr": "vip", "eq": 1}, False),             # a boolean is not a number
    ({"attr": "age", "eq": True}, False),
    ({"attr": "plan", "ne": "free"}, True),
    ({"attr": "plan", "ne": "pro"}, False),
    ({"attr": "plan", "in": ["free", "pro"]}, True),
    ({"attr": "vip", "in": [1, 2]}, False),
    ({"attr": "plan", "not_in": ["free", "pro"]}, False),
    ({"attr": "age", "gt": 29}, True),
    ({"attr": "age", "gt": 30}, False),
    ({"attr": "age", "gte": 30}, True),
    ({"attr": "ratio", "lt": 1}, True),
    ({"attr": "ratio", "lte": 0.5}, True),
    ({"attr": "age", "gt": "3"}, False),           # number against string: false, both ways
    ({"attr": "age", "lt": "3"}, False),
    ({"attr": "vip", "gt": 0}, False),             # booleans never order
    ({"attr": "signup", "gte": "2026-01-01"}, True),
    ({"attr": "signup", "lt": "2026-01-01"}, False),
    ({"attr": "plan", "exists": True}, True),
    ({"attr": "plan", "exists": False}, False),
    ({"attr": "nothing", "exists": True}, False),  # null is missing
    ({"attr": "interests", "contains": "golf"}, True),
    ({"attr": "interests", "contains": 3}, True),
    ({"attr": "interests", "contains": "go"}, False),  # lists hold items, not substrings
    ({"attr": "plan", "contains": "r"}, True),
    ({"attr": "plan", "contains": 1}, False),
    ({"attr": "age", "contains": 3}, False),
    ({"attr": "plan", "starts_with": "p"}, True),
    ({"attr": "plan", "starts_with": "P"}, False),
    ({"attr": "age", "starts_with": "3"}, False),
    ({"attr": "address", "eq": "Oslo"}, False),
])
def test_operators(condition: dict[str, Any], expected: bool) -> None:
    assert holds(condition) is expected


@pytest.mark.parametrize(("op", "operand", "expected"), [
    ("eq", "x", False), ("ne", "x", True), ("in", ["x"], False), ("not_in", ["x"], True),
    ("gt", 1, False), ("gte", 1, False), ("lt", 1, False), ("lte", "z", False),
    ("exists", True, False), ("exists", False, True), ("contains", "x", False),
    ("starts_with", "x", False),
])
@pytest.mark.parametrize("name", ["missing", "nothing"])
def test_missing_values(name: str, op: str, operand: Any, expected: bool) -> None:
    assert holds({"attr": name, op: operand}) is expected


def test_props_follow_dotted_paths_into_entry_and_event() -> None:
    facts = Facts(1, entry={"order": {"total": 120, "items": [{"sku": "A"}, {"sku": "B"}]}},
                  event={"order_id": "A1", "n": 0})
    assert holds({"prop": "order.total", "gt": 100}, facts)
    assert holds({"prop": "order.items.1.sku", "eq": "B"}, facts)
    assert not holds({"prop": "order.items.2.sku", "exists": True}, facts)
    assert not holds({"prop": "order.total.x", "exists": True}, facts)
    assert not holds({"prop": "order_id", "exists": True}, facts)  # entry, not event
    assert holds({"event_prop": "order_id", "eq": "A1"}, facts)
    assert holds({"event_prop": "n", "exists": True}, facts)        # 0 is a value
    assert not holds({"event_prop": "order.total", "exists": True}, facts)


def test_counts_default_to_zero() -> None:
    facts = Facts(1, counts={("purchased", 30 * DAY): 2})
    assert holds({"count": "purchased", "within": "30d", "gte": 2}, facts)
    assert not holds({"count": "purchased", "within": "30d", "gt": 2}, facts)
    assert holds({"count": "purchased", "within": "7d", "eq": 0}, facts)
    assert not holds({"count": "purchased"}, facts)  # all time is its own window
    assert holds({"count": "opened", "lt": 1}, facts)


def test_consent_and_tags() -> None:
    facts = Facts(1, consents={("email", "marketing"): "opted_in",
                               ("sms", "marketing"): "opted_out"}, tags=frozenset({"vip"}))
    assert holds({"consent": "email", "purpose": "marketing"}, facts)
    assert not holds({"consent": "sms", "purpose": "marketing"}, facts)
    assert holds({"consent": "sms", "purpose": "marketing", "status": "opted_out"}, facts)
    assert holds({"consent": "push", "purpose": "marketing", "status": "none"}, facts)
    assert not holds({"consent": "email", "purpose": "newsletter"}, facts)
    assert holds({"tag": "vip"}, facts)
    assert not holds({"tag": "VIP"}, facts)


def test_combinators() -> None:
    yes, no = {"attr": "plan", "eq": "pro"}, {"attr": "plan", "eq": "free"}
    assert holds({"all": [yes, yes]})
    assert not holds({"all": [yes, no]})
    assert holds({"any": [no, yes]})
    assert not holds({"any": [no, no]})
    assert holds({"not": no})
    assert not holds({"not": {"not": no}})


def test_seen_records_each_leaf_looked_at() -> None:
    condition = parse_condition({"all": [
        {"attr": "plan", "eq": "pro"},
        {"attr": "missing", "exists": False},
        {"prop": "order.total", "gt": 100},
        {"event_prop": "order_id", "eq": "A1"},
        {"count": "purchased", "within": "30d", "gte": 1},
        {"count": "opened", "gte": 0},
        {"consent": "email", "purpose": "marketing", "status": "none"},
        {"not": {"tag": "vip"}},
    ]}, "w")
    facts = Facts(1, attributes={"plan": "pro"}, entry={"order": {"total": 120}},
                  event={"order_id": "A1"}, counts={("purchased", 30 * DAY): 2})
    seen: dict[str, Any] = {}
    assert condition.evaluate(facts, seen)
    assert seen == {
        "attr.plan": "pro", "attr.missing": None, "prop.order.total": 120,
        "event_prop.order_id": "A1", "count.purchased.30d": 2, "count.opened.all": 0,
        "consent.email.marketing": "none", "tag.vip": False,
    }


def test_seen_stops_where_evaluation_stops() -> None:
    condition = parse_condition({"any": [{"tag": "vip"}, {"attr": "plan", "eq": "pro"}]}, "w")
    seen: dict[str, Any] = {}
    assert condition.evaluate(Facts(1, tags=frozenset({"vip"})), seen)
    assert seen == {"tag.vip": True}


def test_needs_collects_what_to_load() -> None:
    condition = parse_condition({"any": [
        {"attr": "plan", "eq": "pro"},
        {"prop": "x", "eq": 1},
        {"count": "purchased", "within": "30d"},
        {"not": {"count": "purchased"}},
        {"consent": "email", "purpose": "marketing"},
        {"all": [{"tag": "vip"}, {"consent": "sms", "purpose": "news"}]},
    ]}, "w")
    assert condition.needs() == Needs(
        attributes=True, tags=True,
        counts=frozenset({("purchased", 30 * DAY), ("purchased", 0)}),
        consents=frozenset({("email", "marketing"), ("sms", "news")}),
    )
    assert not parse_condition({"event_prop": "x", "eq": 1}, "w").needs()
    assert Needs(attributes=True) | Needs(tags=True) == Needs(attributes=True, tags=True)


def test_to_json_is_the_canonical_form() -> None:
    value = {"all": [
        {"attr": "plan", "in": ["a", "b"]},
        {"count": "purchased", "within": "1d12h", "gte": 1},
        {"count": "opened", "gte": 1},
        {"consent": "email", "purpose": "marketing"},
        {"consent": "sms", "purpose": "marketing", "status": "pending"},
        {"not": {"tag": "vip"}},
    ]}
    assert parse_condition(value, "w").to_json() == value
    assert parse_condition({"count": "x", "within": "36h"}, "w").to_json() == \
        {"count": "x", "within": "1d12h", "gte": 1}
