"""Message events: what happened to a message after it left (delivered, bounced, opened,
clicked, unsubscribed, an SMS status) written to the event log as the contact's events.

They are ordinary events: journeys wait for them and branch on them, segments count them,
analytics reads them. Each carries a `message_id` derived from its source (the provider's
event id, the tracking token and time) so a provider that repeats a webhook, or a person who
opens a mail twice within the same second, records one event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.events import lock_event_log
from cadenza.store import dumps, insert_rows, schema

SOURCE = "channels"
_o = schema.outbox


@dataclass(frozen=True)
class MessageEvent:
    """One thing that happened to a message, for the contact's event log."""

    dedupe: str
    """What makes this event unique at its source (a provider event id, token + time)."""
    contact_id: int
    name: str
    """email.delivered, email.bounced, email.complained, email.opened, email.clicked,
    email.unsubscribed, sms.delivered, sms.failed, ..."""
    at: int
    properties: Mapping[str, Any] = field(default_factory=dict)

    def message_id(self) -> str:
        """The event log's unique key for this event."""
        digest = hashlib.sha256(f"{self.name}\x00{self.dedupe}".encode()).hexdigest()[:40]
        return f"fb:{digest}"


def record_message_events(conn: Connection, events: Sequence[MessageEvent],
                          received_at: int) -> int:
    """Append `events` to the event log in one statement; repeats are dropped. Returns how
    many were new."""
    if not events:
        return 0
    lock_event_log(conn)  # event ids must commit in order for the engine's cursor
    return insert_rows(conn, schema.events, (
        "message_id", "contact_id", "type", "name", "properties", "context", "source",
        "timestamp", "received_at"), [
        (e.message_id(), e.contact_id, "track", e.name, dumps(dict(e.properties)), "{}",
         SOURCE, e.at, received_at) for e in events],
        ignore_conflicts_on=("message_id",))


@dataclass(frozen=True)
class SentMessage:
    """An outbox row as feedback needs it."""

    id: int
    contact_id: int
    channel: str
    journey_id: int | None
    node: str | None
    purpose: str | None
    provider_ref: str | None
    key: str


_SENT_COLUMNS = (_o.c.id, _o.c.contact_id, _o.c.channel, _o.c.journey_id, _o.c.node,
                 _o.c.purpose, _o.c.provider_ref, _o.c.idempotency_key)


def find_messages(conn: Connection, *, ids: Sequence[int] = (),
                  provider_refs: Sequence[str] = (),
                  keys: Sequence[str] = ()) -> dict[str, SentMessage]:
    """Outbox rows by id (keyed 'id:<n>'), provider reference ('ref:<r>') or idempotency key
    ('key:<k>'), one statement per kind asked for."""
    found: dict[str, SentMessage] = {}
    for prefix, column, values in (("id", _o.c.id, ids), ("ref", _o.c.provider_ref,
                                                         provider_refs),
                                   ("key", _o.c.idempotency_key, keys)):
        wanted = sorted({str(v) for v in values} if prefix != "id" else {int(v) for v in values})
        if not wanted:
            continue
        for row in conn.execute(sa.select(*_SENT_COLUMNS).where(column.in_(wanted))).all():
            message = SentMessage(*row)
            value = {"id": message.id, "ref": message.provider_ref,
                     "key": message.key}[prefix]
            found[f"{prefix}:{value}"] = message
    return found


def message_properties(message: SentMessage) -> dict[str, Any]:
    """The properties every message event carries: which message, journey and step."""
    return {"outbox_id": message.id, "channel": message.channel,
            "journey_id": message.journey_id, "step": message.node,
            "purpose": message.purpose}
