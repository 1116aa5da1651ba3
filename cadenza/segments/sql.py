"""One condition compiled to SQL for whole sets: the same answers as evaluating it in Python.

`condition_sql` turns a condition into a boolean expression over `contacts` rows;
`select_matching` selects the ids of the live (not merged) contacts for which it holds. Both
dialects; every user value is a bound parameter.

Shapes chosen for the planners (SQLite above all):

- facts kept in other tables become `contacts.id IN (SELECT contact_id FROM ... WHERE ...)`,
  an uncorrelated subquery that SQLite runs once and probes by rowid;
- an event count is `IN (SELECT contact_id FROM events WHERE name = ? AND timestamp >= ?
  GROUP BY contact_id HAVING count(*) >= ?)`, read through `ix_events_name_timestamp`;
  a test that a count of 0 passes (`eq: 0`, `lt`, `lte`, `ne`) is the complement,
  `NOT IN (... HAVING NOT ...)`, so no contact's events are scanned for being absent;
- attributes are read with json_extract / jsonb operators, type-checked as the Python rules
  require (`sql_values`).

SQL's NULL only ever stands for false here; NOT coalesces first, so `not` is the exact
complement, as in Python.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from cadenza.errors import ValidationFailed
from cadenza.segments.facts import ANY_EVENT, BUILTIN_ATTRIBUTES, COMPANY_BUILTINS
from cadenza.segments.nodes import (
    AllOf,
    AnyOf,
    AttributeCondition,
    CompanyAttributeCondition,
    Condition,
    ConsentCondition,
    CountCondition,
    EventPropertyCondition,
    GradeCondition,
    LastSeenCondition,
    Not,
    PropertyCondition,
    ScoreCondition,
    SegmentCondition,
    StageCondition,
    SumCondition,
    TagCondition,
    referenced_segments,
)
from cadenza.segments.sql_values import (
    Bool,
    ColumnNumber,
    ColumnText,
    Located,
    compare_sql,
    located_json,
    strict,
)
from cadenza.store import schema

__all__ = ["condition_sql", "referenced_segments", "select_matching"]

_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}

_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge,
    "lt": operator.lt, "lte": operator.le,
}

_contacts = schema.contacts
_events = schema.events


def condition_sql(condition: Condition, dialect: str, now_ms: int, *,
                  where: str = "condition") -> Bool:
    """A boolean expression over `schema.contacts` that holds exactly where `condition`
    evaluates to true for that contact at `now_ms`.

    `where` prefixes the field of the error raised for parts with no meaning for a set
    (`prop`, and `event_prop` outside a count's or sum's `where:`).
    """
    if dialect not in _DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; use sqlite or postgresql")
    return _Compiler(_DIALECTS[dialect], now_ms).contact(condition, where)


def select_matching(condition: Condition, dialect: str, now_ms: int, *,
                    where: str = "condition") -> sa.Select[Any]:
    """SELECT of `contacts.id` for the live (not merged) contacts matching `condition`."""
    test = condition_sql(condition, dialect, now_ms, where=where)
    return sa.select(_contacts.c.id).where(_contacts.c.merged_into.is_(None), test)


def _zero_passes(op: str, value: float) -> bool:
    """Whether a total of 0 (no events) passes `op value`."""
    return bool(_ORDER[op](0, value))


def _holds(expr: ColumnElement[Any], op: str, value: Any) -> Bool:
    result: Bool = _ORDER[op](expr, value)
    return result


def _missing_passes(op: str, operand: Any) -> bool:
    return op in ("ne", "not_in") or (op == "exists" and operand is False)


_POSITIVE = {"ne": "eq", "not_in": "in", "exists": "exists"}


class _Compiler:
    def __init__(self, dialect: str, now_ms: int) -> None:
        self.dialect = dialect
        self.now = now_ms

    # --- contacts ------------------------------------------------------------------------

    def contact(self, node: Condition, where: str) -> Bool:
        if isinstance(node, AllOf):
            return sa.and_(*(self.contact(c, f"{where}.all.{i}")
                             for i, c in enumerate(node.conditions)))
        if isinstance(node, AnyOf):
            return sa.or_(*(self.contact(c, f"{where}.any.{i}")
                            for i, c in enumerate(node.conditions)))
        if isinstance(node, Not):
            return sa.not_(strict(self.contact(node.condition, f"{where}.not")))
        if isinstance(node, AttributeCondition):
            return compare_sql(node.op, self.attribute(node.path, where), node.value,
                               self.dialect)
        if isinstance(node, CompanyAttributeCondition):
            return self.company(node, where)
        if isinstance(node, CountCondition):
            return self.count(node, where)
        if isinstance(node, SumCondition):
            return self.sum(node, where)
        if isinstance(node, LastSeenCondition):
            return self.last_seen(node)
        if isinstance(node, ConsentCondition):
            return self.consent(node)
        if isinstance(node, TagCondition):
            tags = schema.contact_tags
            return _contacts.c.id.in_(sa.select(tags.c.contact_id).where(tags.c.tag == node.tag))
        if isinstance(node, SegmentCondition):
            return self.segment(node)
        if isinstance(node, ScoreCondition | GradeCondition):
            return self.score(node, where)
        if isinstance(node, StageCondition):
            stages = schema.contact_stages
            return _contacts.c.id.in_(sa.select(stages.c.contact_id).where(
                stages.c.stage.in_(list(node.stages))))
        if isinstance(node, PropertyCondition):
            raise ValidationFailed(f"{where}.prop", "prop reads the entry event or API "
                                   "payload of a journey step, which a segment does not have; "
                                   "test attributes, or count past events with "
                                   "{count: ..., where: {event_prop: ...}}")
        if isinstance(node, EventPropertyCondition):
            raise ValidationFailed(f"{where}.event_prop", "event_prop tests the event a "
                                   "journey trigger is matching, which a segment does not "
                                   "have; to test past events use {count: <event>, where: "
                                   "{event_prop: ...}}")
        raise ValidationFailed(where, f"{type(node).__name__} cannot be compiled to SQL")

    def attribute(self, name: str, where: str) -> Located:
        if name in BUILTIN_ATTRIBUTES:
            return ColumnText(_contacts.c[name])
        return located_json(self.dialect, _contacts.c.attributes, [name], f"{where}.attr")

    def company(self, node: CompanyAttributeCondition, where: str) -> Bool:
        members, companies = schema.company_members, schema.companies
        located: Located
        if node.path in COMPANY_BUILTINS:
            located = ColumnText(companies.c[node.path])
        else:
            located = located_json(self.dialect, companies.c.attributes, [node.path],
                                   f"{where}.company_attr")
        passing = sa.select(members.c.contact_id).join(
            companies, companies.c.id == members.c.company_id).where(
            compare_sql(node.op, located, node.value, self.dialect))
        return _contacts.c.id.in_(passing)

    # --- events --------------------------------------------------------------------------

    def _window(self, event: str, since_ms: int, until_ms: int,
                where_node: Condition | None, where: str) -> list[Bool]:
        tests: list[Bool] = [_events.c.name == event]
        if since_ms:
            tests.append(_events.c.timestamp >= self.now - since_ms)
        if until_ms:
            tests.append(_events.c.timestamp < self.now - until_ms)
        if where_node is not None:
            tests.append(self.event(where_node, f"{where}.where"))
        return tests

    def _aggregate(self, tests: list[Bool], total: ColumnElement[Any], op: str,
                   value: Any, plain_count: bool) -> Bool:
        base = sa.select(_events.c.contact_id).where(*tests)
        if _zero_passes(op, value):
            # Holds for every contact without such events: the complement of those whose
            # events make it fail, so no contact is looked at for having none.
            if plain_count and _passes_every_count(op, value):
                return sa.true()
            if plain_count and not _passes_any_positive(op, value):
                return _contacts.c.id.not_in(base)  # any event at all fails (eq 0, lt 1)
            return _contacts.c.id.not_in(base.group_by(_events.c.contact_id).having(
                sa.not_(_holds(total, op, value))))
        if plain_count and _holds_count_one(op, value):
            return _contacts.c.id.in_(base)  # at least one event
        return _contacts.c.id.in_(base.group_by(_events.c.contact_id).having(
            _holds(total, op, value)))

    def count(self, node: CountCondition, where: str) -> Bool:
        tests = self._window(node.event, node.window_ms, node.until_ms, node.where, where)
        return self._aggregate(tests, sa.func.count(), node.op, node.value, True)

    def sum(self, node: SumCondition, where: str) -> Bool:
        tests = self._window(node.event, node.window_ms, node.until_ms, node.where, where)
        located = located_json(self.dialect, _events.c.properties, node.of.split("."),
                               f"{where}.of")
        number = located.number(exact=False)
        total = (sa.func.total(number) if self.dialect == "sqlite"
                 else sa.func.coalesce(sa.func.sum(number), 0.0))
        return self._aggregate(tests, total, node.op, node.value, False)

    def last_seen(self, node: LastSeenCondition) -> Bool:
        since = self.now - node.window_ms
        if node.event == ANY_EVENT:
            # Correlated: one seek per contact on (contact_id, timestamp), rather than a scan
            # of every recent event of every name.
            recent: Bool = sa.exists(sa.select(sa.literal(1)).where(
                _events.c.contact_id == _contacts.c.id, _events.c.timestamp >= since))
        else:
            recent = _contacts.c.id.in_(sa.select(_events.c.contact_id).where(
                _events.c.name == node.event, _events.c.timestamp >= since))
        return sa.not_(recent) if node.before else recent

    def event(self, node: Condition, where: str) -> Bool:
        """A count's or sum's `where:` over the properties of each event row."""
        if isinstance(node, AllOf):
            return sa.and_(*(self.event(c, f"{where}.all.{i}")
                             for i, c in enumerate(node.conditions)))
        if isinstance(node, AnyOf):
            return sa.or_(*(self.event(c, f"{where}.any.{i}")
                            for i, c in enumerate(node.conditions)))
        if isinstance(node, Not):
            return sa.not_(strict(self.event(node.condition, f"{where}.not")))
        if isinstance(node, EventPropertyCondition):
            located = located_json(self.dialect, _events.c.properties, node.path.split("."),
                                   f"{where}.event_prop")
            return compare_sql(node.op, located, node.value, self.dialect)
        raise ValidationFailed(where, "may only test event_prop (with all/any/not)")

    # --- other tables --------------------------------------------------------------------

    def consent(self, node: ConsentCondition) -> Bool:
        consents = schema.consents
        rows = sa.select(consents.c.contact_id).where(consents.c.channel == node.channel,
                                                      consents.c.purpose == node.purpose)
        if node.status == "none":
            # No decision recorded (or, in Python's terms, a status of "none").
            return _contacts.c.id.not_in(rows.where(consents.c.status != "none"))
        return _contacts.c.id.in_(rows.where(consents.c.status == node.status))

    def segment(self, node: SegmentCondition) -> Bool:
        members, segments = schema.segment_members, schema.segments
        return _contacts.c.id.in_(sa.select(members.c.contact_id).join(
            segments, segments.c.id == members.c.segment_id).where(
            segments.c.key == node.segment))

    def score(self, node: ScoreCondition | GradeCondition, where: str) -> Bool:
        scores, models = schema.contact_scores, schema.score_models
        located: Located = (ColumnNumber(scores.c.score) if isinstance(node, ScoreCondition)
                            else ColumnText(scores.c.grade))
        rows = sa.select(scores.c.contact_id).join(
            models, models.c.id == scores.c.model_id).where(models.c.key == node.path)
        if _missing_passes(node.op, node.value):
            # No row is a missing value, which passes: the complement of rows that fail.
            operand = True if node.op == "exists" else node.value
            failing = compare_sql(_POSITIVE[node.op], located, operand, self.dialect)
            return _contacts.c.id.not_in(rows.where(failing))
        return _contacts.c.id.in_(rows.where(
            compare_sql(node.op, located, node.value, self.dialect)))


def _passes_every_count(op: str, value: int) -> bool:
    """Whether every count (0, 1, 2, ...) passes: gte 0, and nothing else of ours."""
    return op == "gte" and value <= 0


def _passes_any_positive(op: str, value: int) -> bool:
    """Whether some count of 1 or more passes (else any event at all fails)."""
    return {"eq": value >= 1, "ne": True, "gt": True, "gte": True,
            "lt": value > 1, "lte": value >= 1}[op]


def _holds_count_one(op: str, value: int) -> bool:
    """Whether `count op value` is exactly "count >= 1"."""
    return (op == "gte" and value == 1) or (op == "gt" and value == 0)
