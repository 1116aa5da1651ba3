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
) -> int:
    """Insert tuples (JSON already serialised) in one executemany; return rows inserted."""
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
    for start in range(0, len(values), chunk):
        part = list(values[start : start + chunk])
        text = sql.format(p=mark, marks=", ".join([mark] * len(part)))
        rows.extend(tuple(r) for r in conn.exec_driver_sql(text, (*before, *part)))
    return rows
