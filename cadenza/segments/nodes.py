"""The condition tree: one frozen node per kind, evaluated in Python over `Facts`.

Every node says what it needs loaded (`needs`), whether it holds for one contact
(`evaluate`, which also records what it looked at for the decision's explanation) and its JSON
form (`to_json`, which `parse_condition` reads back into an equal node).

Comparison rules (docs/conditions.md): a missing value (absent or null) fails every test
except `ne`, `not_in` and `exists: false`; order comparisons hold only between two numbers or
two strings (booleans are not numbers); `ne` and `not_in` are the exact complements of `eq`
and `in`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any, ClassVar

import orjson

from cadenza.segments.durations import format_duration
from cadenza.segments.facts import Aggregate, Facts, Needs, is_number, lookup

OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains",
             "starts_with")
"""Operators of attr, prop and event_prop conditions."""

COUNT_OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte")
"""Operators of count, sum and score conditions."""

SCORE_OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists")
"""Operators of score conditions (numbers)."""

GRADE_OPERATORS = ("eq", "ne", "in", "not_in", "exists")
"""Operators of grade conditions (strings)."""

CONSENT_STATUSES = ("opted_in", "opted_out", "pending", "none")
"""What a consent condition may ask for; "none" means no decision was ever recorded."""

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge,
    "lt": operator.lt, "lte": operator.le,
}


class Condition:
    """Base of every condition node."""

    def needs(self) -> Needs:
        """What must be loaded to evaluate this condition."""
        raise NotImplementedError

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        """Whether the condition holds; record the values looked at in `seen`."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The JSON form, which `parse_condition` reads back into an equal condition."""
        raise NotImplementedError


# --- comparisons -----------------------------------------------------------------------------

_is_number = is_number


def same(left: Any, right: Any) -> bool:
    """Equality without Python's coercions: True is not 1, "1" is not 1, 1 is 1.0."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    return False


def compare(op: str, actual: Any, operand: Any) -> bool:
    """Whether `actual` (None when missing) passes `op` against `operand`."""
    if op == "exists":
        return (actual is not None) is operand
    if op == "ne":
        return not compare("eq", actual, operand)
    if op == "not_in":
        return not compare("in", actual, operand)
    if actual is None:
        return False
    if op == "eq":
        return same(actual, operand)
    if op == "in":
        return any(same(actual, item) for item in operand)
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(operand, str) and operand in actual
        if isinstance(actual, list | tuple):
            return any(same(item, operand) for item in actual)
        return False
    if op == "starts_with":
        return isinstance(actual, str) and actual.startswith(operand)
    if (_is_number(actual) and _is_number(operand)) or (
            isinstance(actual, str) and isinstance(operand, str)):
        return _ORDER[op](actual, operand)
    return False


def _record(seen: dict[str, Any] | None, key: str, value: Any) -> None:
    if seen is not None:
        seen[key] = value


def _operand_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --- leaves ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ValueTest(Condition):
    """A value found at `path` in some part of the facts, compared with `value` by `op`."""

    kind: ClassVar[str]
    path: str
    op: str
    value: Any
    """The operand: a scalar, a tuple of scalars for in/not_in, a bool for exists."""

    def find(self, facts: Facts) -> Any:
        """The value this condition tests, or None when it is missing."""
        raise NotImplementedError

    def needs(self) -> Needs:
        return Needs()

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        actual = self.find(facts)
        _record(seen, f"{self.kind}.{self.path}", actual)
        return compare(self.op, actual, self.value)

    def to_json(self) -> dict[str, Any]:
        return {self.kind: self.path, self.op: _operand_json(self.value)}


@dataclass(frozen=True)
class AttributeCondition(_ValueTest):
    """`{attr: plan, eq: pro}`: a contact attribute (custom or built in)."""

    kind: ClassVar[str] = "attr"

    def find(self, facts: Facts) -> Any:
        return facts.attributes.get(self.path)

    def needs(self) -> Needs:
        return Needs(attributes=True)


@dataclass(frozen=True)
class PropertyCondition(_ValueTest):
    """`{prop: order.total, gt: 100}`: a property of the entry event or API payload."""

    kind: ClassVar[str] = "prop"

    def find(self, facts: Facts) -> Any:
        return lookup(facts.entry, self.path)


@dataclass(frozen=True)
class EventPropertyCondition(_ValueTest):
    """`{event_prop: order_id, eq: A1}`: a property of the event being matched."""

    kind: ClassVar[str] = "event_prop"

    def find(self, facts: Facts) -> Any:
        return lookup(facts.event, self.path)


def _window_json(shape: dict[str, Any], window_ms: int, until_ms: int) -> None:
    if until_ms:
        shape["between"] = [format_duration(window_ms), format_duration(until_ms)]
    elif window_ms:
        shape["within"] = format_duration(window_ms)


def _window_key(window_ms: int, until_ms: int) -> str:
    if until_ms:
        return f"{format_duration(window_ms)}-{format_duration(until_ms)}"
    return format_duration(window_ms) if window_ms else "all"


def _where_key(where: Condition | None) -> str:
    if where is None:
        return ""
    return " where " + orjson.dumps(where.to_json(), option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class CountCondition(Condition):
    """`{count: purchased, within: 30d, gte: 1}`: how many such events the contact sent."""

    event: str
    window_ms: int
    """How far back to count from now; 0 counts all time."""
    op: str
    value: int
    until_ms: int = 0
    """With `between`, the window ends this long before now; 0 runs up to now."""
    where: Condition | None = None
    """Only events whose properties pass this (event_prop tests); None counts them all."""

    @property
    def key(self) -> str:
        """Its entry in `seen`: `count.purchased.30d`, `count.purchased.all`,
        `count.purchased.30d-7d`, with ` where {...}` when filtered."""
        return f"count.{self.event}.{_window_key(self.window_ms, self.until_ms)}" + \
            _where_key(self.where)

    @property
    def aggregate(self) -> Aggregate | None:
        """The aggregate it reads, or None for a plain count (loaded as a (name, window))."""
        if self.where is None and not self.until_ms:
            return None
        return Aggregate("count", self.event, self.window_ms, self.until_ms, None, self.where)

    def needs(self) -> Needs:
        aggregate = self.aggregate
        if aggregate is None:
            return Needs(counts=frozenset({(self.event, self.window_ms)}))
        return Needs(aggregates=frozenset({aggregate}))

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        aggregate = self.aggregate
        if aggregate is None:
            count = facts.counts.get((self.event, self.window_ms), 0)
        else:
            count = int(facts.aggregates.get(aggregate, 0))
        _record(seen, self.key, count)
        return _ORDER[self.op](count, self.value)

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"count": self.event}
        _window_json(shape, self.window_ms, self.until_ms)
        if self.where is not None:
            shape["where"] = self.where.to_json()
        shape[self.op] = self.value
        return shape


@dataclass(frozen=True)
class SumCondition(Condition):
    """`{sum: Order Completed, of: revenue, within: 90d, gte: 500}`: the total of a numeric
    property over the contact's events (other values skipped; no events total 0)."""

    event: str
    of: str
    """Dotted path of the property summed."""
    window_ms: int
    op: str
    value: int | float
    until_ms: int = 0
    where: Condition | None = None

    @property
    def key(self) -> str:
        """Its entry in `seen`: `sum.Order Completed.revenue.90d`."""
        return (f"sum.{self.event}.{self.of}.{_window_key(self.window_ms, self.until_ms)}"
                + _where_key(self.where))

    @property
    def aggregate(self) -> Aggregate:
        """The aggregate it reads."""
        return Aggregate("sum", self.event, self.window_ms, self.until_ms, self.of, self.where)

    def needs(self) -> Needs:
        return Needs(aggregates=frozenset({self.aggregate}))

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        total = facts.aggregates.get(self.aggregate, 0.0)
        _record(seen, self.key, total)
        return _ORDER[self.op](total, self.value)

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"sum": self.event, "of": self.of}
        _window_json(shape, self.window_ms, self.until_ms)
        if self.where is not None:
            shape["where"] = self.where.to_json()
        shape[self.op] = self.value
        return shape


@dataclass(frozen=True)
class LastSeenCondition(Condition):
    """`{last_seen: "*", within: 7d}`: the contact's latest such event (any event for "*")
    is at most that old; with `before: 30d`, it is older than that or there is none (the
    exact opposite of `within`)."""

    event: str
    window_ms: int
    before: bool = False

    @property
    def key(self) -> str:
        """Its entry in `seen`: `last_seen.*`, the age of the latest event in ms (or None)."""
        return f"last_seen.{self.event}"

    def needs(self) -> Needs:
        return Needs(last_seen=frozenset({self.event}))

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        age = facts.last_seen.get(self.event)
        _record(seen, self.key, age)
        recent = age is not None and age <= self.window_ms
        return recent is not self.before

    def to_json(self) -> dict[str, Any]:
        return {"last_seen": self.event,
                "before" if self.before else "within": format_duration(self.window_ms)}


@dataclass(frozen=True)
class CompanyAttributeCondition(_ValueTest):
    """`{company_attr: industry, eq: saas}`: some company of the contact passes the test
    (none does when the contact belongs to no company)."""

    kind: ClassVar[str] = "company_attr"

    def needs(self) -> Needs:
        return Needs(companies=True)

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        values = [company.get(self.path) for company in facts.companies]
        _record(seen, f"{self.kind}.{self.path}", values)
        return any(compare(self.op, value, self.value) for value in values)


@dataclass(frozen=True)
class ScoreCondition(_ValueTest):
    """`{score: fit, gte: 50}`: the contact's score in a score model (missing without one)."""

    kind: ClassVar[str] = "score"

    def find(self, facts: Facts) -> Any:
        return facts.scores.get(self.path)

    def needs(self) -> Needs:
        return Needs(scores=frozenset({self.path}))


@dataclass(frozen=True)
class GradeCondition(_ValueTest):
    """`{grade: fit, in: [A, B]}`: the contact's grade in a score model."""

    kind: ClassVar[str] = "grade"

    def find(self, facts: Facts) -> Any:
        return facts.grades.get(self.path)

    def needs(self) -> Needs:
        return Needs(scores=frozenset({self.path}))


@dataclass(frozen=True)
class SegmentCondition(Condition):
    """`{segment: trial-users}`: the contact is a member of the segment."""

    segment: str

    def needs(self) -> Needs:
        return Needs(segments=frozenset({self.segment}))

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        held = self.segment in facts.segments
        _record(seen, f"segment.{self.segment}", held)
        return held

    def to_json(self) -> dict[str, Any]:
        return {"segment": self.segment}


@dataclass(frozen=True)
class StageCondition(Condition):
    """`{stage: mql}` or `{stage: [mql, sql]}`: the contact's lifecycle stage is one of
    these (a contact with no stage is in none)."""

    stages: tuple[str, ...]

    def needs(self) -> Needs:
        return Needs(stage=True)

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        _record(seen, "stage", facts.stage)
        return facts.stage in self.stages

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stages[0] if len(self.stages) == 1 else list(self.stages)}


@dataclass(frozen=True)
class ConsentCondition(Condition):
    """`{consent: email, purpose: marketing}`: the contact's consent status is `status`."""

    channel: str
    purpose: str
    status: str = "opted_in"

    def needs(self) -> Needs:
        return Needs(consents=frozenset({(self.channel, self.purpose)}))

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        status = facts.consents.get((self.channel, self.purpose), "none")
        _record(seen, f"consent.{self.channel}.{self.purpose}", status)
        return status == self.status

    def to_json(self) -> dict[str, Any]:
        shape = {"consent": self.channel, "purpose": self.purpose}
        if self.status != "opted_in":
            shape["status"] = self.status
        return shape


@dataclass(frozen=True)
class TagCondition(Condition):
    """`{tag: vip}`: the contact has the tag."""

    tag: str

    def needs(self) -> Needs:
        return Needs(tags=True)

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        held = self.tag in facts.tags
        _record(seen, f"tag.{self.tag}", held)
        return held

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag}


# --- combinators -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AllOf(Condition):
    """`{all: [...]}`: every condition holds (evaluation stops at the first that fails)."""

    conditions: tuple[Condition, ...]

    def needs(self) -> Needs:
        return reduce(operator.or_, (c.needs() for c in self.conditions), Needs())

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        return all(c.evaluate(facts, seen) for c in self.conditions)

    def to_json(self) -> dict[str, Any]:
        return {"all": [c.to_json() for c in self.conditions]}


@dataclass(frozen=True)
class AnyOf(Condition):
    """`{any: [...]}`: at least one condition holds (evaluation stops at the first that does)."""

    conditions: tuple[Condition, ...]

    def needs(self) -> Needs:
        return reduce(operator.or_, (c.needs() for c in self.conditions), Needs())

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        return any(c.evaluate(facts, seen) for c in self.conditions)

    def to_json(self) -> dict[str, Any]:
        return {"any": [c.to_json() for c in self.conditions]}


@dataclass(frozen=True)
class Not(Condition):
    """`{not: {...}}`: the condition does not hold."""

    condition: Condition

    def needs(self) -> Needs:
        return self.condition.needs()

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        return not self.condition.evaluate(facts, seen)

    def to_json(self) -> dict[str, Any]:
        return {"not": self.condition.to_json()}


def leaves(condition: Condition) -> list[Condition]:
    """The leaf conditions of a tree, left to right (combinators removed)."""
    if isinstance(condition, AllOf | AnyOf):
        return [leaf for child in condition.conditions for leaf in leaves(child)]
    if isinstance(condition, Not):
        return leaves(condition.condition)
    return [condition]


def referenced_segments(condition: Condition) -> set[str]:
    """Keys of the segments a condition refers to (so segments can refuse cycles)."""
    return {leaf.segment for leaf in leaves(condition) if isinstance(leaf, SegmentCondition)}
