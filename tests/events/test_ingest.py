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


def test_refused_merge_leaves_the_address_with_its_owner(events: EventService,
                                                          store: Store) -> None:
    first = events.ingest([{"type": "identify", "userId": "u1", "messageId": "m1",
                            "traits": {"email": "shared@example.com"}}])
    second = events.ingest([{"type": "identify", "userId": "u2", "messageId": "m2",
                             "traits": {"email": "shared@example.com", "plan": "pro"}}])
    assert first.contact_ids != second.contact_ids
    with store.read() as conn:
        rows = dict(conn.execute(sa.select(schema.contacts.c.user_id, schema.contacts.c.email))
                    .all())
    assert rows == {"u1": "shared@example.com", "u2": None}


def test_mixed_sources_in_one_group_keep_message_order(events: EventService,
                                                       store: Store) -> None:
    from cadenza.events import IngestRequest

    results = events.ingest_many([
        IngestRequest([{"type": "track", "anonymousId": "a1", "event": "Viewed",
                        "messageId": "m1"}], source="web"),
        IngestRequest([{"type": "identify", "anonymousId": "a1", "userId": "u1",
                        "messageId": "m2"}], source="app"),
    ])
    assert results[0].contact_ids == results[1].contact_ids
    with store.read() as conn:
        sources = dict(conn.execute(sa.select(schema.events.c.message_id,
                                              schema.events.c.source)).all())
    assert sources == {"m1": "web", "m2": "app"}


def test_nul_in_the_batch_context_rejects_its_messages(events: EventService,
                                                      store: Store) -> None:
    result = events.ingest([{"type": "track", "userId": "u1", "event": "E", "messageId": "m1"}],
                           batch_context={"page": {"title": "a\x00b"}})
    assert result.accepted == 0
    assert result.rejected[0].field == "context.page.title"
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.events)).scalar() == 0
