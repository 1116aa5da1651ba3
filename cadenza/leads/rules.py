"""Overlapping rules: what overlap means, and refusing it unless a rule says `stack: true`.

Two rules of one model overlap when one contact's same fact could earn points from both:

- two **event rules** on the same event whose filters can both match one event; they are
  apart only when a property both filter on has no accepted value in common (a rule without a
  filter overlaps every other rule on its event).
- two **attribute rules** that test the same attribute with tests some value passes both:
  `{attr: plan, eq: pro}` and `{attr: plan, in: [pro, enterprise]}` overlap,
  `{attr: employees, gte: 100}` and `{attr: employees, lt: 100}` do not. Tests on different
  attributes never overlap (they score different facts). When a test cannot be analysed
  (`ne`, `contains`, inside `any` or `not`), it is taken to overlap: a model is refused rather
  than risking a silent double count. Company attributes are analysed the same way (a
  contact in two companies of different sizes can still match two disjoint bands: one per
  company). Two rules on the same tag, event count, consent, segment or stage overlap.

An overlap is accepted when either rule of the pair says `stack: true`: then a contact
matching both earns both rules' points, on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cadenza.errors import ValidationFailed
from cadenza.segments import AllOf, AttributeCondition, CompanyAttributeCondition, Condition
from cadenza.segments.nodes import compare  # the comparison rules of the language

if TYPE_CHECKING:
    from cadenza.leads.models import AttributeRule, EventRule, RulesModel

_FINITE = ("eq", "in")
_RANGE = ("gt", "gte", "lt", "lte")


def attribute_tests(condition: Condition) -> Iterator[AttributeCondition]:
    """Every `attr` test anywhere in `condition`."""
    if isinstance(condition, AttributeCondition):
        yield condition
        return
    for child in _children(condition):
        yield from attribute_tests(child)


def _children(condition: Condition) -> list[Condition]:
    found: list[Condition] = []
    for name in ("conditions", "condition"):
        value: Any = getattr(condition, name, None)
        if isinstance(value, Condition):
            found.append(value)
        elif isinstance(value, tuple):
            found.extend(v for v in value if isinstance(v, Condition))
    return found


def check_overlaps(model: RulesModel) -> None:
    """Refuse the first overlapping pair of rules that neither marks `stack: true`."""
    from cadenza.leads.models import AttributeRule, EventRule

    rules = list(model.rules)
    for i, first in enumerate(rules):
        for j in range(i + 1, len(rules)):
            second = rules[j]
            if first.stack or second.stack:
                continue
            if isinstance(first, EventRule) and isinstance(second, EventRule):
                reason = _events_overlap(first, second)
            elif isinstance(first, AttributeRule) and isinstance(second, AttributeRule):
                reason = _attributes_overlap(first, second)
            else:
                reason = None
            if reason:
                raise ValidationFailed(
                    f"rules.{j}", f"rule {second.id!r} overlaps rule {first.id!r} ({reason}), "
                    "so one contact would earn both rules' points; make their filters or "
                    "values disjoint, merge them, or mark one of them stack: true to add "
                    "them up on purpose")


def _events_overlap(first: EventRule, second: EventRule) -> str | None:
    if first.event != second.event:
        return None
    mine = dict(first.where)
    for path, values in second.where:
        if path in mine and not _same_values(mine[path], values):
            return None
    return f"both score {first.event!r} events their filters can both match"


def _same_values(ours: tuple[Any, ...], theirs: tuple[Any, ...]) -> bool:
    return any(compare("eq", a, b) for a in ours for b in theirs)


def _attributes_overlap(first: AttributeRule, second: AttributeRule) -> str | None:
    mine = _facts(first.when)
    theirs = _facts(second.when)
    shared = sorted(set(mine) & set(theirs))
    if not shared:
        return None
    for key in shared:
        a, b = mine[key], theirs[key]
        if a is not None and b is not None and not any(
                _intersects(x, y) for x in a for y in b):
            return None  # provably apart on this fact, so never both
    kind, name = shared[0]
    what = {"attr": "", "company_attr": "company attribute "}.get(kind, f"{kind} ")
    return f"both test {what}{name!r} with values that can match together"


_ANALYSED = (AttributeCondition, CompanyAttributeCondition)


def _facts(condition: Condition) -> dict[tuple[str, str], list[Any] | None]:
    """What a rule's condition tests, as (kind, name) -> the tests a matching contact passes
    on it, for attribute tests in a plain conjunction; None for a fact tested in a way that
    is not analysed (inside any or not, several tests on one attribute, tags, counts,
    consent, segments, stages: two rules on the same such fact overlap)."""
    direct: list[Condition] = list(condition.conditions) if isinstance(
        condition, AllOf) else [condition]
    found: dict[tuple[str, str], list[Any] | None] = {}
    for leaf in direct:
        if isinstance(leaf, _ANALYSED):
            held = found.setdefault((leaf.kind, leaf.path), [])
            if held is not None:
                held.append(leaf)
        else:
            for key in _leaf_keys(leaf):
                found[key] = None
    # Several tests on one attribute: a value must pass all of them, which pairs of tests
    # cannot express; such an attribute is not analysed.
    return {key: (tests if tests is None or len(tests) == 1 else None)
            for key, tests in found.items()}


def _leaf_keys(condition: Condition) -> list[tuple[str, str]]:
    """(kind, name) of every leaf in `condition` (`{tag: vip}` is ("tag", "vip"))."""
    children = _children(condition)
    if children:
        return [key for child in children for key in _leaf_keys(child)]
    shape = condition.to_json()
    kind = next(iter(shape))
    return [(kind, str(shape[kind]))]


def _intersects(a: Any, b: Any) -> bool:
    """Whether some value passes both tests (True when unsure)."""
    for x, y in ((a, b), (b, a)):
        if x.op in _FINITE:
            values = x.value if x.op == "in" else (x.value,)
            return any(compare(y.op, v, y.value) for v in values)
        if x.op == "exists" and x.value is False:
            return compare(y.op, None, y.value)
    if a.op in _RANGE and b.op in _RANGE:
        return _ranges_meet(a, b)
    return True


def _ranges_meet(a: Any, b: Any) -> bool:
    if isinstance(a.value, str) != isinstance(b.value, str):
        return False  # a number and a string range: no value is both
    lows = [t for t in (a, b) if t.op in ("gt", "gte")]
    highs = [t for t in (a, b) if t.op in ("lt", "lte")]
    if len(lows) != 1 or len(highs) != 1:
        return True  # both bounded on the same side: the larger range holds the smaller
    low, high = lows[0], highs[0]
    if low.value < high.value:
        return True
    return bool(low.value == high.value and low.op == "gte" and high.op == "lte")
