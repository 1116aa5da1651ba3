"""Declared custom fields: types that attribute values must have, checked on every write.

Undeclared attributes are stored as sent (Segment sources send arbitrary traits); a declared
field's value is checked and normalised: dates become `YYYY-MM-DD`, datetimes ISO 8601 in UTC,
numbers stay numbers, enums must be one of their values, lists may declare an item type.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import Conflict, FieldTypeMismatch, ValidationFailed
from cadenza.store import schema

FIELD_TYPES = ("string", "number", "boolean", "date", "datetime", "enum", "list")
ITEM_TYPES = ("string", "number", "boolean")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED = frozenset({"email", "phone", "timezone", "locale", "user_id", "id"})


@dataclass(frozen=True)
class FieldSpec:
    """A declared attribute."""

    name: str
    """Attribute key, letters, digits and underscores."""
    type: str
    """One of FIELD_TYPES."""
    values: tuple[str, ...] = ()
    """Allowed values of an enum."""
    item_type: str | None = None
    """Type of a list's items, when declared."""
    entity: str = "contact"
    """contact or company."""
    description: str = field(default="", compare=False)
    """Shown to people editing the field."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValidationFailed(
                "name", f"{self.name!r} must be letters, digits and underscores, not starting "
                "with a digit, at most 128 characters"
            )
        if self.name in RESERVED:
            raise ValidationFailed("name", f"{self.name!r} is a built-in contact property")
        if self.type not in FIELD_TYPES:
            raise ValidationFailed("type", f"{self.type!r} is not one of {', '.join(FIELD_TYPES)}")
        if self.type == "enum" and not self.values:
            raise ValidationFailed("values", "an enum field needs at least one value")
        if self.item_type is not None and self.item_type not in ITEM_TYPES:
            raise ValidationFailed("item_type", f"must be one of {', '.join(ITEM_TYPES)}")
        if self.entity not in ("contact", "company"):
            raise ValidationFailed("entity", "must be contact or company")

    def coerce(self, value: Any, path: str) -> Any:
        """The stored form of `value`, or FieldTypeMismatch naming `path`."""
        if value is None:
            return None
        return _COERCE[self.type](self, value, path)


def _mismatch(path: str, spec: FieldSpec, value: Any, hint: str = "") -> FieldTypeMismatch:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return FieldTypeMismatch(
        path, f"{shown} is not a valid {spec.type} for declared field {spec.name!r}{hint}"
    )


def _string(spec: FieldSpec, value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _mismatch(path, spec, value)


def _number(spec: FieldSpec, value: Any, path: str) -> int | float:
    if isinstance(value, bool):
        raise _mismatch(path, spec, value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _mismatch(path, spec, value) from None
        if math.isfinite(number):
            return int(number) if number.is_integer() and "." not in value else number
    raise _mismatch(path, spec, value)


_TRUE = {"true", "yes", "1", "y", "t"}
_FALSE = {"false", "no", "0", "n", "f"}


def _boolean(spec: FieldSpec, value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _mismatch(path, spec, value)


def _date(spec: FieldSpec, value: Any, path: str) -> str:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10]).isoformat()
        except ValueError:
            pass
    raise _mismatch(path, spec, value, " (use YYYY-MM-DD)")


def _datetime(spec: FieldSpec, value: Any, path: str) -> str:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    raise _mismatch(path, spec, value, " (use ISO 8601, e.g. 2026-05-01T09:30:00Z)")


def _enum(spec: FieldSpec, value: Any, path: str) -> str:
    if isinstance(value, str) and value in spec.values:
        return value
    raise _mismatch(path, spec, value, f" (allowed: {', '.join(spec.values)})")


def _list(spec: FieldSpec, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _mismatch(path, spec, value)
    if spec.item_type is None:
        return value
    item = FieldSpec(spec.name, spec.item_type)
    return [item.coerce(v, f"{path}[{i}]") for i, v in enumerate(value)]


_COERCE = {
    "string": _string,
    "number": _number,
    "boolean": _boolean,
    "date": _date,
    "datetime": _datetime,
    "enum": _enum,
    "list": _list,
}


class FieldRegistry:
    """The declared fields of one entity kind, loaded once per batch."""

    def __init__(self, specs: Mapping[str, FieldSpec]) -> None:
        self.specs = dict(specs)

    @classmethod
    def load(cls, conn: Connection, entity: str = "contact") -> FieldRegistry:
        """Read the declarations for `entity` from the store."""
        rows = conn.execute(
            sa.select(schema.fields).where(schema.fields.c.entity == entity)
        ).mappings()
        return cls({row["name"]: _spec_from_row(row) for row in rows})

    def check(self, attributes: Mapping[str, Any], prefix: str = "traits") -> dict[str, Any]:
        """Attributes with declared values coerced; FieldTypeMismatch on the first bad one."""
        if not self.specs:
            return dict(attributes)
        checked = dict(attributes)
        for name, value in attributes.items():
            spec = self.specs.get(name)
            if spec is not None:
                checked[name] = spec.coerce(value, f"{prefix}.{name}")
        return checked


def _spec_from_row(row: Mapping[Any, Any]) -> FieldSpec:
    options = row["options"] or {}
    return FieldSpec(
        name=row["name"],
        type=row["type"],
        values=tuple(options.get("values", ())),
        item_type=options.get("item_type"),
        entity=row["entity"],
        description=row["description"],
    )


def declare_field(conn: Connection, spec: FieldSpec, now_ms: int) -> None:
    """Declare a field; refuse if existing values would break it or if it exists."""
    existing = conn.execute(
        sa.select(schema.fields.c.name).where(schema.fields.c.name == spec.name)
    ).first()
    if existing is not None:
        raise Conflict(f"field {spec.name!r} is already declared; delete it first to retype it")
    _check_existing_values(conn, spec)
    conn.execute(
        sa.insert(schema.fields).values(
            name=spec.name,
            type=spec.type,
            options={"values": list(spec.values), "item_type": spec.item_type},
            entity=spec.entity,
            description=spec.description,
            created_at=now_ms,
        )
    )


def _check_existing_values(conn: Connection, spec: FieldSpec) -> None:
    table = schema.contacts if spec.entity == "contact" else schema.companies
    value = table.c.attributes[spec.name]
    rows = conn.execute(
        sa.select(table.c.id, table.c.attributes).where(value.is_not(None)).limit(100_000)
    )
    for row_id, attributes in rows:
        try:
            spec.coerce(attributes.get(spec.name), f"{spec.entity} {row_id}.{spec.name}")
        except FieldTypeMismatch as exc:
            raise Conflict(
                f"cannot declare {spec.name!r} as {spec.type}: existing value breaks it "
                f"({exc.message}); fix or clear that value first"
            ) from None


def list_fields(conn: Connection) -> list[FieldSpec]:
    """Every declared field."""
    rows = conn.execute(sa.select(schema.fields).order_by(schema.fields.c.name)).mappings()
    return [_spec_from_row(row) for row in rows]


def drop_field(conn: Connection, name: str) -> bool:
    """Remove a declaration (values stay); True when it existed."""
    result = conn.execute(sa.delete(schema.fields).where(schema.fields.c.name == name))
    return bool(result.rowcount)
