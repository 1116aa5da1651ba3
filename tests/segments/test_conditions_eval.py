"""Evaluating the segments issue's kinds in Python, and loading their facts for a batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from cadenza.segments import ANY_EVENT, Facts, Needs, load_facts, parse_condition
from cadenza.store import Store, select_in
from tests.segments.strategies import DAY, NOW, Population
from tests.segments.test_sql_properties import write


def holds(shape: dict[str, Any], facts: Facts, seen: dict[str, Any] | None = None) -> bool:
    return parse_condition(shape, "w").evaluate(facts, seen)


def test_company_attributes_hold_when_any_company_passes() -> None:
    facts = Facts(1, companies=({"industry": "saas", "size": 10}, {"size": 500}))
    seen: dict[str, Any] = {}
    assert holds({"company_attr": "size", "gte": 100}, facts, seen)
    assert seen == {"company_attr.size": [10, 500]}
    assert holds({"company_attr": "industry", "exists": False}, facts)
    assert not holds({"company_attr": "industry", "ne": "saas"}, Facts(1))  # no company


def test_segment_score_grade_and_stage() -> None:
    facts = Facts(1, segments=frozenset({"trial"}), scores={"fit": 72.5},
                  grades={"fit": "A"}, stage="mql")
    seen: dict[str, Any] = {}
    assert holds({"all": [{"segment": "trial"}, {"score": "fit", "gte": 50},
                          {"grade": "fit", "in": ["A", "B"]}, {"stage": ["mql", "sql"]}]},
                 facts, seen)
    assert seen == {"segment.trial": True, "score.fit": 72.5, "grade.fit": "A", "stage": "mql"}
    assert not holds({"score": "engagement", "gte": 0}, facts)
    assert holds({"score": "engagement", "ne": 0}, facts)  # missing passes ne
    assert not holds({"stage": "lead"}, Facts(1))


def test_last_seen_reads_the_age_of_the_latest_event() -> None:
    recent = Facts(1, last_seen={ANY_EVENT: DAY})
    assert holds({"last_seen": "*", "within": "7d"}, recent)
    assert not holds({"last_seen": "*", "before": "7d"}, recent)
    assert holds({"last_seen": "*", "before": "7d"}, Facts(1))  # never seen
    assert holds({"last_seen": "*", "within": "1d"}, recent)  # the edge is inside


def test_aggregates_default_to_zero() -> None:
    count = parse_condition({"count": "v", "between": ["30d", "7d"], "eq": 0}, "w")
    total = parse_condition({"sum": "paid", "of": "revenue", "lte": 0}, "w")
    seen: dict[str, Any] = {}
    assert count.evaluate(Facts(1), seen)
    assert total.evaluate(Facts(1), seen)
    assert seen == {"count.v.30d-7d": 0, "sum.paid.revenue.all": 0.0}


def count_statements(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    calls: Counter[str] = Counter()

    def counting(conn: Any, sql: str, values: Sequence[Any], **kwargs: Any) -> Any:
        calls[sql.split(" FROM ")[1].split()[0]] += 1
        return select_in(conn, sql, values, **kwargs)

    monkeypatch.setattr("cadenza.segments.facts.select_in", counting)
    return calls


def test_load_facts_reads_each_new_kind_in_one_statement(store: Store,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    found = Population(contacts=[(cid, None, None, {}) for cid in range(1, 4)])
    found.companies = [(1, "Acme", "acme.io", {"size": 50, "name": "ignored"}),
                       (2, None, None, {"size": 5})]
    found.members = [(1, 1), (2, 1)]
    found.segments = [(1, 1), (2, 2)]
    found.scores = [(1, 1, 72.5, "A"), (2, 2, 10.0, None)]
    found.stages = [(2, "mql")]
    found.events = [(1, "paid", NOW - DAY, {"revenue": 300, "cur": "EUR"}),
                    (1, "paid", NOW - 10 * DAY, {"revenue": 200.5, "cur": "USD"}),
                    (1, "paid", NOW - 40 * DAY, {"revenue": 1000, "cur": "EUR"}),
                    (2, "paid", NOW - 2 * DAY, {"revenue": "lots"}),
                    (3, "viewed", NOW - 3 * DAY, {})]
    condition = parse_condition({"all": [
        {"company_attr": "size", "gt": 1}, {"segment": "trial"}, {"segment": "paying"},
        {"score": "fit", "gt": 0}, {"grade": "engagement", "exists": True}, {"stage": "mql"},
        {"last_seen": "*", "within": "7d"}, {"last_seen": "paid", "within": "7d"},
        {"sum": "paid", "of": "revenue", "within": "30d", "gt": 0},
        {"sum": "paid", "of": "revenue", "gt": 0},
        {"count": "paid", "between": ["30d", "5d"], "where": {"event_prop": "cur",
                                                                 "eq": "USD"}},
    ]}, "w")
    with store.begin() as conn:
        write(conn, found)
        calls = count_statements(monkeypatch)
        facts = load_facts(conn, [1, 2, 3], condition.needs(), NOW)
    assert calls == Counter(company_members=1, segment_members=1, contact_scores=1,
                            contact_stages=1, events=3)  # any-event, named, one per name
    ann, bob, cat = facts[1], facts[2], facts[3]
    assert ann.companies == ({"size": 50, "name": "Acme", "domain": "acme.io"}, {"size": 5})
    assert ann.segments == {"trial"}
    assert bob.segments == {"paying"}
    assert ann.scores == {"fit": 72.5}
    assert ann.grades == {"fit": "A"}
    assert bob.scores == {"engagement": 10.0}
    assert bob.grades == {}
    assert bob.stage == "mql"
    assert ann.stage is None
    assert ann.last_seen == {"*": DAY, "paid": DAY}
    assert cat.last_seen == {"*": 3 * DAY}
    totals = {(aggregate.kind, aggregate.since_ms): value
              for aggregate, value in ann.aggregates.items()}
    assert totals == {("sum", 30 * DAY): 500.5, ("sum", 0): 1500.5, ("count", 30 * DAY): 1}
    assert bob.aggregates == {}  # "lots" is no number: nothing to add
    assert cat == Facts(3, last_seen={"*": 3 * DAY})


def test_load_facts_without_new_needs_reads_nothing_new(store: Store,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    calls = count_statements(monkeypatch)
    with store.begin() as conn:
        assert load_facts(conn, [1], Needs(), NOW) == {1: Facts(1)}
    assert calls == Counter()
