"""The condition language: its JSON/YAML form parsed into a tree of nodes.

One key decides the kind of each condition (docs/conditions.md has the guide):

    {attr: plan, eq: pro}                      contact attribute (custom or built in)
    {prop: order.total, gt: 100}               entry event / API payload property
    {event_prop: order_id, eq: A1}             property of the event being matched
    {count: purchased, within: 30d, gte: 1}    events of the contact in a window
    {consent: email, purpose: marketing}       consent status (opted_in unless `status`)
    {tag: vip}                                 the contact has the tag
    {all: [...]}, {any: [...]}, {not: {...}}   combinators

Every mistake raises `ValidationFailed` with the dotted path of the offending key and a reason
that says how to fix it. Input is treated as hostile: nesting, list sizes and name lengths are
bounded, so a bad file gets a sentence, never a RecursionError.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cadenza.contacts import CHANNELS
from cadenza.errors import ValidationFailed
from cadenza.segments.durations import parse_duration
from cadenza.segments.facts import BUILTIN_ATTRIBUTES, Facts, Needs, load_facts
from cadenza.segments.nodes import (
    CONSENT_STATUSES,
    COUNT_OPERATORS,
    OPERATORS,
    AllOf,
    AnyOf,
    AttributeCondition,
    Condition,
    ConsentCondition,
    CountCondition,
    EventPropertyCondition,
    Not,
    PropertyCondition,
    TagCondition,
)

__all__ = ["Condition", "Facts", "Needs", "load_facts", "parse_condition"]

KINDS = ("attr", "prop", "event_prop", "count", "consent", "tag", "all", "any", "not")
MAX_DEPTH = 32
"""Conditions nested deeper than this are refused (a journey needs a handful of levels)."""
MAX_ITEMS = 1000
"""Longest list accepted for `in`, `not_in`, `all` and `any`."""
MAX_NAME = 256
"""Longest attribute name, property path or event name."""

_PURPOSE = re.compile(r"^[a-z][a-z0-9_\-:.]{0,63}$")
_SCALAR = "a string, a number or true/false"
_EXAMPLE = "{attr: plan, eq: pro}"
# Spellings people reach for, mapped to the operator they meant (difflib misses most).
_OPERATOR_ALIASES = {
    "equals": "eq", "equal": "eq", "is": "eq", "==": "eq", "=": "eq", "not_equals": "ne",
    "not_equal": "ne", "neq": "ne", "!=": "ne", "is_not": "ne", "greater_than": "gt",
    ">": "gt", ">=": "gte", "ge": "gte", "less_than": "lt", "<": "lt", "<=": "lte",
    "le": "lte", "one_of": "in", "any_of": "in", "nin": "not_in", "none_of": "not_in",
    "has": "contains", "includes": "contains", "startswith": "starts_with",
    "prefix": "starts_with", "exist": "exists", "is_set": "exists", "present": "exists",
}
_UNDECLARED = "; declare it as a field first, or check the spelling"


def parse_condition(value: Any, where: str, attributes: Sequence[str] | None = None) -> Condition:
    """Parse a condition from its JSON form (see docs/conditions.md).

    `where` is the dotted path of `value` in its document, prefixed to every error's field.
    With `attributes` (the declared attribute names), `attr` conditions on names that are
    neither built in nor declared are refused.
    """
    declared = None if attributes is None else frozenset(attributes) | set(BUILTIN_ATTRIBUTES)
    return _parse(value, where, 1, declared)


# --- structure -------------------------------------------------------------------------------

def _at(where: str, *parts: object) -> str:
    return ".".join(str(p) for p in (where, *parts) if p != "")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(word: object, choices: Sequence[str], otherwise: str = "") -> str:
    """' (did you mean ...?)' for a near miss, else `otherwise` (by default the choices)."""
    if isinstance(word, str) and len(word) <= MAX_NAME:
        plain = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", word).lower().replace("-", "_")
        alias = _OPERATOR_ALIASES.get(plain.replace(" ", "_"))
        if alias in choices:
            return f" (did you mean {alias!r}?)"
        close = difflib.get_close_matches(plain, choices, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return otherwise or f"; use one of {', '.join(choices)}"


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _parse(value: Any, where: str, depth: int, declared: frozenset[str] | None) -> Condition:
    if depth > MAX_DEPTH:
        raise ValidationFailed(where, f"conditions are nested more than {MAX_DEPTH} levels "
                                      "deep; flatten them (all/any take lists)")
    if not isinstance(value, Mapping):
        raise ValidationFailed(where, f"must be a condition such as {_EXAMPLE}, "
                                      f"not {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ValidationFailed(where, f"key {_show(key)} is not a string; condition keys "
                                          f"are words such as attr, eq, all")
    kinds = [key for key in value if key in KINDS]
    if not kinds:
        if not value:
            raise ValidationFailed(where, f"is empty; say what to test, e.g. {_EXAMPLE}")
        for key in value:
            close = difflib.get_close_matches(key, KINDS, n=1) if len(key) <= MAX_NAME else []
            if close:
                raise ValidationFailed(_at(where, key), f"unknown key {_show(key)} "
                                                        f"(did you mean {close[0]!r}?)")
        raise ValidationFailed(where, f"names no kind of condition; start it with one of "
                                      f"{', '.join(KINDS)}, e.g. {_EXAMPLE}")
    if len(kinds) > 1:
        raise ValidationFailed(where, f"mixes {kinds[0]!r} and {kinds[1]!r}, but one key "
                                      "decides the kind; combine conditions with all: [...] "
                                      "or any: [...]")
    kind = kinds[0]
    if kind in ("all", "any"):
        return _combine(kind, value, where, depth, declared)
    if kind == "not":
        _only(value, where, "not")
        return Not(_parse(value["not"], _at(where, "not"), depth + 1, declared))
    return _LEAVES[kind](value, where, declared)


def _only(value: Mapping[str, Any], where: str, kind: str, options: Sequence[str] = (),
          what: str = "key") -> None:
    """Refuse keys other than `kind` and `options`, suggesting the closest option."""
    for key in value:
        if key != kind and key not in options:
            article = "an" if kind[0] in "aeiou" else "a"
            fix = (_hint(key, options) if options
                   else f"; {article} {kind} condition takes no other key")
            raise ValidationFailed(_at(where, key), f"unknown {what} {_show(key)}{fix}")


def _combine(kind: str, value: Mapping[str, Any], where: str, depth: int,
             declared: frozenset[str] | None) -> Condition:
    _only(value, where, kind)
    field = _at(where, kind)
    items = value[kind]
    if not isinstance(items, list | tuple):
        raise ValidationFailed(field, f"must be a list of conditions, not {_type_name(items)}")
    if not items:
        raise ValidationFailed(field, "is an empty list; give at least one condition or "
                                      "remove it")
    if len(items) > MAX_ITEMS:
        raise ValidationFailed(field, f"has {len(items)} conditions; at most {MAX_ITEMS} "
                                      "are allowed (use a segment for long lists)")
    parts = tuple(_parse(item, _at(field, i), depth + 1, declared)
                  for i, item in enumerate(items))
    return AllOf(parts) if kind == "all" else AnyOf(parts)


# --- leaves ----------------------------------------------------------------------------------

def _name(value: Any, field: str, what: str, *, dotted: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(field, f"must name {what} (a non-empty string), "
                                      f"not {_type_name(value)}")
    if len(value) > MAX_NAME:
        raise ValidationFailed(field, f"is longer than {MAX_NAME} characters")
    if dotted and any(not part for part in value.split(".")):
        raise ValidationFailed(field, f"{_show(value)} has an empty part; write a dotted "
                                      "path such as order.total or items.0.sku")
    return value


def _value_test(kind: str, value: Mapping[str, Any], where: str,
                declared: frozenset[str] | None) -> Condition:
    name_field = _at(where, kind)
    if kind == "attr":
        name = _name(value[kind], name_field, "an attribute")
        if declared is not None and name not in declared:
            fix = _hint(name, sorted(declared), _UNDECLARED)
            raise ValidationFailed(name_field, f"attribute {_show(name)} is neither built in "
                                               f"nor declared{fix}")
    else:
        name = _name(value[kind], name_field, "a property path", dotted=True)
    _only(value, where, kind, OPERATORS, "operator")
    ops = [key for key in value if key != kind]
    if not ops:
        raise ValidationFailed(where, f"needs an operator: one of {', '.join(OPERATORS)}, "
                                      f"e.g. {{{kind}: {name}, eq: ...}}")
    if len(ops) > 1:
        raise ValidationFailed(where, f"has several operators ({', '.join(ops)}); use one "
                                      "per condition and combine them with all: [...]")
    op = ops[0]
    operand = _OPERANDS[op](_plain(value[op]), _at(where, op), op)
    if kind == "attr":
        return AttributeCondition(name, op, operand)
    if kind == "prop":
        return PropertyCondition(name, op, operand)
    return EventPropertyCondition(name, op, operand)


def _plain(value: Any) -> Any:
    """YAML reads an unquoted 2026-01-31 as a date: compare it as the ISO string attributes
    hold (dates as YYYY-MM-DD, datetimes in UTC with a Z)."""
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int)  # bool is an int


def _scalar(value: Any, field: str, op: str) -> Any:
    if _is_scalar(value):
        return value
    if value is None:
        fix = "; to test for a missing value use exists: false"
    elif isinstance(value, list | tuple) and op in ("eq", "ne"):
        fix = f"; to match any of several values use {'in' if op == 'eq' else 'not_in'}: [...]"
    else:
        fix = ""
    raise ValidationFailed(field, f"must be {_SCALAR}, not {_type_name(value)}{fix}")


def _listed(value: Any, field: str, op: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise ValidationFailed(field, f"must be a list of values such as [a, b], "
                                      f"not {_type_name(value)}; for one value use "
                                      f"{'eq' if op == 'in' else 'ne'}")
    if not value:
        raise ValidationFailed(field, "is an empty list; give at least one value")
    if len(value) > MAX_ITEMS:
        raise ValidationFailed(field, f"has {len(value)} values; at most {MAX_ITEMS} are "
                                      "allowed (use a segment or a tag for long lists)")
    value = [_plain(item) for item in value]
    for i, item in enumerate(value):
        if not _is_scalar(item):
            raise ValidationFailed(_at(field, i), f"must be {_SCALAR}, "
                                                  f"not {_type_name(item)}")
    return tuple(value)


def _ordered(value: Any, field: str, op: str) -> Any:
    if (_is_scalar(value) and not isinstance(value, bool)) or isinstance(value, str):
        return value
    raise ValidationFailed(field, f"must be a number or a string (dates compare as ISO "
                                  f"strings, e.g. '2026-01-31'), not {_type_name(value)}")


def _flag(value: Any, field: str, op: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValidationFailed(field, f"must be true or false, not {_type_name(value)}")


def _text(value: Any, field: str, op: str) -> str:
    if isinstance(value, str):
        return value
    raise ValidationFailed(field, f"must be a string, not {_type_name(value)}")


_OPERANDS: dict[str, Callable[[Any, str, str], Any]] = {
    "eq": _scalar, "ne": _scalar, "contains": _scalar, "in": _listed, "not_in": _listed,
    "gt": _ordered, "gte": _ordered, "lt": _ordered, "lte": _ordered, "exists": _flag,
    "starts_with": _text,
}


def _count(value: Mapping[str, Any], where: str, declared: frozenset[str] | None) -> Condition:
    event = _name(value["count"], _at(where, "count"), "an event")
    for key in value:
        if key in OPERATORS and key not in COUNT_OPERATORS:
            raise ValidationFailed(_at(where, key), f"{key!r} does not apply to a count; use "
                                                    f"one of {', '.join(COUNT_OPERATORS)}")
    _only(value, where, "count", ("within", *COUNT_OPERATORS))
    window = 0
    if "within" in value:
        window = parse_duration(value["within"], _at(where, "within"))
        if window == 0:
            raise ValidationFailed(_at(where, "within"), "must be longer than 0; leave "
                                                         "within out to count all time")
    ops = [key for key in value if key in COUNT_OPERATORS]
    if len(ops) > 1:
        raise ValidationFailed(where, f"has several operators ({', '.join(ops)}); use one "
                                      "per condition and combine them with all: [...]")
    op, number = (ops[0], value[ops[0]]) if ops else ("gte", 1)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValidationFailed(_at(where, op), f"must be a whole number of events (0 or "
                                               f"more), not {_type_name(number)}")
    return CountCondition(event, window, op, number)


def _consent(value: Mapping[str, Any], where: str,
             declared: frozenset[str] | None) -> Condition:
    _only(value, where, "consent", ("purpose", "status"))
    channel = value["consent"]
    if channel not in CHANNELS:
        raise ValidationFailed(_at(where, "consent"), f"{_show(channel)} is not a channel"
                                                      f"{_hint(channel, CHANNELS)}")
    if "purpose" not in value:
        raise ValidationFailed(where, "needs a purpose, e.g. {consent: email, "
                                      "purpose: marketing}")
    purpose = value["purpose"]
    if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
        raise ValidationFailed(_at(where, "purpose"), f"{_show(purpose)} must be a lower-case "
                                                      "slug such as 'marketing' or "
                                                      "'newsletter'")
    status = value.get("status", "opted_in")
    if status not in CONSENT_STATUSES:
        raise ValidationFailed(_at(where, "status"), f"{_show(status)} is not a consent "
                                                     f"status{_hint(status, CONSENT_STATUSES)}")
    return ConsentCondition(channel, purpose, status)


def _tag(value: Mapping[str, Any], where: str, declared: frozenset[str] | None) -> Condition:
    _only(value, where, "tag")
    tag = _name(value["tag"], _at(where, "tag"), "a tag")
    if len(tag) > 128:
        raise ValidationFailed(_at(where, "tag"), "is longer than 128 characters")
    return TagCondition(tag)


_LEAVES: dict[str, Callable[[Mapping[str, Any], str, frozenset[str] | None], Condition]] = {
    "attr": lambda value, where, declared: _value_test("attr", value, where, declared),
    "prop": lambda value, where, declared: _value_test("prop", value, where, declared),
    "event_prop": lambda value, where, declared: _value_test("event_prop", value, where,
                                                             declared),
    "count": _count,
    "consent": _consent,
    "tag": _tag,
}
