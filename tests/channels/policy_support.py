"""Helpers for the send-time policy tests: one dispatch batch, contacts in time zones,
journeys, policies, and messages built without a store for the pure rules."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cadenza.channels.models import Message, Recipient
from cadenza.channels.policies import PolicyService
from cadenza.clock import FakeClock
from cadenza.contacts import ConsentChange, ConsentStatus, record_consent
from cadenza.store import Store, schema


def at(text: str, zone: str = "UTC") -> int:
    """Epoch ms of a local ISO time (`2026-03-28T23:00`) in `zone`."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()
               * 1000)


def local(ms: int, zone: str) -> str:
    """`ms` as local `YYYY-MM-DDTHH:MM` in `zone`."""
    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")


def set_timezone(store: Store, contact: int, zone: str | None) -> None:
    """Give a contact a time zone."""
    c = schema.contacts
    with store.begin() as conn:
        conn.execute(sa.update(c).where(c.c.id == contact).values(timezone=zone))


def add_journey(store: Store, clock: FakeClock, key: str) -> int:
    """A journey row (draft); its id."""
    j = schema.journeys
    now = clock.now_ms()
    with store.begin() as conn:
        return int(conn.execute(sa.insert(j).values(
            key=key, name=key, status="draft", created_at=now, updated_at=now)
            .returning(j.c.id)).scalar_one())


def set_journey(store: Store, rows: list[int], key: str, journey_id: int | None = None) -> None:
    """Mark outbox rows as written by journey `key` (payload and journey_id, as the engine
    writes them)."""
    o = schema.outbox
    with store.begin() as conn:
        for row in rows:
            payload = conn.execute(sa.select(o.c.payload).where(o.c.id == row)).scalar_one()
            conn.execute(sa.update(o).where(o.c.id == row).values(
                payload={**payload, "journey": key}, journey_id=journey_id))


def set_policy(store: Store, clock: FakeClock, document: dict[str, Any],
               scope: str = "workspace") -> None:
    """Store a policy through the service."""
    PolicyService(store, clock).set(scope, document)


def consent(store: Store, at_ms: int, contact: int, status: ConsentStatus, *,
            channel: str = "email", purpose: str = "marketing", source: str = "api") -> None:
    """Record one consent change."""
    with store.begin() as conn:
        record_consent(conn, [ConsentChange(contact, channel, purpose, status, source, at_ms)])


def mark_sent(store: Store, rows: list[int], sent_at: int) -> None:
    """Outbox rows as if delivered at `sent_at` (history for caps)."""
    o = schema.outbox
    with store.begin() as conn:
        conn.execute(sa.update(o).where(o.c.id.in_(rows)).values(
            status="sent", sent_at=sent_at, attempts=1))


def message(outbox_id: int, at_ms: int, *, contact: int = 1, channel: str = "email",
            timezone: str | None = None, purpose: str = "marketing",
            journey: str | None = None) -> Message:
    """A message as the dispatcher hands it to the chain."""
    return Message(outbox_id=outbox_id, key=f"k{outbox_id}", channel=channel,
                   contact=Recipient(contact, email=f"c{contact}@example.com",
                                     timezone=timezone),
                   params={}, content={}, at_ms=at_ms, journey=journey, purpose=purpose,
                   address_kind="email" if channel == "email" else None,
                   address=f"c{contact}@example.com" if channel == "email" else None)
