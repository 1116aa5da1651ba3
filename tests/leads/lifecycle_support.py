"""Helpers for the lifecycle and routing tests: contacts, fields, events, table reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cadenza.contacts import FieldSpec, declare_field
from cadenza.store import Store, loads, schema


def declare(store: Store, now: int, *names: str, kind: str = "string",
            entity: str = "contact") -> None:
    """Declare fields (conditions may only name declared attributes)."""
    with store.begin() as conn:
        for name in names:
            declare_field(conn, FieldSpec(name, kind, entity=entity), now)


def contact(store: Store, now: int, email: str | None = None, **attributes: Any) -> int:
    """A contact row with attributes; its id."""
    c = schema.contacts
    with store.begin() as conn:
        return int(conn.execute(sa.insert(c).values(
            email=email, attributes=dict(attributes), created_at=now, updated_at=now)
            .returning(c.c.id)).scalar_one())


def contacts(store: Store, now: int, n: int, **attributes: Any) -> list[int]:
    """`n` contacts with the same attributes."""
    return [contact(store, now, f"c{i}-{now}@example.com", **attributes) for i in range(n)]


def set_attributes(store: Store, contact_id: int, **attributes: Any) -> None:
    """Overwrite some attributes of a contact (no event, as a journey update would)."""
    c = schema.contacts
    with store.begin() as conn:
        current = conn.execute(sa.select(c.c.attributes).where(c.c.id == contact_id)).scalar()
        merged = {**(loads(current) if isinstance(current, str) else current or {}),
                  **attributes}
        conn.execute(sa.update(c).where(c.c.id == contact_id).values(attributes=merged))


def track(store: Store, contact_id: int, name: str, message_id: str, at: int) -> None:
    """A track event of a contact, written to the log as ingestion would."""
    with store.begin() as conn:
        conn.execute(sa.insert(schema.events).values(
            message_id=message_id, contact_id=contact_id, type="track", name=name,
            properties={}, context={}, source="test", timestamp=at, received_at=at))


def rows(store: Store, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    """Rows of a table (optionally filtered), by primary key."""
    with store.read() as conn:
        query = sa.select(table).order_by(*table.primary_key.columns)
        if where:
            query = query.where(*where)
        return [dict(r) for r in conn.execute(query).mappings()]


def named_events(store: Store, name: str) -> list[dict[str, Any]]:
    """Events of one name, oldest first, properties decoded."""
    found = rows(store, schema.events, schema.events.c.name == name)
    for row in found:
        if isinstance(row["properties"], str):
            row["properties"] = loads(row["properties"])
    return found


def stage_of(store: Store, contact_ids: Sequence[int]) -> dict[int, str]:
    """Current stage per contact."""
    c = schema.contact_stages
    return {r["contact_id"]: r["stage"] for r in rows(store, c)
            if r["contact_id"] in set(contact_ids)}


def stages_doc(rules: Mapping[str, list[dict[str, Any]]],
               route: Sequence[str] = ()) -> dict[str, Any]:
    """The default stages with `rules` per stage key."""
    keys = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist",
            "other")
    return {"stages": [{"key": k, "name": k.upper(), "rules": rules.get(k, []),
                        "route": k in route} for k in keys]}
