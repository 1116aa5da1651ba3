"""Helpers for the segment tests: contacts and events through ingestion, an engine with the
segments listener, membership reads."""

from __future__ import annotations

import itertools
from typing import Any

import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.engine import Engine
from cadenza.events import EventService
from cadenza.segments import SegmentListener, SegmentService
from cadenza.store import Store, schema

_ids = itertools.count(1)


def identify(events: EventService, user: str, **traits: Any) -> int:
    """An identify call; the contact's id."""
    result = events.ingest([{"type": "identify", "userId": user, "messageId": f"i{next(_ids)}",
                             "traits": traits}])
    assert not result.rejected, result.rejected
    return int(result.contact_ids[0])


def track(events: EventService, user: str, name: str, **properties: Any) -> int:
    """A track call; the contact's id."""
    result = events.ingest([{"type": "track", "userId": user, "event": name,
                             "messageId": f"t{next(_ids)}", "properties": properties}])
    assert not result.rejected, result.rejected
    return int(result.contact_ids[0])


def members(store: Store, key: str) -> set[int]:
    """The contact ids in segment `key`."""
    s, m = schema.segments, schema.segment_members
    with store.read() as conn:
        return set(conn.execute(sa.select(m.c.contact_id).join(s, s.c.id == m.c.segment_id)
                                .where(s.c.key == key)).scalars())


def history(store: Store, key: str) -> list[tuple[int, str, str]]:
    """(contact, change, cause) of segment `key`, oldest first."""
    s, h = schema.segments, schema.segment_history
    with store.read() as conn:
        return [(int(r[0]), r[1], r[2]) for r in conn.execute(
            sa.select(h.c.contact_id, h.c.change, h.c.cause).join(s, s.c.id == h.c.segment_id)
            .where(s.c.key == key).order_by(h.c.id))]


def segment_events(store: Store) -> list[tuple[int, str, str]]:
    """(contact, name, segment key) of the entry/exit events, oldest first."""
    e = schema.events
    with store.read() as conn:
        rows = conn.execute(sa.select(e.c.contact_id, e.c.name, e.c.properties)
                            .where(e.c.source == "segments").order_by(e.c.id)).all()
    return [(int(c), n, p["segment"]) for c, n, p in rows]


def engine_with_listener(store: Store, clock: FakeClock,
                         window_scan_ms: int = 60_000) -> tuple[Engine, SegmentListener]:
    """A started engine whose passes run the segments listener."""
    listener = SegmentListener(window_scan_ms)
    engine = Engine(store, clock, batch_size=1_000, listeners=[listener])
    engine.start()
    engine.run_once()  # the listener's cursors start at the end of the log
    return engine, listener


def declare(store: Store, clock: FakeClock, **types: str) -> None:
    """Declare contact fields (name=type)."""
    from cadenza.contacts import FieldSpec, declare_field

    with store.begin() as conn:
        for name, kind in types.items():
            declare_field(conn, FieldSpec(name, kind), clock.now_ms())


def service(store: Store, clock: FakeClock) -> SegmentService:
    """The segment service on the fake clock."""
    return SegmentService(store, clock)
