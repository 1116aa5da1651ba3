"""SQL over `journeys`, `journey_versions` and (for archive and migrate) `enrollments`.

Every write that touches a version says `status = 'draft'` in its WHERE clause, so that a
published version cannot change even if a caller got the rules wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.engine import Connection

from cadenza.journeys.models import ACTIVE_ENROLLMENT, Journey, JourneyVersion
from cadenza.store import dialect_insert, loads, schema

j = schema.journeys
v = schema.journey_versions
en = schema.enrollments
h = schema.journey_history


# --- journeys --------------------------------------------------------------------------------

def journey_row(conn: Connection, key: str, *, lock: bool = False) -> RowMapping | None:
    """The journeys row of `key` (locked for update on PostgreSQL when `lock`)."""
    query = sa.select(j).where(j.c.key == key)
    if lock:
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def journeys(conn: Connection, key: str | None = None) -> list[Journey]:
    """Every journey (or the one with `key`), by key, with its version numbers."""
    live = v.alias("live")
    shadow = v.alias("shadow")
    draft = (sa.select(sa.func.max(v.c.number)).where(v.c.journey_id == j.c.id,
                                                      v.c.status == "draft")
             .scalar_subquery())
    query = (sa.select(j, live.c.number.label("live_number"),
                       shadow.c.number.label("shadow_number"), draft.label("draft_number"))
             .outerjoin(live, live.c.id == j.c.live_version_id)
             .outerjoin(shadow, shadow.c.id == j.c.shadow_version_id)
             .order_by(j.c.key))
    if key is not None:
        query = query.where(j.c.key == key)
    return [Journey(id=r["id"], key=r["key"], name=r["name"], status=r["status"],
                    live_version_id=r["live_version_id"],
                    shadow_version_id=r["shadow_version_id"], live_version=r["live_number"],
                    shadow_version=r["shadow_number"], draft_version=r["draft_number"],
                    created_at=r["created_at"], updated_at=r["updated_at"])
            for r in conn.execute(query).mappings()]


def create_journey(conn: Connection, key: str, name: str, now: int) -> RowMapping:
    """The row of journey `key`, inserted as a draft when new (safe against a racing insert)."""
    conn.execute(dialect_insert(conn, j).values(
        key=key, name=name, status="draft", created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["key"]))
    row = journey_row(conn, key, lock=True)
    assert row is not None
    return row


def update_journey(conn: Connection, journey_id: int, now: int, **values: Any) -> None:
    """Change a journey's columns (and its updated_at, which the engine watches)."""
    conn.execute(sa.update(j).where(j.c.id == journey_id).values(updated_at=now, **values))


def journey_keys(conn: Connection) -> list[str]:
    """Every journey key."""
    return [r[0] for r in conn.execute(sa.select(j.c.key).order_by(j.c.key))]


# --- versions --------------------------------------------------------------------------------

def _version(row: RowMapping, journey: RowMapping) -> JourneyVersion:
    return JourneyVersion(
        id=row["id"], journey_id=row["journey_id"], key=journey["key"], number=row["number"],
        status=row["status"], definition=loads(row["definition"]),
        content_hash=row["content_hash"], created_at=row["created_at"],
        published_at=row["published_at"], live=row["id"] == journey["live_version_id"],
        shadow=row["id"] == journey["shadow_version_id"])


def version(conn: Connection, journey: RowMapping, number: int) -> JourneyVersion | None:
    """Version `number` of a journey."""
    row = conn.execute(sa.select(v).where(v.c.journey_id == journey["id"],
                                          v.c.number == number)).mappings().first()
    return None if row is None else _version(row, journey)


def version_by_id(conn: Connection, version_id: int) -> JourneyVersion | None:
    """A version by its id."""
    row = conn.execute(sa.select(v).where(v.c.id == version_id)).mappings().first()
    if row is None:
        return None
    journey = conn.execute(sa.select(j).where(j.c.id == row["journey_id"])).mappings().one()
    return _version(row, journey)


def versions(conn: Connection, journey: RowMapping) -> list[JourneyVersion]:
    """Every version of a journey, oldest first."""
    rows = conn.execute(sa.select(v).where(v.c.journey_id == journey["id"])
                        .order_by(v.c.number)).mappings()
    return [_version(row, journey) for row in rows]


def open_draft(conn: Connection, journey: RowMapping) -> JourneyVersion | None:
    """The journey's open draft (there is at most one)."""
    row = conn.execute(sa.select(v).where(v.c.journey_id == journey["id"],
                                          v.c.status == "draft")
                       .order_by(v.c.number.desc()).limit(1)).mappings().first()
    return None if row is None else _version(row, journey)


def insert_draft(conn: Connection, journey_id: int, definition: Mapping[str, Any],
                 now: int) -> int:
    """A new draft version numbered after the journey's last; its number."""
    top = conn.execute(sa.select(sa.func.coalesce(sa.func.max(v.c.number), 0))
                       .where(v.c.journey_id == journey_id)).scalar_one()
    number = int(top) + 1
    conn.execute(sa.insert(v).values(journey_id=journey_id, number=number, status="draft",
                                     definition=dict(definition), created_at=now))
    return number


def replace_draft(conn: Connection, version_id: int, definition: Mapping[str, Any]) -> int:
    """Put `definition` into a draft version; rows changed (0 if it is no longer a draft)."""
    result = conn.execute(sa.update(v).where(v.c.id == version_id, v.c.status == "draft")
                          .values(definition=dict(definition)))
    return result.rowcount


def publish_version(conn: Connection, version_id: int, content_hash: str, now: int) -> int:
    """Mark a draft published; rows changed (0 if it was not a draft)."""
    result = conn.execute(sa.update(v).where(v.c.id == version_id, v.c.status == "draft")
                          .values(status="published", content_hash=content_hash,
                                  published_at=now))
    return result.rowcount


def definition_of(conn: Connection, version_id: int) -> tuple[str, Mapping[str, Any]] | None:
    """(status, definition) of a version."""
    row = conn.execute(sa.select(v.c.status, v.c.definition)
                       .where(v.c.id == version_id)).first()
    return None if row is None else (row[0], loads(row[1]))


# --- what publishing checks against ----------------------------------------------------------

def template_channels(conn: Connection) -> dict[str, str]:
    """Template key -> channel, for every template."""
    t = schema.templates
    return {str(key): str(channel) for key, channel in
            conn.execute(sa.select(t.c.key, t.c.channel))}


# --- enrollments -----------------------------------------------------------------------------

def end_active_enrollments(conn: Connection, journey_id: int, outcome: str, now: int) -> int:
    """Exit every active enrollment of a journey (live and shadow); how many.

    `seq` moves on so that an engine pass that read them before cannot write them back."""
    result = conn.execute(
        sa.update(en).where(en.c.journey_id == journey_id, en.c.status.in_(ACTIVE_ENROLLMENT))
        .values(status="exited", outcome=outcome, ended_at=now, updated_at=now, wake_at=None,
                wait_event=None, wait_key=None, active_slot=None, seq=en.c.seq + 1))
    return result.rowcount


def active_steps(conn: Connection, version_id: int) -> set[str]:
    """The steps where active enrollments of a version are."""
    query = sa.select(en.c.node).distinct().where(en.c.version_id == version_id,
                                                  en.c.status.in_(ACTIVE_ENROLLMENT))
    return {row[0] for row in conn.execute(query)}


def move_enrollments(conn: Connection, from_version: int, node: str, to_version: int,
                     target: str, *, keep_wait: bool, wait_event: str | None,
                     details: Mapping[str, Any], now: int) -> int:
    """Move the active enrollments of `from_version` at `node` to `target` of `to_version`;
    how many. Each gets a history row (cause `migrate`). Unless `keep_wait`, they become
    ready to run `target` now."""
    where = (en.c.version_id == from_version, en.c.node == node,
             en.c.status.in_(ACTIVE_ENROLLMENT))
    steps = [[node, "migrated", dict(details)]]
    # Keyed by the seq before the move, which no engine pass has used yet (a pass writes
    # the seq it began at and then advances it); the move advances it too.
    conn.execute(sa.insert(h).from_select(
        ["enrollment_id", "seq", "contact_id", "version_id", "at", "cause", "steps"],
        sa.select(en.c.id, en.c.seq, en.c.contact_id, sa.literal(to_version, sa.BigInteger),
                  sa.literal(now, sa.BigInteger), sa.literal("migrate", sa.String),
                  sa.literal(steps, schema.JSON)).where(*where)))
    values: dict[str, Any] = {"version_id": to_version, "node": target, "updated_at": now,
                              "seq": en.c.seq + 1}
    if keep_wait:
        if wait_event is not None:
            values["wait_event"] = wait_event
    else:
        values.update(status="ready", wake_at=now, wait_event=None, wait_key=None)
    return conn.execute(sa.update(en).where(*where).values(**values)).rowcount
