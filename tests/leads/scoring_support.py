"""Helpers of the scoring tests: contacts and events written straight into the store, and
scores read back."""

from __future__ import annotations

import itertools
from typing import Any

import sqlalchemy as sa

from cadenza.store import Store, dumps, insert_rows, schema

NOW = 1_767_225_600_000
DAY = 86_400_000
_messages = itertools.count()


def add_contacts(store: Store, contacts: dict[int, dict[str, Any]]) -> None:
    """Contacts by id with their custom attributes."""
    with store.begin() as conn:
        insert_rows(conn, schema.contacts, ("id", "email", "attributes", "created_at",
                                            "updated_at"),
                    [(cid, f"c{cid}@example.com", dumps(attrs), NOW, NOW)
                     for cid, attrs in contacts.items()])


def add_events(store: Store, events: list[tuple[int, str, int, dict[str, Any]]]) -> None:
    """(contact, name, at, properties) rows appended to the event log in order."""
    with store.begin() as conn:
        insert_rows(conn, schema.events, ("message_id", "contact_id", "type", "name",
                                          "properties", "context", "source", "timestamp",
                                          "received_at"),
                    [(f"t{next(_messages)}", cid, "track", name, dumps(props), "{}", "test",
                      at, at) for cid, name, at, props in events])


def scores(store: Store, model: str) -> dict[int, tuple[float, str | None]]:
    """contact -> (score, grade) of one model."""
    s, m = schema.contact_scores, schema.score_models
    with store.read() as conn:
        rows = conn.execute(sa.select(s.c.contact_id, s.c.score, s.c.grade)
                            .join(m, m.c.id == s.c.model_id).where(m.c.key == model)).all()
    return {int(r[0]): (float(r[1]), r[2]) for r in rows}


def log(store: Store, name: str) -> list[tuple[int, dict[str, Any]]]:
    """(contact, properties) of the events named `name`, in log order."""
    from cadenza.store import loads

    e = schema.events
    with store.read() as conn:
        rows = conn.execute(sa.select(e.c.contact_id, e.c.properties).where(e.c.name == name)
                            .order_by(e.c.id)).all()
    return [(int(r[0]), loads(r[1])) for r in rows]


def declare(store: Store, **fields: str) -> None:
    """Declare contact fields, name=type."""
    from cadenza.contacts import FieldSpec, declare_field

    with store.begin() as conn:
        for name, kind in fields.items():
            declare_field(conn, FieldSpec(name, kind), NOW)
