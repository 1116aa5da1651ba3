"""Values inside rows (JSON paths, plain columns) and the comparison rules over them, in SQL.

`compare_sql` is `nodes.compare` for a whole set: the same rules (a missing value fails every
test but ne/not_in/exists: false, booleans are not numbers, "1" is not 1, 1 equals 1.0, order
only number-number or string-string by code point, contains on strings or lists), written
over a `Located` value: where it is in the row, and what JSON type it has.

An expression may come out NULL where the Python rule says false (a missing value compared);
the compiler relies on NULL only ever meaning false, and coalesces before every NOT.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from cadenza.errors import ValidationFailed

MAX_LIST_INDEXES = 4
"""Most list-index parts (`items.0.sku`) a property path may have in a segment: each one
doubles the size of the SQL that reads it."""

_INT64 = 2**63
_INDEX_LIMIT = 2**31 - 1

Bool = ColumnElement[bool]


def bool_expr(expr: Any) -> Bool:
    """`expr`, typed as the boolean it is."""
    result: Bool = expr
    return result


def strict(expr: ColumnElement[Any]) -> Bool:
    """`expr` with NULL read as false (before a NOT)."""
    return sa.func.coalesce(expr, sa.false())


class Located:
    """A value somewhere in a row, which may be missing."""

    def is_kind(self, kind: str) -> Bool:
        """Whether the value is a `kind`: text, number, true, false or array."""
        raise NotImplementedError

    def present(self) -> Bool:
        """Whether the value is present and not null (never NULL itself)."""
        raise NotImplementedError

    def text(self) -> ColumnElement[Any]:
        """The value as text, meaningful where it is a text."""
        raise NotImplementedError

    def number(self, exact: bool) -> ColumnElement[Any]:
        """The value as a number, NULL where it is not one (`exact`: compare with an int)."""
        raise NotImplementedError

    def text_equals(self, values: Sequence[str]) -> Bool:
        """Whether the value is a text equal to one of `values`."""
        return sa.and_(self.is_kind("text"), self.text().in_(list(values)))

    def any_element(self, test: Callable[[Located], Bool]) -> Bool:
        """Whether the value is a list with an element passing `test`."""
        return sa.false()


class ColumnText(Located):
    """A nullable text column (the built-in contact and company attributes, grades)."""

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column

    def is_kind(self, kind: str) -> Bool:
        return self.present() if kind == "text" else sa.false()

    def present(self) -> Bool:
        return self.column.is_not(None)

    def text(self) -> ColumnElement[Any]:
        return self.column

    def number(self, exact: bool) -> ColumnElement[Any]:
        return sa.null()

    def text_equals(self, values: Sequence[str]) -> Bool:
        return self.column.in_(list(values))


class ColumnNumber(Located):
    """A non-null number column (scores)."""

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column

    def is_kind(self, kind: str) -> Bool:
        return sa.true() if kind == "number" else sa.false()

    def present(self) -> Bool:
        return sa.true()

    def text(self) -> ColumnElement[Any]:
        return sa.null()

    def number(self, exact: bool) -> ColumnElement[Any]:
        return self.column


# --- SQLite: json_type / json_extract over a JSON path ------------------------------------------

_SQLITE_KINDS = {"text": ("text",), "number": ("integer", "real"), "true": ("true",),
                 "false": ("false",), "array": ("array",)}


def _needs_escape(key: str) -> bool:
    """Keys SQLite's JSON path syntax cannot quote (it has no escapes inside "...")."""
    return any(ch in '"\\' or ord(ch) < 0x20 for ch in key)


class _Path:
    """A SQLite JSON path: text known now, then parts chosen per row (list or object)."""

    def __init__(self, expr: ColumnElement[Any] | None = None, tail: str = "$") -> None:
        self.expr = expr
        self.tail = tail

    def then(self, part: str | ColumnElement[Any]) -> _Path:
        if isinstance(part, str):
            return _Path(self.expr, self.tail + part)
        return _Path(self.sql().concat(part), "")

    def sql(self) -> ColumnElement[Any]:
        if self.expr is None:
            return sa.literal(self.tail, sa.String)
        return self.expr.concat(sa.literal(self.tail, sa.String)) if self.tail else self.expr


class SqliteJson(Located):
    """A value at a path in a SQLite JSON text column (json_type names its type)."""

    def __init__(self, kind: ColumnElement[Any], value: ColumnElement[Any],
                 doc: ColumnElement[Any] | None = None,
                 path: ColumnElement[Any] | None = None) -> None:
        self.kind = kind
        self.value = value
        self.doc = doc
        self.path = path

    @classmethod
    def at(cls, doc: ColumnElement[Any], parts: Sequence[str], field: str) -> SqliteJson:
        """The value at `parts` (keys, or list indexes where the value is a list)."""
        _check_indexes(parts, field)
        path = _Path()
        for i, part in enumerate(parts):
            if _needs_escape(part):
                rows = sa.func.json_each(doc, path.sql()).table_valued("key", "type", "value")
                if i == len(parts) - 1:
                    kind = sa.select(rows.c.type).where(rows.c.key == part).scalar_subquery()
                    value = sa.select(rows.c.value).where(rows.c.key == part).scalar_subquery()
                    return cls(kind, value)
                doc = sa.select(rows.c.value).where(
                    rows.c.key == part, rows.c.type.in_(("object", "array"))).scalar_subquery()
                path = _Path()
            elif part.isascii() and part.isdigit() and int(part) <= _INDEX_LIMIT:
                path = path.then(sa.case(
                    (sa.func.json_type(doc, path.sql()) == "array",
                     sa.literal(f"[{int(part)}]", sa.String)),
                    else_=sa.literal(f'."{part}"', sa.String)))
            else:
                path = path.then(f'."{part}"')
        return cls(sa.func.json_type(doc, path.sql()), sa.func.json_extract(doc, path.sql()),
                   doc, path.sql())

    def is_kind(self, kind: str) -> Bool:
        names = _SQLITE_KINDS[kind]
        return self.kind == names[0] if len(names) == 1 else self.kind.in_(names)

    def present(self) -> Bool:
        return sa.func.coalesce(self.kind, "null") != "null"

    def text(self) -> ColumnElement[Any]:
        return self.value

    def number(self, exact: bool) -> ColumnElement[Any]:
        return sa.case((self.is_kind("number"), self.value))

    def text_equals(self, values: Sequence[str]) -> Bool:
        # json_extract gives a JSON string as its text and never equals a text operand
        # otherwise (numbers are not text; true is 1), except that arrays and objects come out
        # as JSON text: check the type only for operands that look like JSON text.
        plain = sa.func.json_extract(self.doc, self.path) if self.doc is not None else None
        if plain is not None and not any(v[:1] in ("[", "{") for v in values):
            return plain.in_(list(values)) if len(values) > 1 else plain == values[0]
        return super().text_equals(values)

    def any_element(self, test: Callable[[Located], Bool]) -> Bool:
        if self.doc is None or self.path is None:
            # A key that needed json_each: read its elements from the value's JSON text.
            rows = sa.func.json_each(self.value).table_valued("type", "value")
        else:
            rows = sa.func.json_each(self.doc, self.path).table_valued("type", "value")
        element = SqliteJson(rows.c.type, rows.c.value)
        found = sa.exists(sa.select(sa.literal(1)).select_from(rows).where(test(element)))
        return sa.case((self.is_kind("array"), found), else_=sa.false())


# --- PostgreSQL: jsonb -------------------------------------------------------------------------

_PG_KINDS = {"text": "string", "number": "number", "array": "array"}


class PgJson(Located):
    """A value at a path in a PostgreSQL jsonb column."""

    def __init__(self, value: ColumnElement[Any]) -> None:
        self.value = value

    @classmethod
    def at(cls, doc: ColumnElement[Any], parts: Sequence[str], field: str) -> PgJson:
        """The value at `parts` (keys, or list indexes where the value is a list)."""
        _check_indexes(parts, field)
        value = doc
        for part in parts:
            by_key = value.op("->", return_type=JSONB)(sa.literal(part, sa.Text))
            if part.isascii() and part.isdigit() and int(part) <= _INDEX_LIMIT:
                by_index = value.op("->", return_type=JSONB)(sa.literal(int(part), sa.Integer))
                value = sa.case((sa.func.jsonb_typeof(value) == "array", by_index),
                                else_=by_key)
            else:
                value = by_key
        return cls(value)

    def is_kind(self, kind: str) -> Bool:
        if kind in ("true", "false"):
            return self.value == sa.literal_column(f"'{kind}'::jsonb")
        return sa.func.jsonb_typeof(self.value) == _PG_KINDS[kind]

    def present(self) -> Bool:
        return sa.func.coalesce(sa.func.jsonb_typeof(self.value), "null") != "null"

    def text(self) -> ColumnElement[Any]:
        return self.value.op("#>>", return_type=sa.Text)(sa.literal_column("'{}'"))

    def number(self, exact: bool) -> ColumnElement[Any]:
        target = sa.Numeric() if exact else sa.Float()
        return sa.case((self.is_kind("number"), sa.cast(self.value, target)))

    def text_equals(self, values: Sequence[str]) -> Bool:
        wanted = [sa.func.to_jsonb(sa.cast(sa.literal(v, sa.Text), sa.Text)) for v in values]
        return self.value.in_(wanted) if len(wanted) > 1 else self.value == wanted[0]

    def any_element(self, test: Callable[[Located], Bool]) -> Bool:
        rows = sa.func.jsonb_array_elements(self.value).table_valued("value")
        element = PgJson(rows.c.value)
        found = sa.exists(sa.select(sa.literal(1)).select_from(rows).where(test(element)))
        return sa.case((self.is_kind("array"), found), else_=sa.false())


def _check_indexes(parts: Sequence[str], field: str) -> None:
    indexes = sum(1 for part in parts if part.isascii() and part.isdigit())
    if indexes > MAX_LIST_INDEXES:
        raise ValidationFailed(field, f"has {indexes} list-index parts; a segment can read "
                                      f"paths with at most {MAX_LIST_INDEXES}")


def located_json(dialect: str, doc: ColumnElement[Any], parts: Sequence[str],
                 field: str) -> Located:
    """The value at `parts` of JSON column `doc` in this dialect."""
    if dialect == "postgresql":
        return PgJson.at(doc, parts, field)
    return SqliteJson.at(doc, parts, field)


# --- the comparison rules ----------------------------------------------------------------------

_ORDER = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__", "eq": "__eq__"}


def _number_operand(value: int | float, dialect: str) -> ColumnElement[Any]:
    if isinstance(value, int):
        if dialect == "postgresql":
            return sa.literal(decimal.Decimal(value), sa.Numeric())
        if -_INT64 <= value < _INT64:
            return sa.literal(value, sa.BigInteger())
        return sa.literal(float(value), sa.Float())
    return sa.literal(value, sa.Float())


def _number_test(located: Located, op: str, operand: int | float, dialect: str) -> Bool:
    if (op == "eq" and isinstance(located, SqliteJson) and located.doc is not None
            and operand not in (0, 1)):
        # json_extract gives numbers as numbers, text as text (never equal to a number) and
        # true/false as 1/0: away from 0 and 1 equality needs no type check.
        plain = sa.func.json_extract(located.doc, located.path)
        return bool_expr(plain == _number_operand(operand, dialect))
    exact = isinstance(operand, int)
    number = located.number(exact)
    result: Bool = getattr(number, _ORDER[op])(_number_operand(operand, dialect))
    return result


def same_sql(located: Located, operand: Any, dialect: str) -> Bool:
    """`nodes.same(value, operand)`."""
    if isinstance(operand, bool):
        return located.is_kind("true" if operand else "false")
    if isinstance(operand, int | float):
        return _number_test(located, "eq", operand, dialect)
    return located.text_equals([operand])


def _text(located: Located, dialect: str) -> ColumnElement[Any]:
    text = located.text()
    return sa.collate(text, "C") if dialect == "postgresql" else text


def compare_sql(op: str, located: Located, operand: Any, dialect: str) -> Bool:
    """`nodes.compare(op, value, operand)` over a located value."""
    if op == "exists":
        return located.present() if operand else sa.not_(located.present())
    if op == "ne":
        return sa.not_(strict(compare_sql("eq", located, operand, dialect)))
    if op == "not_in":
        return sa.not_(strict(compare_sql("in", located, operand, dialect)))
    if op == "eq":
        return same_sql(located, operand, dialect)
    if op == "in":
        texts = [item for item in operand if isinstance(item, str)]
        parts = [located.text_equals(texts)] if texts else []
        # Deduplicated by type too: Python's 0 == False would merge them.
        others = {(isinstance(item, bool), item): item for item in operand
                  if not isinstance(item, str)}
        parts += [same_sql(located, item, dialect) for item in others.values()]
        return sa.or_(*parts)
    if op == "contains":
        in_list = located.any_element(lambda element: same_sql(element, operand, dialect))
        if not isinstance(operand, str):
            return in_list
        inside = sa.and_(located.is_kind("text"),
                         sa.func.instr(located.text(), operand) > 0 if dialect == "sqlite"
                         else sa.func.strpos(located.text(), operand) > 0)
        return sa.or_(inside, in_list)
    if op == "starts_with":
        return sa.and_(located.is_kind("text"),
                       sa.func.substr(located.text(), 1, len(operand)) == operand)
    if isinstance(operand, str):
        result: Bool = getattr(_text(located, dialect), _ORDER[op])(operand)
        return sa.and_(located.is_kind("text"), result)
    return _number_test(located, op, operand, dialect)
