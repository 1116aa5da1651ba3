"""SQL reads of the segments tables (definitions, members, history, drift)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from cadenza.segments.models import Drift, Segment
from cadenza.store import fetch, loads

_COLUMNS = ("id, key, name, description, kind, definition, depends_on, status, member_count, "
            "created_at, updated_at, recomputed_at")


def _mark(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def _segment(row: tuple[Any, ...]) -> Segment:
    (sid, key, name, description, kind, definition, depends_on, status, count, created,
     updated, recomputed) = row
    return Segment(int(sid), key, name, description or "", kind, loads(definition),
                   tuple(loads(depends_on) or ()), status, int(count), int(created),
                   int(updated), None if recomputed is None else int(recomputed))


def all_segments(conn: Connection, status: str | None = None) -> list[Segment]:
    """Every segment (of `status` when given), by key."""
    mark = _mark(conn)
    where, params = (f" WHERE status = {mark}", (status,)) if status else ("", ())
    return [_segment(r) for r in fetch(conn, f"SELECT {_COLUMNS} FROM segments{where} "
                                       "ORDER BY key", params)]


def find_segment(conn: Connection, key: str) -> Segment | None:
    """The segment with `key`, or None."""
    rows = fetch(conn, f"SELECT {_COLUMNS} FROM segments WHERE key = {_mark(conn)}", (key,))
    return _segment(rows[0]) if rows else None


def fingerprint(conn: Connection) -> tuple[Any, ...]:
    """Changes whenever a definition does (created, edited, archived): cheap to read."""
    row = fetch(conn, "SELECT count(*), coalesce(max(updated_at), 0), "
                "coalesce(sum(updated_at), 0) FROM segments")[0]
    return tuple(int(v) for v in row)


def members_page(conn: Connection, segment_id: int, after: int, limit: int
                 ) -> list[tuple[Any, ...]]:
    """(contact id, since, source, email, user id) of members after contact `after`."""
    mark = _mark(conn)
    return fetch(conn, f"SELECT m.contact_id, m.since, m.source, c.email, c.user_id "
                 f"FROM segment_members m JOIN contacts c ON c.id = m.contact_id "
                 f"WHERE m.segment_id = {mark} AND m.contact_id > {mark} "
                 f"ORDER BY m.contact_id LIMIT {int(limit)}", (segment_id, after))


def history_page(conn: Connection, *, segment_id: int | None = None,
                 contact_id: int | None = None, before: int | None = None, limit: int = 50
                 ) -> list[tuple[Any, ...]]:
    """(id, segment key, contact id, change, cause, at), newest first, ids below `before`."""
    mark = _mark(conn)
    where: list[str] = []
    params: list[Any] = []
    if segment_id is not None:
        where.append(f"h.segment_id = {mark}")
        params.append(segment_id)
    if contact_id is not None:
        where.append(f"h.contact_id = {mark}")
        params.append(contact_id)
    if before is not None:
        where.append(f"h.id < {mark}")
        params.append(before)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return fetch(conn, f"SELECT h.id, s.key, h.contact_id, h.change, h.cause, h.at "
                 f"FROM segment_history h JOIN segments s ON s.id = h.segment_id{clause} "
                 f"ORDER BY h.id DESC LIMIT {int(limit)}", params)


def contact_segments(conn: Connection, contact_id: int) -> list[tuple[Any, ...]]:
    """(key, name, kind, since, source) of the segments a contact belongs to."""
    return fetch(conn, f"SELECT s.key, s.name, s.kind, m.since, m.source FROM segment_members m "
                 f"JOIN segments s ON s.id = m.segment_id WHERE m.contact_id = {_mark(conn)} "
                 f"AND s.status = 'active' ORDER BY s.key", (contact_id,))


def drift_rows(conn: Connection, segment_id: int | None, limit: int) -> list[Drift]:
    """The latest recomputes, newest first."""
    mark = _mark(conn)
    where, params = (f" WHERE r.segment_id = {mark}", (segment_id,)) \
        if segment_id is not None else ("", ())
    rows = fetch(conn, f"SELECT s.key, r.started_at, r.duration_ms, r.members, r.entered, "
                 f"r.exited FROM segment_recomputes r JOIN segments s ON s.id = r.segment_id"
                 f"{where} ORDER BY r.id DESC LIMIT {int(limit)}", params)
    return [Drift(k, int(a), int(d), int(m), int(e), int(x)) for k, a, d, m, e, x in rows]


def member_ids(conn: Connection, segment_id: int, contact_ids: list[int]) -> set[int]:
    """Which of `contact_ids` are members of the segment."""
    from cadenza.store import select_in

    return {int(r[0]) for r in select_in(
        conn, "SELECT contact_id FROM segment_members WHERE segment_id = {p} AND contact_id "
        "IN ({marks})", contact_ids, before=[segment_id])}
