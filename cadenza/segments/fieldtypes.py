"""Conditions against declared field types: tests that can never hold are refused.

A declared field's stored value always has its type (`cadenza.contacts` coerces every write),
so `{attr: age, eq: "30"}` on a number field, `gt` on a boolean field or `contains` on a
number can only ever be false. Such a condition is a mistake; refusing it with the reason is
kinder than a segment that is silently empty.
"""

from __future__ import annotations

from typing import Any

from cadenza.errors import ValidationFailed

_STRING_TYPES = ("string", "enum", "date", "datetime")
_FORMATS = {"date": " (an ISO date such as '2026-01-31')",
            "datetime": " (an ISO time such as '2026-01-31T08:00:00Z')"}


def _items(operand: Any) -> tuple[Any, ...]:
    return operand if isinstance(operand, tuple) else (operand,)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = repr(value)
        return f"the string {text if len(text) <= 40 else text[:37] + '...'}"
    return repr(value)


def check_declared_type(name: str, declared: str, op: str, operand: Any, field: str) -> None:
    """Refuse `op operand` on a field declared as `declared` when it can never hold."""
    if op == "exists":
        return
    what = f"{name!r} is a {declared} field"
    if declared == "list":
        if op != "contains":
            raise ValidationFailed(field, f"{what}; test its items with contains: <value>, "
                                          "or exists")
        return
    if declared == "number":
        if op in ("contains", "starts_with"):
            raise ValidationFailed(field, f"{what}; {op} applies to strings and lists, "
                                          "use eq, in, gt, gte, lt or lte")
        for item in _items(operand):
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ValidationFailed(field, f"{what}; compare it with a number, not "
                                              f"{_shown(item)}")
        return
    if declared == "boolean":
        if op not in ("eq", "ne", "in", "not_in"):
            raise ValidationFailed(field, f"{what}; {op} does not apply, use eq: true or "
                                          "eq: false")
        for item in _items(operand):
            if not isinstance(item, bool):
                raise ValidationFailed(field, f"{what}; compare it with true or false, not "
                                              f"{_shown(item)}")
        return
    if declared in _STRING_TYPES:
        for item in _items(operand):
            if not isinstance(item, str):
                raise ValidationFailed(field, f"{what}; compare it with a string"
                                              f"{_FORMATS.get(declared, '')}, not "
                                              f"{_shown(item)}")
