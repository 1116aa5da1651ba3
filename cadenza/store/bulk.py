"""Hot-path writes straight through the driver's executemany.

SQLAlchemy's Core executemany processes every parameter of every row in Python; on the
ingestion path (100,000+ rows/s) that overhead is most of the cost. These helpers build the
statement once from the schema and hand the driver plain tuples; JSON values arrive already
serialised. Ids are allocated up front so that no per-row RETURNING is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

_JSON_TYPES = (sa.JSON,)


def dumps(value: Any) -> str:
    """JSON text for a JSON column."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def loads(value: Any) -> Any:
    """A JSON column's value as read through the driver (text on SQLite, parsed on PG)."""
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


def allocate_ids(conn: Connection, table: sa.Table, count: int) -> list[int]:
    """`count` fresh primary-key values for `table`, reserved for this transaction.

    SQLite: the caller holds the write lock (BEGIN IMMEDIATE), so max(id)+1.. is safe.
    PostgreSQL: drawn from the column's sequence.
    """
    if count <= 0:
        return []
    if conn.dialect.name == "sqlite":
        top = conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one()
        return list(range(int(top) + 1, int(top) + 1 + count))
    rows = conn.execute(
        sa.text(f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) "
                "FROM generate_series(1, :n)"),
        {"n": count},
    )
    return [int(r[0]) for r in rows]


def insert_rows(
    conn: Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    ignore_conflicts_on: Sequence[str] | None = None,
    upsert_on: Sequence[str] | None = None,
    update: Sequence[str] = (),
) -> int:
    """Insert tuples (JSON already serialised) in one executemany; return rows written.

    `ignore_conflicts_on` skips rows that clash on those columns; `upsert_on` with `update`
    overwrites the `update` columns of the existing row instead.
    """
    if not rows:
        return 0
    postgres = conn.dialect.name == "postgresql"
    marks = []
    for name in columns:
        is_json = isinstance(table.c[name].type, _JSON_TYPES)
        marks.append("CAST(%s AS jsonb)" if postgres and is_json else ("%s" if postgres else "?"))
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
           f"VALUES ({', '.join(marks)})")
    if ignore_conflicts_on:
        sql += f" ON CONFLICT ({', '.join(ignore_conflicts_on)}) DO NOTHING"
    elif upsert_on:
        sets = ", ".join(f"{name} = excluded.{name}" for name in update)
        sql += f" ON CONFLICT ({', '.join(upsert_on)}) DO UPDATE SET {sets}"
    result = conn.exec_driver_sql(sql, [tuple(r) for r in rows])
    return int(result.rowcount)


def select_in(
    conn: Connection,
    sql: str,
    values: Sequence[Any],
    *,
    before: Sequence[Any] = (),
    chunk: int = 500,
) -> list[tuple[Any, ...]]:
    """Run `sql` (with `{marks}` where an IN list goes, and `{p}` for each placeholder
    before it) for `values` in chunks; return every row.

    Example: ``select_in(conn, "SELECT value, contact_id FROM identities WHERE kind = {p}
    AND value IN ({marks})", values, before=["email"])``.
    """
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    rows: list[tuple[Any, ...]] = []
    if not values:
        return rows
    # The driver's own cursor, in the same transaction: SQLAlchemy's result would fetch and
    # wrap the rows one by one.
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for start in range(0, len(values), chunk):
            part = list(values[start : start + chunk])
            text = sql.format(p=mark, marks=", ".join([mark] * len(part)))
            cursor.execute(text, (*before, *part))
            rows.extend(cursor.fetchall())
    finally:
        cursor.close()
    return rows


def fetch(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Every row of `sql` (driver placeholders) as plain tuples, through the driver's cursor
    in the connection's transaction: no per-row wrapping, for result sets of many rows."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, tuple(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def update_rows(
    conn: Connection,
    table: sa.Table,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """`UPDATE table SET columns... WHERE key = ?` for each tuple (values..., key value)."""
    if not rows:
        return
    postgres = conn.dialect.name == "postgresql"
    sets = []
    for name in columns:
        is_json = isinstance(table.c[name].type, _JSON_TYPES)
        mark = "CAST(%s AS jsonb)" if postgres and is_json else ("%s" if postgres else "?")
        sets.append(f"{name} = {mark}")
    sql = (f"UPDATE {table.name} SET {', '.join(sets)} "
           f"WHERE {key} = {'%s' if postgres else '?'}")
    conn.exec_driver_sql(sql, [tuple(r) for r in rows])
