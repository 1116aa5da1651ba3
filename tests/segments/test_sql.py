"""The SQL compiler on hand-picked cases: each rule of the language, edges of windows,
refusals, bound parameters and the plans SQLite picks. (The property test beside this file
covers random conditions.)"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cadenza.errors import ValidationFailed
from cadenza.segments import condition_sql, parse_condition, select_matching
from cadenza.store import Store
from tests.segments.strategies import DAY, NOW, Population
from tests.segments.test_sql_properties import python_answer, write


def both(store: Store, found: Population, shape: dict[str, Any]) -> set[int]:
    """The matching ids, after checking that SQL and Python agree on them."""
    with store.begin() as conn:
        write(conn, found)
        select = select_matching(parse_condition(shape, "c"), conn.dialect.name, NOW)
        in_sql = {int(r[0]) for r in conn.execute(select)}
        assert in_sql == python_answer(conn, shape)
        conn.rollback()
    return in_sql


def people(*attributes: dict[str, Any]) -> Population:
    return Population(contacts=[(cid, None, None, attrs)
                                for cid, attrs in enumerate(attributes, 1)])


def test_no_coercion_between_types(store: Store) -> None:
    found = people({"age": 1}, {"age": 1.0}, {"age": "1"}, {"age": True}, {"age": [1]}, {})
    assert both(store, found, {"attr": "age", "eq": 1}) == {1, 2}
    assert both(store, found, {"attr": "age", "eq": 1.0}) == {1, 2}
    assert both(store, found, {"attr": "age", "eq": "1"}) == {3}
    assert both(store, found, {"attr": "age", "eq": True}) == {4}
    assert both(store, found, {"attr": "age", "ne": 1}) == {3, 4, 5, 6}
    assert both(store, found, {"attr": "age", "gte": 1}) == {1, 2}
    assert both(store, found, {"attr": "age", "contains": 1}) == {5}
    assert both(store, found, {"attr": "age", "in": [True, "1"]}) == {3, 4}
    assert both(store, found, {"attr": "age", "in": [1, True]}) == {1, 2, 4}  # 1 == True


def test_missing_fails_all_but_ne_not_in_and_exists_false(store: Store) -> None:
    found = people({"plan": None}, {}, {"plan": "pro"})
    assert both(store, found, {"attr": "plan", "eq": "pro"}) == {3}
    assert both(store, found, {"attr": "plan", "ne": "pro"}) == {1, 2}
    assert both(store, found, {"attr": "plan", "not_in": ["x"]}) == {1, 2, 3}
    assert both(store, found, {"attr": "plan", "exists": False}) == {1, 2}
    assert both(store, found, {"attr": "plan", "lt": "zzz"}) == {3}
    assert both(store, found, {"not": {"attr": "plan", "lt": "zzz"}}) == {1, 2}


def test_strings_order_by_code_point_and_contains_is_case_sensitive(store: Store) -> None:
    found = people({"n": "Zed"}, {"n": "apple"}, {"n": "éclair"}, {"n": "Apple pie"},
                   {"n": ["apple", "x"]}, {"n": "[1]"}, {"n": [1]})
    assert both(store, found, {"attr": "n", "lt": "a"}) == {1, 4, 6}
    assert both(store, found, {"attr": "n", "gt": "z"}) == {3}
    assert both(store, found, {"attr": "n", "contains": "pple"}) == {2, 4}
    assert both(store, found, {"attr": "n", "contains": "apple"}) == {2, 5}
    assert both(store, found, {"attr": "n", "starts_with": "A"}) == {4}
    # An array is not the text of its JSON.
    assert both(store, found, {"attr": "n", "eq": "[1]"}) == {6}


def test_keys_that_need_escaping_and_list_indexes(store: Store) -> None:
    found = people({'q"x': "yes", "a\\b": 1}, {'q"x': "no"})
    assert both(store, found, {"attr": 'q"x', "eq": "yes"}) == {1}
    assert both(store, found, {"attr": "a\\b", "exists": True}) == {1}
    found.events = [(1, "bought", NOW - DAY, {"items": [{"price": 5}, {"price": 7}]}),
                    (2, "bought", NOW - DAY, {"items": {"0": {"price": 5}}}),
                    (2, "bought", NOW - DAY, {"items": [{"price": "5"}]})]
    # items.0 is the first item of a list, or the key "0" of an object, as in Python; the
    # string "5" is no number.
    assert both(store, found, {"sum": "bought", "of": "items.0.price", "eq": 5}) == {1, 2}
    assert both(store, found, {"count": "bought", "where": {"event_prop": "items.1.price",
                                                            "eq": 7}}) == {1}


def test_builtin_attributes_are_columns(store: Store) -> None:
    found = Population(contacts=[(1, "ann@x.io", "en", {"email": "json@x.io"}),
                                 (2, None, None, {"email": "json@x.io"})])
    assert both(store, found, {"attr": "email", "eq": "json@x.io"}) == set()
    assert both(store, found, {"attr": "email", "exists": False}) == {2}
    assert both(store, found, {"attr": "locale", "starts_with": "e"}) == {1}


def test_count_windows_and_their_edges(store: Store) -> None:
    found = people({}, {}, {}, {})
    found.events = [(1, "viewed", NOW - 30 * DAY, {}), (2, "viewed", NOW - 30 * DAY - 1, {}),
                    (3, "viewed", NOW - 7 * DAY, {}), (4, "viewed", NOW - 7 * DAY + 1, {})]
    assert both(store, found, {"count": "viewed", "within": "30d"}) == {1, 3, 4}
    # between: from 30 days ago (included) to 7 days ago (excluded).
    assert both(store, found, {"count": "viewed", "between": ["30d", "7d"]}) == {1}
    assert both(store, found, {"count": "viewed", "between": ["30d", "7d"],
                               "eq": 0}) == {2, 3, 4}
    assert both(store, found, {"count": "viewed", "between": ["30d", "7d"]}) == {1}


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("eq", 0, {3}), ("lt", 2, {2, 3}), ("lte", 1, {2, 3}), ("ne", 2, {2, 3}),
    ("gte", 0, {1, 2, 3}), ("gt", 1, {1}), ("eq", 2, {1}), ("gte", 1, {1, 2}),
])
def test_counts_that_zero_passes(store: Store, op: str, value: int,
                                 expected: set[int]) -> None:
    found = people({}, {}, {})
    found.events = [(1, "viewed", NOW - DAY, {}), (1, "viewed", NOW - DAY, {}),
                    (2, "viewed", NOW - DAY, {}), (3, "other", NOW - DAY, {})]
    assert both(store, found, {"count": "viewed", "within": "7d", op: value}) == expected


def test_sum_skips_what_is_not_a_number(store: Store) -> None:
    found = people({}, {}, {}, {})
    found.events = [(1, "paid", NOW - DAY, {"revenue": 300}), (1, "paid", NOW - DAY,
                                                               {"revenue": 250.5}),
                    (2, "paid", NOW - DAY, {"revenue": "900"}), (2, "paid", NOW - DAY,
                                                                 {"revenue": True}),
                    (3, "paid", NOW - 100 * DAY, {"revenue": 900})]
    assert both(store, found, {"sum": "paid", "of": "revenue", "within": "90d",
                               "gte": 500}) == {1}
    assert both(store, found, {"sum": "paid", "of": "revenue", "within": "90d",
                               "eq": 0}) == {2, 3, 4}
    assert both(store, found, {"sum": "paid", "of": "revenue", "lt": 550.5}) == {2, 4}


def test_last_seen_within_and_before(store: Store) -> None:
    found = people({}, {}, {})
    found.events = [(1, "viewed", NOW - DAY, {}), (2, "bought", NOW - 40 * DAY, {})]
    assert both(store, found, {"last_seen": "*", "within": "7d"}) == {1}
    assert both(store, found, {"last_seen": "*", "before": "30d"}) == {2, 3}
    assert both(store, found, {"last_seen": "bought", "before": "7d"}) == {1, 2, 3}


def test_other_tables(store: Store) -> None:
    found = people({}, {}, {})
    found.companies = [(1, "Acme", None, {"size": 50}), (2, None, None, {"size": 5})]
    found.members = [(1, 1), (2, 1), (2, 2)]
    found.segments = [(1, 1)]
    found.scores = [(1, 1, 72.5, "A"), (1, 2, 10.0, None)]
    found.stages = [(1, "mql"), (2, "lead")]
    found.consents = [(1, "email", "marketing", "opted_in"), (2, "email", "marketing",
                                                             "opted_out")]
    assert both(store, found, {"company_attr": "size", "gte": 10}) == {1}
    # Any company passes: contact 1's second company is not size 50; no company, no test.
    assert both(store, found, {"company_attr": "size", "ne": 50}) == {1, 2}
    assert both(store, found, {"company_attr": "name", "exists": False}) == {1, 2}
    assert both(store, found, {"segment": "trial"}) == {1}
    assert both(store, found, {"score": "fit", "gte": 50}) == {1}
    assert both(store, found, {"score": "fit", "ne": 10}) == {1, 3}
    assert both(store, found, {"grade": "fit", "exists": False}) == {2, 3}
    assert both(store, found, {"stage": ["mql", "sql"]}) == {1}
    assert both(store, found, {"consent": "email", "purpose": "marketing",
                               "status": "none"}) == {3}


def test_merged_contacts_never_match(store: Store) -> None:
    found = people({"plan": "pro"}, {"plan": "pro"})
    found.merged = [(2, 1)]
    assert both(store, found, {"attr": "plan", "eq": "pro"}) == {1}


@pytest.mark.parametrize(("shape", "field"), [
    ({"prop": "order.total", "gt": 1}, "segment.prop"),
    ({"all": [{"tag": "a"}, {"event_prop": "x", "eq": 1}]}, "segment.all.1.event_prop"),
    ({"count": "x", "where": {"event_prop": "a.0.1.2.3.4", "eq": 1}},
     "segment.where.event_prop"),
])
def test_what_has_no_meaning_for_a_set_is_refused(shape: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        condition_sql(parse_condition(shape, "w"), "sqlite", NOW, where="segment")
    assert caught.value.field == field


def test_user_values_are_bound_never_written_into_the_sql() -> None:
    hostile = "x'); DROP TABLE contacts; --"
    shape = {"all": [{"attr": hostile, "eq": hostile}, {"count": hostile, "where": {
        "event_prop": hostile, "contains": hostile}}, {"segment": hostile}]}
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        text = str(select_matching(parse_condition(shape, "c"), dialect.name,
                                   NOW).compile(dialect=dialect))
        assert "DROP" not in text


def test_sqlite_plans_use_the_event_indexes(store: Store) -> None:
    if store.dialect != "sqlite":
        pytest.skip("SQLite's planner")
    shapes = [{"count": "viewed", "within": "30d", "gte": 3},
              {"count": "viewed", "within": "30d", "eq": 0},
              {"sum": "paid", "of": "revenue", "within": "30d", "lt": 5},
              {"last_seen": "viewed", "before": "7d"}]
    with store.read() as conn:
        for shape in shapes:
            select = select_matching(parse_condition(shape, "c"), "sqlite", NOW)
            compiled = select.compile(conn, compile_kwargs={"literal_binds": True})
            plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}"))
            assert "ix_events_name_timestamp" in plan, plan
            assert "SCAN events" not in plan, plan
    any_event = select_matching(parse_condition({"last_seen": "*", "within": "7d"}, "c"),
                                "sqlite", NOW)
    with store.read() as conn:
        compiled = any_event.compile(conn, compile_kwargs={"literal_binds": True})
        plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}"))
    assert "ix_events_contact_id_timestamp" in plan, plan


def test_condition_sql_is_a_boolean_over_contacts() -> None:
    expr = condition_sql(parse_condition({"tag": "vip"}, "c"), "postgres", NOW)
    assert isinstance(expr, sa.ColumnElement)
    with pytest.raises(ValueError, match="unknown dialect"):
        condition_sql(parse_condition({"tag": "vip"}, "c"), "mysql", NOW)
