"""The issue's proof: one definition, the same answers in SQL (whole sets) and in Python (one
contact at a time), on both dialects.

Hypothesis draws a population (contacts with attributes of mixed JSON types, companies,
consents, tags, segment memberships, scores, stages, events on and beside window edges) and
conditions of every kind; for each, the ids `select_matching` returns must be exactly the
live contacts whose facts (`load_facts`) make `evaluate` true.
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Connection

from cadenza.segments import load_facts, parse_condition, select_matching
from cadenza.store import Store, dumps, insert_rows, schema
from tests.segments.strategies import (
    MODELS,
    NOW,
    SEGMENTS,
    Population,
    conditions,
    leaves,
    populations,
)

_TABLES = (schema.events, schema.contact_stages, schema.contact_scores, schema.score_models,
           schema.segment_members, schema.segments, schema.contact_tags, schema.consents,
           schema.company_members, schema.companies, schema.contacts)


def write(conn: Connection, found: Population) -> None:
    """Replace every row the conditions read with `found` (bulk inserts)."""
    for table in _TABLES:
        conn.execute(table.delete())
    insert_rows(conn, schema.contacts, ("id", "email", "locale", "attributes", "created_at",
                                        "updated_at"),
                [(cid, email, locale, dumps(attrs), NOW, NOW)
                 for cid, email, locale, attrs in found.contacts])
    for loser, winner in found.merged:
        conn.execute(schema.contacts.update().where(schema.contacts.c.id == loser)
                     .values(merged_into=winner))
    insert_rows(conn, schema.companies, ("id", "group_id", "name", "domain", "attributes",
                                         "created_at", "updated_at"),
                [(cid, f"g{cid}", name, domain, dumps(attrs), NOW, NOW)
                 for cid, name, domain, attrs in found.companies])
    insert_rows(conn, schema.company_members, ("company_id", "contact_id", "created_at"),
                [(*row, NOW) for row in found.members])
    insert_rows(conn, schema.consents, ("contact_id", "channel", "purpose", "status",
                                        "source", "updated_at"),
                [(*row, "test", NOW) for row in found.consents])
    insert_rows(conn, schema.contact_tags, ("contact_id", "tag", "created_at"),
                [(*row, NOW) for row in found.tags])
    insert_rows(conn, schema.segments, ("id", "key", "name", "description", "kind",
                                        "depends_on", "status", "member_count", "created_at",
                                        "updated_at"),
                [(i, key, key, "", "static", "[]", "active", 0, NOW, NOW)
                 for i, key in enumerate(SEGMENTS, 1)])
    insert_rows(conn, schema.segment_members, ("segment_id", "contact_id", "since", "source"),
                [(*row, NOW, "api") for row in found.segments])
    insert_rows(conn, schema.score_models, ("id", "key", "name", "kind", "definition",
                                            "status", "created_at", "updated_at"),
                [(i, key, key, "rules", "{}", "active", NOW, NOW)
                 for i, key in enumerate(MODELS, 1)])
    insert_rows(conn, schema.contact_scores, ("model_id", "contact_id", "score", "grade",
                                              "explanation", "as_of"),
                [(*row, "{}", NOW) for row in found.scores])
    insert_rows(conn, schema.contact_stages, ("contact_id", "stage", "since"),
                [(*row, NOW) for row in found.stages])
    insert_rows(conn, schema.events, ("message_id", "contact_id", "type", "name", "properties",
                                      "context", "source", "timestamp", "received_at"),
                [(f"m{i}", cid, "track", name, dumps(props), "{}", "test", at, at)
                 for i, (cid, name, at, props) in enumerate(found.events)])


def python_answer(conn: Connection, shape: dict[str, Any]) -> set[int]:
    condition = parse_condition(shape, "condition")
    live = [int(r[0]) for r in conn.execute(
        schema.contacts.select().with_only_columns(schema.contacts.c.id)
        .where(schema.contacts.c.merged_into.is_(None)))]
    facts = load_facts(conn, live, condition.needs(), NOW)
    return {cid for cid in live if condition.evaluate(facts[cid])}


def sql_answer(conn: Connection, shape: dict[str, Any]) -> set[int]:
    condition = parse_condition(shape, "condition")
    select = select_matching(condition, conn.dialect.name, NOW)
    return {int(r[0]) for r in conn.execute(select)}


_SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
            HealthCheck.data_too_large]


def agree(store: Store, found: Population, shapes: list[dict[str, Any]]) -> None:
    with store.begin() as conn:
        write(conn, found)
        for shape in shapes:
            assert sql_answer(conn, shape) == python_answer(conn, shape), shape
        conn.rollback()


@settings(max_examples=80, deadline=None, suppress_health_check=_SLOW_OK)
@given(populations(), st.lists(leaves, min_size=20, max_size=40))
def test_sql_and_python_agree_on_every_kind(store: Store, found: Population,
                                            shapes: list[dict[str, Any]]) -> None:
    """Many single conditions per population: each kind and operator meets many values."""
    agree(store, found, shapes)


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW_OK)
@given(populations(), st.lists(conditions, min_size=5, max_size=15))
def test_sql_and_python_agree_on_nested_conditions(store: Store, found: Population,
                                                   shapes: list[dict[str, Any]]) -> None:
    """Conditions nested in all/any/not: SQL's NULLs never leak through a not."""
    agree(store, found, shapes)


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_to_json_round_trips(shape: dict[str, Any]) -> None:
    parsed = parse_condition(shape, "when")
    assert parsed.to_json() == shape
    assert parse_condition(parsed.to_json(), "when") == parsed
    assert parse_condition(orjson.loads(orjson.dumps(parsed.to_json())), "when") == parsed
    assert parse_condition(yaml.safe_load(yaml.safe_dump(parsed.to_json())), "when") == parsed
