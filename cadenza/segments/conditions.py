"""The condition language: its JSON/YAML form parsed into a tree of nodes.

One key decides the kind of each condition (docs/conditions.md has the guide):

    {attr: plan, eq: pro}                      contact attribute (custom or built in)
    {prop: order.total, gt: 100}               entry event / API payload property
    {event_prop: order_id, eq: A1}             property of the event being matched
    {count: purchased, within: 30d, gte: 1}    events of the contact in a window
    {count: viewed, between: [30d, 7d], where: {event_prop: plan, eq: pro}}
                                               ... from 30 to 7 days ago, filtered
    {sum: Order Completed, of: revenue, within: 90d, gte: 500}
                                               total of a numeric event property
    {last_seen: "*", within: 7d}               latest event (any, or one name) is recent
    {consent: email, purpose: marketing}       consent status (opted_in unless `status`)
    {tag: vip}                                 the contact has the tag
    {company_attr: industry, eq: saas}         some company of the contact passes
    {segment: trial-users}                     member of the segment
    {score: fit, gte: 50}, {grade: fit, eq: A} score and grade in a score model
    {stage: mql}, {stage: [mql, sql]}          lifecycle stage (one of)
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
from dataclasses import dataclass, field
from typing import Any

from cadenza.contacts import CHANNELS
from cadenza.errors import ValidationFailed
from cadenza.segments.durations import parse_duration
from cadenza.segments.facts import (
    BUILTIN_ATTRIBUTES,
    COMPANY_BUILTINS,
    Facts,
    Needs,
    load_facts,
)
from cadenza.segments.fieldtypes import check_declared_type
from cadenza.segments.nodes import (
    CONSENT_STATUSES,
    COUNT_OPERATORS,
    GRADE_OPERATORS,
    OPERATORS,
    SCORE_OPERATORS,
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
    leaves,
)

__all__ = ["Condition", "Facts", "Needs", "load_facts", "parse_condition"]

KINDS = ("attr", "prop", "event_prop", "company_attr", "count", "sum", "last_seen", "consent",
         "tag", "segment", "score", "grade", "stage", "all", "any", "not")
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
_KEY_LENGTH = 128
"""Longest segment, score-model or stage key."""


@dataclass(frozen=True)
class _Context:
    """What the document declares, for checks beyond the shape of a condition."""

    attributes: frozenset[str] | None = None
    """Contact attribute names allowed (built-in ones included); None allows any."""
    types: Mapping[str, str] = field(default_factory=dict)
    """Declared type per contact attribute."""
    company: frozenset[str] | None = None
    """Company attribute names allowed; None allows any."""
    company_types: Mapping[str, str] = field(default_factory=dict)


def parse_condition(value: Any, where: str, attributes: Sequence[str] | None = None, *,
                    fields: Mapping[str, str] | None = None,
                    company_fields: Mapping[str, str] | None = None) -> Condition:
    """Parse a condition from its JSON form (see docs/conditions.md).

    `where` is the dotted path of `value` in its document, prefixed to every error's field.
    With `attributes` (the declared attribute names), `attr` conditions on names that are
    neither built in nor declared are refused. With `fields` (declared contact field name ->
    type, as in the `fields` table), undeclared names are refused too, and so are tests that
    cannot fit the declared type (`{attr: age, eq: "x"}` on a number field, an order test on
    a boolean field, `contains` on a number); `company_fields` does the same for
    `company_attr` conditions.
    """
    names: set[str] | None = None
    if attributes is not None or fields is not None:
        names = {*(attributes or ()), *(fields or {}), *BUILTIN_ATTRIBUTES}
    types: dict[str, str] = {}
    if fields is not None:
        types = {**dict(fields), **dict.fromkeys(BUILTIN_ATTRIBUTES, "string")}
    company: frozenset[str] | None = None
    company_types: dict[str, str] = {}
    if company_fields is not None:
        company = frozenset(company_fields) | set(COMPANY_BUILTINS)
        company_types = {**dict(company_fields), **dict.fromkeys(COMPANY_BUILTINS, "string")}
    ctx = _Context(None if names is None else frozenset(names), types, company, company_types)
    return _parse(value, where, 1, ctx)


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


def _parse(value: Any, where: str, depth: int, ctx: _Context) -> Condition:
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
        return _combine(kind, value, where, depth, ctx)
    if kind == "not":
        _only(value, where, "not")
        return Not(_parse(value["not"], _at(where, "not"), depth + 1, ctx))
    return _LEAVES[kind](value, where, depth, ctx)


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
             ctx: _Context) -> Condition:
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
    parts = tuple(_parse(item, _at(field, i), depth + 1, ctx)
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


_VALUE_KINDS: dict[str, tuple[str, Sequence[str]]] = {
    "attr": ("an attribute", OPERATORS),
    "company_attr": ("a company attribute", OPERATORS),
    "prop": ("a property path", OPERATORS),
    "event_prop": ("a property path", OPERATORS),
    "score": ("a score model", SCORE_OPERATORS),
    "grade": ("a score model", GRADE_OPERATORS),
}
_VALUE_NODES: dict[str, type[Any]] = {
    "attr": AttributeCondition, "company_attr": CompanyAttributeCondition,
    "prop": PropertyCondition, "event_prop": EventPropertyCondition,
    "score": ScoreCondition, "grade": GradeCondition,
}


def _value_test(kind: str, value: Mapping[str, Any], where: str, depth: int,
                ctx: _Context) -> Condition:
    name_field = _at(where, kind)
    what, operators = _VALUE_KINDS[kind]
    name = _name(value[kind], name_field, what, dotted=kind in ("prop", "event_prop"))
    if kind == "attr" and ctx.attributes is not None and name not in ctx.attributes:
        fix = _hint(name, sorted(ctx.attributes), _UNDECLARED)
        raise ValidationFailed(name_field, f"attribute {_show(name)} is neither built in "
                                           f"nor declared{fix}")
    if kind == "company_attr" and ctx.company is not None and name not in ctx.company:
        fix = _hint(name, sorted(ctx.company), "; declare it as a company field first, or "
                                               "check the spelling")
        raise ValidationFailed(name_field, f"company attribute {_show(name)} is neither "
                                           f"name, domain nor declared{fix}")
    if kind in ("score", "grade") and len(name) > _KEY_LENGTH:
        raise ValidationFailed(name_field, f"is longer than {_KEY_LENGTH} characters")
    for key in value:
        if key in OPERATORS and key not in operators:
            raise ValidationFailed(_at(where, key), f"{key!r} does not apply to a {kind}; "
                                                    f"use one of {', '.join(operators)}")
    _only(value, where, kind, operators, "operator")
    ops = [key for key in value if key != kind]
    if not ops:
        raise ValidationFailed(where, f"needs an operator: one of {', '.join(operators)}, "
                                      f"e.g. {{{kind}: {name}, {_EXAMPLE_OP[kind]}}}")
    if len(ops) > 1:
        raise ValidationFailed(where, f"has several operators ({', '.join(ops)}); use one "
                                      "per condition and combine them with all: [...]")
    op = ops[0]
    op_field = _at(where, op)
    operand = _OPERANDS[op](_plain(value[op]), op_field, op)
    if kind == "score" and op != "exists":
        _numbers(operand, op_field, "a score")
    if kind == "grade" and op != "exists":
        _strings(operand, op_field, "a grade")
    declared_type = (ctx.types.get(name) if kind == "attr"
                     else ctx.company_types.get(name) if kind == "company_attr" else None)
    if declared_type is not None:
        check_declared_type(name, declared_type, op, operand, op_field)
    node: Condition = _VALUE_NODES[kind](name, op, operand)
    return node


_EXAMPLE_OP = {"attr": "eq: ...", "company_attr": "eq: ...", "prop": "eq: ...",
               "event_prop": "eq: ...", "score": "gte: 50", "grade": "eq: A"}


def _numbers(operand: Any, field: str, what: str) -> None:
    for item in operand if isinstance(operand, tuple) else (operand,):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ValidationFailed(field, f"{what} is a number; compare it with a number, "
                                          f"not {_type_name(item)}")


def _strings(operand: Any, field: str, what: str) -> None:
    for item in operand if isinstance(operand, tuple) else (operand,):
        if not isinstance(item, str):
            raise ValidationFailed(field, f"{what} is a string such as 'A'; compare it with "
                                          f"a string, not {_type_name(item)}")


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


def _window(value: Mapping[str, Any], where: str, kind: str) -> tuple[int, int]:
    """(since, until) in ms before now from `within` or `between`; (0, 0) is all time."""
    if "within" in value and "between" in value:
        raise ValidationFailed(where, "has both within and between; use within: 30d for "
                                      "the last 30 days, or between: [30d, 7d] for 30 to 7 "
                                      "days ago")
    if "within" in value:
        window = parse_duration(value["within"], _at(where, "within"))
        if window == 0:
            raise ValidationFailed(_at(where, "within"), f"must be longer than 0; leave "
                                                         f"within out to {kind} all time")
        return window, 0
    if "between" not in value:
        return 0, 0
    field_ = _at(where, "between")
    bounds = value["between"]
    if not isinstance(bounds, list | tuple) or len(bounds) != 2:
        raise ValidationFailed(field_, f"must be two durations ago, the older first, e.g. "
                                       f"[30d, 7d] (from 30 days ago to 7 days ago), not "
                                       f"{_type_name(bounds)}")
    since = parse_duration(bounds[0], _at(field_, 0))
    until = parse_duration(bounds[1], _at(field_, 1))
    if until == 0:
        raise ValidationFailed(_at(field_, 1), f"is 0 (now); use within: "
                                               f"{_show(bounds[0])} for a window that ends now")
    if since == until:
        raise ValidationFailed(field_, "is an empty window (both ends are the same); widen "
                                       "it, e.g. [30d, 7d]")
    if since < until:
        raise ValidationFailed(field_, f"starts after it ends: the first duration is the "
                                       f"older end; did you mean [{_show(bounds[1])}, "
                                       f"{_show(bounds[0])}]?")
    return since, until


def _event_filter(value: Mapping[str, Any], where: str, depth: int,
                  ctx: _Context) -> Condition | None:
    """The `where:` of a count or sum: event_prop tests joined by all/any/not."""
    if "where" not in value:
        return None
    field_ = _at(where, "where")
    condition = _parse(value["where"], field_, depth + 1, ctx)
    for leaf in leaves(condition):
        if not isinstance(leaf, EventPropertyCondition):
            kind = next(iter(leaf.to_json()))
            raise ValidationFailed(field_, f"filters the counted events, so it may only use "
                                           f"event_prop tests (with all/any/not), not {kind}; "
                                           f"put the {kind} condition beside this one in "
                                           f"all: [...]")
    return condition


def _count_operators_only(value: Mapping[str, Any], where: str, kind: str) -> None:
    for key in value:
        if key in OPERATORS and key not in COUNT_OPERATORS:
            raise ValidationFailed(_at(where, key), f"{key!r} does not apply to a {kind}; use "
                                                    f"one of {', '.join(COUNT_OPERATORS)}")


def _one_operator(value: Mapping[str, Any], where: str,
                  default: tuple[str, Any] | None) -> tuple[str, Any]:
    ops = [key for key in value if key in COUNT_OPERATORS]
    if len(ops) > 1:
        raise ValidationFailed(where, f"has several operators ({', '.join(ops)}); use one "
                                      "per condition and combine them with all: [...]")
    if ops:
        return ops[0], value[ops[0]]
    if default is None:
        raise ValidationFailed(where, f"needs an operator: one of "
                                      f"{', '.join(COUNT_OPERATORS)}, e.g. gte: 500")
    return default


def _count(value: Mapping[str, Any], where: str, depth: int, ctx: _Context) -> Condition:
    event = _name(value["count"], _at(where, "count"), "an event")
    _count_operators_only(value, where, "count")
    _only(value, where, "count", ("within", "between", "where", *COUNT_OPERATORS))
    since, until = _window(value, where, "count")
    op, number = _one_operator(value, where, ("gte", 1))
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValidationFailed(_at(where, op), f"must be a whole number of events (0 or "
                                               f"more), not {_type_name(number)}")
    return CountCondition(event, since, op, number, until, _event_filter(value, where, depth,
                                                                         ctx))


def _sum(value: Mapping[str, Any], where: str, depth: int, ctx: _Context) -> Condition:
    event = _name(value["sum"], _at(where, "sum"), "an event")
    _count_operators_only(value, where, "sum")
    _only(value, where, "sum", ("of", "within", "between", "where", *COUNT_OPERATORS))
    if "of" not in value:
        raise ValidationFailed(where, "needs the property to add up, e.g. {sum: Order "
                                      "Completed, of: revenue, gte: 500}")
    of = _name(value["of"], _at(where, "of"), "a property path", dotted=True)
    since, until = _window(value, where, "sum")
    op, number = _one_operator(value, where, None)
    if isinstance(number, bool) or not isinstance(number, int | float) or (
            isinstance(number, float) and not math.isfinite(number)):
        raise ValidationFailed(_at(where, op), f"must be a number, not {_type_name(number)}")
    return SumCondition(event, of, since, op, number, until,
                        _event_filter(value, where, depth, ctx))


def _last_seen(value: Mapping[str, Any], where: str, depth: int, ctx: _Context) -> Condition:
    event = _name(value["last_seen"], _at(where, "last_seen"), 'an event (or "*" for any)')
    _only(value, where, "last_seen", ("within", "before"))
    given = [key for key in ("within", "before") if key in value]
    if len(given) != 1:
        raise ValidationFailed(where, 'needs exactly one of within (seen recently: '
                                      '{last_seen: "*", within: 7d}) or before (not seen '
                                      'for that long, or never: {last_seen: "*", before: 30d})')
    window = parse_duration(value[given[0]], _at(where, given[0]))
    if window == 0:
        raise ValidationFailed(_at(where, given[0]), "must be longer than 0, e.g. 7d")
    return LastSeenCondition(event, window, given[0] == "before")


def _key(value: Any, field_: str, what: str, length: int = _KEY_LENGTH) -> str:
    key = _name(value, field_, what)
    if len(key) > length:
        raise ValidationFailed(field_, f"is longer than {length} characters")
    return key


def _segment(value: Mapping[str, Any], where: str, depth: int, ctx: _Context) -> Condition:
    _only(value, where, "segment")
    return SegmentCondition(_key(value["segment"], _at(where, "segment"), "a segment key"))


def _stage(value: Mapping[str, Any], where: str, depth: int, ctx: _Context) -> Condition:
    _only(value, where, "stage")
    field_ = _at(where, "stage")
    stages = value["stage"]
    if isinstance(stages, list | tuple):
        if not stages:
            raise ValidationFailed(field_, "is an empty list; give at least one stage")
        if len(stages) > MAX_ITEMS:
            raise ValidationFailed(field_, f"has {len(stages)} stages; at most {MAX_ITEMS} "
                                           "are allowed")
        return StageCondition(tuple(_key(item, _at(field_, i), "a lifecycle stage", 64)
                                    for i, item in enumerate(stages)))
    return StageCondition((_key(stages, field_, "a lifecycle stage (or a list of them)", 64),))


def _consent(value: Mapping[str, Any], where: str, depth: int, ctx: _Context) -> Condition:
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


def _tag(value: Mapping[str, Any], where: str, depth: int, ctx: _Context) -> Condition:
    _only(value, where, "tag")
    tag = _name(value["tag"], _at(where, "tag"), "a tag")
    if len(tag) > 128:
        raise ValidationFailed(_at(where, "tag"), "is longer than 128 characters")
    return TagCondition(tag)


def _value_kind(kind: str) -> Callable[[Mapping[str, Any], str, int, _Context], Condition]:
    def parse(value: Mapping[str, Any], where: str, depth: int, ctx: _Context) -> Condition:
        return _value_test(kind, value, where, depth, ctx)
    return parse


_LEAVES: dict[str, Callable[[Mapping[str, Any], str, int, _Context], Condition]] = {
    **{kind: _value_kind(kind) for kind in _VALUE_KINDS},
    "count": _count,
    "sum": _sum,
    "last_seen": _last_seen,
    "consent": _consent,
    "tag": _tag,
    "segment": _segment,
    "stage": _stage,
}
