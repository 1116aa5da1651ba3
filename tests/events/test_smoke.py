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


def test_external_ids_from_a_crm_are_identities(events: EventService, store: Store) -> None:
    first = events.ingest([{"type": "identify", "anonymousId": "a1", "messageId": "m1",
                            "context": {"externalIds": [{"id": "003XYZ", "type": "salesforce",
                                                         "collection": "users"}]}}])
    second = events.ingest([{"type": "identify", "userId": "u9", "messageId": "m2",
                             "context": {"externalIds": [{"id": "003XYZ",
                                                          "type": "Salesforce"}]}}])
    assert first.contact_ids == second.contact_ids
    with store.read() as conn:
        kinds = set(conn.execute(sa.select(schema.identities.c.kind)).scalars())
    assert kinds == {"anonymous_id", "external:salesforce", "user_id"}


def test_bad_external_ids_are_rejected_with_the_field(events: EventService) -> None:
    result = events.ingest([{"type": "identify", "userId": "u1", "messageId": "m1",
                             "context": {"externalIds": [{"id": "", "type": "crm"}]}}])
    assert result.accepted == 0
    assert result.rejected[0].field == "context.externalIds[0].id"
