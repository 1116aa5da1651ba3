"""Readers of the event log: a position per (reader, partition) in `engine_cursors`.

The engine (`events:<part>`), the segments (`segments:<part>`) and lead scoring
(`scores:<part>`) each follow the log after their own cursors, moving them in the same
transaction as their effects, so that every event is applied exactly once by each reader.
Event ids commit in order (one writer on SQLite, one advisory lock on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.engine import Connection

from cadenza.store import schema
from cadenza.store.bulk import insert_rows, select_in


def _names(reader: str, parts: Iterable[int]) -> list[str]:
    return [f"{reader}:{p}" for p in parts]


def ensure_cursors(conn: Connection, reader: str, parts: Iterable[int], now: int) -> None:
    """Create `reader`'s missing cursors at the end of the event log: readers act on what
    happens from the moment they first run, not on history."""
    names = _names(reader, parts)
    have = {n for n, in select_in(conn, "SELECT name FROM engine_cursors WHERE name IN "
                                  "({marks})", names)}
    missing = [n for n in names if n not in have]
    if missing:
        top = int(conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM events").scalar_one())
        insert_rows(conn, schema.engine_cursors, ("name", "position", "updated_at"),
                    [(n, top, now) for n in missing], ignore_conflicts_on=("name",))


def cursor_positions(conn: Connection, reader: str, parts: Sequence[int],
                     now: int) -> dict[int, int]:
    """The last event id `reader` applied, per partition (creating missing cursors)."""
    names = _names(reader, parts)
    sql = "SELECT name, position FROM engine_cursors WHERE name IN ({marks})"
    rows = select_in(conn, sql, names, chunk=len(names))
    if len(rows) < len(names):
        ensure_cursors(conn, reader, parts, now)
        rows = select_in(conn, sql, names, chunk=len(names))
    return {int(name.rsplit(":", 1)[1]): int(pos) for name, pos in rows}


def move_cursors(conn: Connection, reader: str, parts: Sequence[int], position: int,
                 now: int) -> None:
    """Every cursor of `reader` over `parts` to `position`, in one statement."""
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    conn.exec_driver_sql(
        f"UPDATE engine_cursors SET position = {mark}, updated_at = {mark} WHERE name IN "
        f"({', '.join([mark] * len(parts))})",
        (position, now, *_names(reader, parts)))


def log_end(conn: Connection) -> int:
    """The id of the last event stored (0 when none)."""
    return int(conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM events").scalar_one())
