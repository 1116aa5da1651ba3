from __future__ import annotations

import sqlalchemy as sa

from cadenza.events.service import EventService
from cadenza.store import Store, schema


def test_anonymous_history_joins_identified_contact(events: EventService, store: Store) -> None:
    result = events.ingest([
        {"type": "track", "event": "Viewed", "anonymousId": "a1", "messageId": "m1"},
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m2",
         "traits": {"email": "Ann@Example.com"}},
    ])
    assert result.accepted == 2
    assert len(set(result.contact_ids)) == 1
    with store.read() as conn:
        row = conn.execute(sa.select(schema.contacts)).mappings().one()
    assert row["email"] == "ann@example.com"
    assert row["user_id"] == "u1"
