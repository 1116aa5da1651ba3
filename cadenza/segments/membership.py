"""Writing membership changes: members, history, entry/exit events, member counts.

Two paths with the same effects. `write_changes` takes a list of (segment, contact, entered)
decided in Python (the real-time listener, static lists) and writes each table with one
executemany. `apply_matching` takes a SELECT of the contacts that match now (the recompute)
and diffs it against `segment_members` inside the database, never looping over contacts.

Every change is a `segment_history` row and, except when a new segment is filled for the
first time, a track event ("Segment Entered" / "Segment Exited", source "segments",
properties {segment: key}) whose message id is deterministic, so a repeated write cannot
duplicate it. Analytics and scoring see those events; journeys with a segment trigger enter
on them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.events import lock_event_log
from cadenza.segments.models import SEGMENT_ENTERED, SEGMENT_EXITED, SEGMENT_SOURCE
from cadenza.store import dumps, insert_rows, schema


@dataclass(frozen=True)
class Change:
    """One contact entering or leaving one segment."""

    segment_id: int
    segment_key: str
    contact_id: int
    entered: bool


def message_id(segment_id: int, contact_id: int, entered: bool, now: int) -> str:
    """The event's message id: the same change at the same moment is the same event."""
    return f"segment:{segment_id}:{contact_id}:{'entered' if entered else 'exited'}:{now}"


def _mark(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def write_changes(conn: Connection, changes: Sequence[Change], cause: str, source: str,
                  now: int, *, emit: bool = True) -> None:
    """Write `changes` (already decided: entries of non-members, exits of members)."""
    if not changes:
        return
    mark = _mark(conn)
    entries = [c for c in changes if c.entered]
    exits = [c for c in changes if not c.entered]
    insert_rows(conn, schema.segment_members, ("segment_id", "contact_id", "since", "source"),
                [(c.segment_id, c.contact_id, now, source) for c in entries],
                ignore_conflicts_on=("segment_id", "contact_id"))
    if exits:
        conn.exec_driver_sql(f"DELETE FROM segment_members WHERE segment_id = {mark} AND "
                             f"contact_id = {mark}", [(c.segment_id, c.contact_id)
                                                      for c in exits])
    insert_rows(conn, schema.segment_history,
                ("segment_id", "contact_id", "change", "cause", "at"),
                [(c.segment_id, c.contact_id, "entered" if c.entered else "exited", cause, now)
                 for c in changes])
    delta: Counter[int] = Counter()
    for c in changes:
        delta[c.segment_id] += 1 if c.entered else -1
    counts = [(d, sid) for sid, d in sorted(delta.items()) if d]
    if counts:
        conn.exec_driver_sql(f"UPDATE segments SET member_count = member_count + {mark} "
                             f"WHERE id = {mark}", counts)
    if emit:
        lock_event_log(conn)  # event ids must commit in order for the log's readers
        insert_rows(conn, schema.events, (
            "message_id", "contact_id", "type", "name", "properties", "context", "source",
            "timestamp", "received_at"), [
            (message_id(c.segment_id, c.contact_id, c.entered, now), c.contact_id, "track",
             SEGMENT_ENTERED if c.entered else SEGMENT_EXITED, dumps({"segment": c.segment_key}),
             "{}", SEGMENT_SOURCE, now, now) for c in changes],
            ignore_conflicts_on=("message_id",))


_MATCH = sa.table("seg_match", sa.column("contact_id"))


@dataclass(frozen=True)
class Diff:
    """What `apply_matching` changed."""

    members: int
    entered: int
    exited: int


def apply_matching(conn: Connection, segment_id: int, segment_key: str,
                   matching: sa.Select[Any], cause: str, now: int, *,
                   emit: bool = True) -> Diff:
    """Make the segment's members exactly the contacts `matching` selects, set-oriented:
    the matches go into a temporary table, the difference with the members into another,
    and each write is one INSERT ... SELECT or DELETE ... WHERE IN."""
    postgres = conn.dialect.name == "postgresql"
    mark = _mark(conn)
    temp = "pg_temp" if postgres else "temp"
    for name in ("seg_match", "seg_diff"):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {temp}.{name}")
    suffix = " ON COMMIT DROP" if postgres else ""
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE seg_match (contact_id BIGINT PRIMARY KEY)"
                         f"{suffix}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE seg_diff (contact_id BIGINT PRIMARY KEY, "
                         f"change VARCHAR(8) NOT NULL){suffix}")
    conn.execute(sa.insert(_MATCH).from_select(["contact_id"], matching))
    conn.exec_driver_sql(
        f"INSERT INTO seg_diff (contact_id, change) SELECT n.contact_id, 'entered' "
        f"FROM seg_match n WHERE NOT EXISTS (SELECT 1 FROM segment_members m "
        f"WHERE m.segment_id = {mark} AND m.contact_id = n.contact_id)", (segment_id,))
    conn.exec_driver_sql(
        f"INSERT INTO seg_diff (contact_id, change) SELECT m.contact_id, 'exited' "
        f"FROM segment_members m WHERE m.segment_id = {mark} AND NOT EXISTS "
        f"(SELECT 1 FROM seg_match n WHERE n.contact_id = m.contact_id)", (segment_id,))
    counts: dict[str, int] = {
        str(change): int(n) for change, n in conn.exec_driver_sql(
            "SELECT change, count(*) FROM seg_diff GROUP BY change")}
    entered = int(counts.get("entered", 0))
    exited = int(counts.get("exited", 0))
    if exited:
        conn.exec_driver_sql(
            f"DELETE FROM segment_members WHERE segment_id = {mark} AND contact_id IN "
            f"(SELECT contact_id FROM seg_diff WHERE change = 'exited')", (segment_id,))
    if entered:
        conn.exec_driver_sql(
            f"INSERT INTO segment_members (segment_id, contact_id, since, source) "
            f"SELECT {mark}, contact_id, {mark}, 'rule' FROM seg_diff "
            f"WHERE change = 'entered'", (segment_id, now))
    if entered or exited:
        conn.exec_driver_sql(
            f"INSERT INTO segment_history (segment_id, contact_id, change, cause, at) "
            f"SELECT {mark}, contact_id, change, {mark}, {mark} FROM seg_diff",
            (segment_id, cause, now))
    if emit and (entered or exited):
        lock_event_log(conn)
        props = dumps({"segment": segment_key})
        cast = "CAST({m} AS jsonb)" if postgres else "{m}"
        cast = cast.format(m=mark)
        conn.exec_driver_sql(
            f"INSERT INTO events (message_id, contact_id, type, name, properties, context, "
            f"source, timestamp, received_at) "
            f"SELECT CAST({mark} AS TEXT) || CAST(contact_id AS TEXT) || ':' || change || "
            f"CAST({mark} AS TEXT), contact_id, 'track', "
            f"CASE WHEN change = 'entered' THEN {mark} ELSE {mark} END, {cast}, "
            f"{'CAST(' + mark + ' AS jsonb)' if postgres else mark}, {mark}, {mark}, {mark} "
            f"FROM seg_diff ORDER BY contact_id ON CONFLICT (message_id) DO NOTHING",
            (f"segment:{segment_id}:", f":{now}", SEGMENT_ENTERED, SEGMENT_EXITED, props, "{}",
             SEGMENT_SOURCE, now, now))
    members = int(conn.exec_driver_sql("SELECT count(*) FROM seg_match").scalar_one())
    conn.exec_driver_sql(f"UPDATE segments SET member_count = {mark}, recomputed_at = {mark} "
                         f"WHERE id = {mark}", (members, now, segment_id))
    if not postgres:  # PostgreSQL drops them at commit
        for name in ("seg_match", "seg_diff"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
    return Diff(members, entered, exited)
