"""Contacts changed outside the event log, queued for the readers that re-evaluate them.

Ingestion's changes are in the event log (identify carries traits, group carries company
traits). Journey actions (attributes, tags), consent changes, scores and stages are not: their
writers call `mark_changed` in the same transaction, and each consumer (segments, scores, lifecycle)
takes its own queued contacts with `take_changed`. A contact is queued once per consumer
however often it changes before it is taken (the key is (consumer, contact)).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.engine import Connection

from cadenza.store import schema
from cadenza.store.bulk import dumps, fetch

CHANGE_CONSUMERS = ("segments", "scores", "lifecycle")
"""Who re-evaluates changed contacts; every `mark_changed` queues a row for each."""


_BULK = 2_000
"""From this many contacts on, one statement reads them from a single array parameter
(JSON on SQLite, a bigint[] on PostgreSQL) instead of executemany: a rescoring round can
queue a million contacts."""


def mark_changed(conn: Connection, contact_ids: Iterable[int], now: int,
                 consumers: Sequence[str] = CHANGE_CONSUMERS) -> None:
    """Queue `contact_ids` for re-evaluation by every consumer (one statement per consumer
    for large sets, one executemany for small ones)."""
    ids = sorted(set(contact_ids))
    if not ids:
        return
    postgres = conn.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"
    if len(ids) < _BULK:
        conn.exec_driver_sql(
            f"INSERT INTO contact_changes (consumer, contact_id, part, at) VALUES "
            f"({mark}, {mark}, {mark}, {mark}) ON CONFLICT (consumer, contact_id) DO NOTHING",
            [(c, cid, cid % schema.PARTITIONS, now) for c in consumers for cid in ids])
        return
    if postgres:
        source = "unnest(%s::bigint[]) AS t(id)"
        array: object = ids
    else:
        source = "(SELECT value AS id FROM json_each(?)) AS t"
        array = dumps(ids)
    for consumer in consumers:
        conn.exec_driver_sql(
            f"INSERT INTO contact_changes (consumer, contact_id, part, at) "
            f"SELECT {mark}, t.id, t.id {'%%' if postgres else '%'} {schema.PARTITIONS}, "
            f"{mark} FROM {source} "
            f"WHERE true ON CONFLICT (consumer, contact_id) DO NOTHING",
            (consumer, now, array))


def take_changed(conn: Connection, consumer: str, parts: Sequence[int],
                 limit: int) -> list[int]:
    """Up to `limit` contacts queued for `consumer` in `parts`, removed from the queue (the
    caller re-evaluates them in the same transaction)."""
    if not parts:
        return []
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    where = f"consumer = {mark}"
    if len(parts) < schema.PARTITIONS:
        where += f" AND part IN ({', '.join(str(int(p)) for p in parts)})"
    rows = fetch(conn, f"SELECT contact_id FROM contact_changes WHERE {where} "
                 f"ORDER BY at LIMIT {int(limit)}", (consumer,))
    ids = [int(r[0]) for r in rows]
    if ids:
        conn.exec_driver_sql(
            f"DELETE FROM contact_changes WHERE consumer = {mark} AND contact_id = {mark}",
            [(consumer, cid) for cid in ids])
    return ids
