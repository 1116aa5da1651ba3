"""Reading events: by contact, name, type and time, newest first, keyset-paginated."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import NotFound
from cadenza.store import Page, check_limit, decode_cursor, encode_cursor, schema

e = schema.events
EVENT_COLUMNS = (e.c.id, e.c.message_id, e.c.contact_id, e.c.type, e.c.name, e.c.properties,
                 e.c.context, e.c.source, e.c.timestamp, e.c.received_at)


def list_events(
    conn: Connection,
    *,
    contact_id: int | None = None,
    name: str | None = None,
    type: str | None = None,
    since: int | None = None,
    until: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
    with_context: bool = True,
) -> Page:
    """Events matching every given filter, newest first."""
    check_limit(limit)
    columns = EVENT_COLUMNS if with_context else tuple(c for c in EVENT_COLUMNS
                                                       if c.name != "context")
    query = sa.select(*columns)
    if contact_id is not None:
        query = query.where(e.c.contact_id == contact_id)
    if name is not None:
        query = query.where(e.c.name == name)
    if type is not None:
        query = query.where(e.c.type == type)
    if since is not None:
        query = query.where(e.c.timestamp >= since)
    if until is not None:
        query = query.where(e.c.timestamp < until)
    if cursor is not None:
        ts, row_id = decode_cursor(cursor, 2)
        query = query.where(sa.tuple_(e.c.timestamp, e.c.id) < sa.tuple_(ts, row_id))
    query = query.order_by(e.c.timestamp.desc(), e.c.id.desc()).limit(limit + 1)
    rows: list[dict[str, Any]] = [dict(r) for r in conn.execute(query).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["timestamp"], rows[-1]["id"])
    return Page(rows, next_cursor)


def get_import(conn: Connection, import_id: int, *, errors_limit: int = 1000) -> dict[str, Any]:
    """A CSV import's status and counts, with its first row errors."""
    i, ie = schema.imports, schema.import_errors
    row = conn.execute(sa.select(i).where(i.c.id == import_id)).mappings().first()
    if row is None:
        raise NotFound("import", import_id)
    errors = [
        {"line": r["row"], "column": r["field"], "reason": r["reason"]}
        for r in conn.execute(sa.select(ie).where(ie.c.import_id == import_id)
                              .order_by(ie.c.row, ie.c.id).limit(errors_limit)).mappings()
    ]
    return {**dict(row), "errors": errors}
