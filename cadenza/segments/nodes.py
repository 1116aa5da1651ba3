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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any, ClassVar

from cadenza.segments.durations import format_duration
from cadenza.segments.facts import Facts, Needs

OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains",
             "starts_with")
"""Operators of attr, prop and event_prop conditions."""

COUNT_OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte")
"""Operators of count conditions."""

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

def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (list items by index: `items.0.sku`); None when absent."""
    current: Any = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list | tuple) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


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


@dataclass(frozen=True)
class CountCondition(Condition):
    """`{count: purchased, within: 30d, gte: 1}`: how many such events the contact sent."""

    event: str
    window_ms: int
    """How far back to count from now; 0 counts all time."""
    op: str
    value: int

    @property
    def key(self) -> str:
        """Its entry in `seen`: `count.purchased.30d`, or `count.purchased.all`."""
        window = format_duration(self.window_ms) if self.window_ms else "all"
        return f"count.{self.event}.{window}"

    def needs(self) -> Needs:
        return Needs(counts=frozenset({(self.event, self.window_ms)}))

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        count = facts.counts.get((self.event, self.window_ms), 0)
        _record(seen, self.key, count)
        return _ORDER[self.op](count, self.value)

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"count": self.event}
        if self.window_ms:
            shape["within"] = format_duration(self.window_ms)
        shape[self.op] = self.value
        return shape


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
