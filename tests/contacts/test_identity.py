"""Identity resolution and merges, through Segment-spec ingestion."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.contacts import ANONYMOUS_ID, EMAIL, Claim, ContactService, merge_contacts, resolve
from cadenza.errors import MergeRefused, NotFound
from cadenza.events.service import EventService
from cadenza.store import Store, schema


@pytest.fixture
def contacts(store: Store, clock: FakeClock) -> ContactService:
    """The contact service over the test store."""
    return ContactService(store, clock)


def owner(store: Store, kind: str, value: str) -> int:
    """The contact holding an identity."""
    i = schema.identities
    with store.read() as conn:
        found: int = conn.execute(
            sa.select(i.c.contact_id).where(i.c.kind == kind, i.c.value == value)
        ).scalar_one()
    return found


def contact(store: Store, contact_id: int) -> dict[str, Any]:
    c = schema.contacts
    with store.read() as conn:
        return dict(conn.execute(sa.select(c).where(c.c.id == contact_id)).mappings().one())


def live_ids(store: Store) -> set[int]:
    c = schema.contacts
    with store.read() as conn:
        return set(conn.execute(sa.select(c.c.id).where(c.c.merged_into.is_(None))).scalars())


def event_contacts(store: Store) -> dict[str, int]:
    """message id -> contact id of every stored event."""
    e = schema.events
    with store.read() as conn:
        return dict(conn.execute(sa.select(e.c.message_id, e.c.contact_id)).all())


def merges(store: Store, outcome: str | None = None) -> list[dict[str, Any]]:
    m = schema.contact_merges
    query = sa.select(m).order_by(m.c.id)
    if outcome is not None:
        query = query.where(m.c.outcome == outcome)
    with store.read() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def send(events: EventService, messages: list[dict[str, Any]], one_batch: bool) -> None:
    """Ingest `messages` in one call, or one call each."""
    batches = [messages] if one_batch else [[m] for m in messages]
    for batch in batches:
        result = events.ingest(batch)
        assert result.rejected == [], result.rejected


batching = pytest.mark.parametrize("one_batch", [True, False], ids=["one-batch", "batches"])


# --- anonymous history and identify ----------------------------------------------------------


@batching
def test_anonymous_history_joins_contact_on_identify(
    events: EventService, store: Store, one_batch: bool
) -> None:
    send(events, [
        {"type": "page", "anonymousId": "a1", "messageId": "m1", "name": "Pricing"},
        {"type": "track", "event": "Started Trial", "anonymousId": "a1", "messageId": "m2"},
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m3",
         "traits": {"email": " Ann@Example.COM", "plan": "trial"}},
    ], one_batch)

    cid = owner(store, "user_id", "u1")
    assert live_ids(store) == {cid}
    assert event_contacts(store) == {"m1": cid, "m2": cid, "m3": cid}
    assert owner(store, "anonymous_id", "a1") == owner(store, "email", "ann@example.com") == cid
    row = contact(store, cid)
    assert (row["user_id"], row["email"], row["attributes"]) == ("u1", "ann@example.com",
                                                                 {"plan": "trial"})
    assert merges(store) == []  # the anonymous contact simply became known


@batching
def test_anonymous_contact_merges_into_existing_user(
    events: EventService, store: Store, contacts: ContactService, one_batch: bool
) -> None:
    send(events, [
        {"type": "identify", "userId": "u1", "messageId": "m1", "traits": {"plan": "pro"}},
        {"type": "track", "event": "Viewed", "anonymousId": "a1", "messageId": "m2"},
        {"type": "identify", "anonymousId": "a1", "messageId": "m3",
         "traits": {"email": "ann@example.com"}},
        # Logging in on the anonymous device: the contact of the user id wins, though newer.
        {"type": "track", "event": "Logged In", "userId": "u1", "anonymousId": "a1",
         "messageId": "m4"},
    ], one_batch)

    cid = owner(store, "user_id", "u1")
    assert live_ids(store) == {cid}
    assert set(event_contacts(store).values()) == {cid}
    assert owner(store, "email", "ann@example.com") == cid
    assert contact(store, cid)["email"] == "ann@example.com"
    if not one_batch:
        # The anonymous contact existed for a while; it stays as a tombstone.
        (merge,) = merges(store)
        assert (merge["winner_id"], merge["outcome"], merge["reason"], merge["message_id"],
                merge["identity_kind"], merge["identity_value"]) == (
            cid, "merged", "track", "m4", "anonymous_id", "a1")
        tombstone = contact(store, merge["loser_id"])
        assert tombstone["merged_into"] == cid
        assert tombstone["user_id"] is None
        assert contacts.profile(merge["loser_id"])["id"] == cid  # old ids still resolve


def test_event_with_user_id_lands_on_that_users_contact(events: EventService,
                                                       store: Store) -> None:
    send(events, [
        {"type": "identify", "userId": "u1", "anonymousId": "shared-device", "messageId": "m1"},
        {"type": "identify", "userId": "u2", "messageId": "m2"},
        {"type": "track", "event": "Viewed", "userId": "u2", "anonymousId": "shared-device",
         "messageId": "m3"},
    ], one_batch=False)

    u1, u2 = owner(store, "user_id", "u1"), owner(store, "user_id", "u2")
    assert u1 != u2
    assert event_contacts(store) == {"m1": u1, "m2": u2, "m3": u2}
    assert owner(store, "anonymous_id", "shared-device") == u1


def test_duplicate_message_ids_change_nothing(events: EventService, store: Store) -> None:
    first = events.ingest([{"type": "track", "event": "A", "anonymousId": "a1",
                            "messageId": "m1"}])
    # The same message id again, now claiming other identities: ignored as a whole.
    again = events.ingest([
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"},
        {"type": "track", "event": "B", "anonymousId": "a2", "messageId": "m2"},
        {"type": "track", "event": "B", "anonymousId": "a1", "messageId": "m2"},
    ])
    assert (again.accepted, again.duplicates) == (1, ["m1", "m2"])
    assert len(event_contacts(store)) == 2
    a1 = first.contact_ids[0]
    assert contact(store, a1)["user_id"] is None
    assert owner(store, "anonymous_id", "a2") != a1
    i = schema.identities
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(i)).scalar_one() == 2


# --- alias -----------------------------------------------------------------------------------


@batching
def test_alias_joins_anonymous_history_into_user(
    events: EventService, store: Store, one_batch: bool
) -> None:
    send(events, [
        {"type": "track", "event": "Viewed", "anonymousId": "anon-9", "messageId": "m1"},
        {"type": "identify", "userId": "u1", "messageId": "m2"},
        {"type": "alias", "previousId": "anon-9", "userId": "u1", "messageId": "m3"},
    ], one_batch)

    cid = owner(store, "user_id", "u1")
    assert live_ids(store) == {cid}
    assert owner(store, "anonymous_id", "anon-9") == cid
    assert event_contacts(store) == {"m1": cid, "m2": cid, "m3": cid}
    if not one_batch:
        (merge,) = merges(store)
        assert (merge["winner_id"], merge["reason"], merge["outcome"],
                merge["identity_kind"]) == (cid, "alias", "merged", "anonymous_id")


def test_alias_of_unknown_id_claims_it_for_later_events(events: EventService,
                                                        store: Store) -> None:
    events.ingest([{"type": "alias", "previousId": "device-7", "userId": "u1",
                    "messageId": "m1"}])
    later = events.ingest([{"type": "track", "event": "Opened App", "anonymousId": "device-7",
                            "messageId": "m2"}])
    assert later.contact_ids == [owner(store, "user_id", "u1")]
    assert len(live_ids(store)) == 1


@batching
def test_alias_joins_everything_the_previous_id_reached(
    events: EventService, store: Store, one_batch: bool
) -> None:
    # The old device's contact also holds an email; after the alias, that email found on a
    # new device leads to the user too.
    send(events, [
        {"type": "identify", "anonymousId": "old-device", "messageId": "m1",
         "traits": {"email": "ann@example.com"}},
        {"type": "track", "event": "Viewed", "anonymousId": "old-device", "messageId": "m2"},
        {"type": "track", "event": "Purchased", "userId": "u1", "messageId": "m3"},
        {"type": "alias", "previousId": "old-device", "userId": "u1", "messageId": "m4"},
        {"type": "identify", "anonymousId": "new-device", "messageId": "m5",
         "traits": {"email": "ANN@example.com"}},
    ], one_batch)

    cid = owner(store, "user_id", "u1")
    assert live_ids(store) == {cid}
    assert set(event_contacts(store).values()) == {cid}
    assert {owner(store, "anonymous_id", "old-device"), owner(store, "anonymous_id", "new-device"),
            owner(store, "email", "ann@example.com")} == {cid}
    assert contact(store, cid)["user_id"] == "u1"


@batching
def test_alias_between_two_user_ids_is_refused_and_recorded(
    events: EventService, store: Store, one_batch: bool
) -> None:
    send(events, [
        {"type": "track", "event": "Viewed", "userId": "old-id", "messageId": "m1"},
        {"type": "track", "event": "Viewed", "userId": "new-id", "messageId": "m2"},
        {"type": "alias", "previousId": "old-id", "userId": "new-id", "messageId": "m3"},
        # An unknown target user id does not change that: a contact holds one user id.
        {"type": "alias", "previousId": "old-id", "userId": "third-id", "messageId": "m4"},
    ], one_batch)

    old, new, third = (owner(store, "user_id", u) for u in ("old-id", "new-id", "third-id"))
    assert len({old, new, third}) == 3
    assert live_ids(store) == {old, new, third}
    assert event_contacts(store) == {"m1": old, "m2": new, "m3": new, "m4": third}
    refused = merges(store, "refused")
    assert [(m["message_id"], m["winner_id"], m["loser_id"], m["reason"], m["identity_kind"],
             m["identity_value"]) for m in refused] == [
        ("m3", new, old, "alias", "user_id", "old-id"),
        ("m4", third, old, "alias", "user_id", "old-id"),
    ]
    assert merges(store, "merged") == []


# --- refused merges --------------------------------------------------------------------------


@batching
def test_refused_merge_when_user_ids_collide(
    events: EventService, store: Store, contacts: ContactService, one_batch: bool
) -> None:
    send(events, [
        {"type": "identify", "userId": "u1", "messageId": "m1",
         "traits": {"email": "shared@example.com"}},
        {"type": "identify", "userId": "u2", "messageId": "m2",
         "traits": {"email": "Shared@Example.com"}},
    ], one_batch)

    u1, u2 = owner(store, "user_id", "u1"), owner(store, "user_id", "u2")
    assert u1 != u2
    assert live_ids(store) == {u1, u2}
    assert event_contacts(store) == {"m1": u1, "m2": u2}
    assert owner(store, "email", "shared@example.com") == u1  # the first claim keeps it
    assert (contact(store, u1)["user_id"], contact(store, u2)["user_id"]) == ("u1", "u2")

    (refusal,) = merges(store)
    assert (refusal["winner_id"], refusal["loser_id"], refusal["outcome"], refusal["reason"],
            refusal["identity_kind"], refusal["identity_value"], refusal["message_id"]) == (
        u2, u1, "refused", "identify", "email", "shared@example.com", "m2")
    assert refusal["details"] == {"detail": "different user ids 'u2' and 'u1'"}
    # Both profiles explain it.
    for cid in (u1, u2):
        (explained,) = contacts.profile(cid)["merges"]
        assert (explained["outcome"], explained["message_id"]) == ("refused", "m2")


def test_refusal_keeps_the_merges_that_are_allowed(events: EventService, store: Store) -> None:
    # One message reaches three contacts: the anonymous one merges, the other user is refused.
    send(events, [
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"},
        {"type": "track", "event": "Viewed", "anonymousId": "a2", "messageId": "m2"},
        {"type": "identify", "userId": "u2", "anonymousId": "a3", "messageId": "m3",
         "traits": {"email": "bo@example.com"}},
        {"type": "identify", "userId": "u1", "anonymousId": "a2", "messageId": "m4",
         "traits": {"email": "bo@example.com"}},
    ], one_batch=False)

    u1, u2 = owner(store, "user_id", "u1"), owner(store, "user_id", "u2")
    assert live_ids(store) == {u1, u2}
    assert owner(store, "anonymous_id", "a2") == u1
    assert owner(store, "email", "bo@example.com") == u2
    assert event_contacts(store) == {"m1": u1, "m2": u1, "m3": u2, "m4": u1}
    assert [(m["outcome"], m["winner_id"], m["identity_kind"]) for m in merges(store)] == [
        ("merged", u1, "anonymous_id"), ("refused", u1, "email")]


# --- one batch or many -----------------------------------------------------------------------


SCRIPT: list[dict[str, Any]] = [
    {"type": "page", "anonymousId": "a1", "name": "Home"},
    {"type": "identify", "anonymousId": "a2", "traits": {"email": "ann@example.com"}},
    {"type": "group", "anonymousId": "a1", "groupId": "acme", "traits": {"name": "Acme"}},
    {"type": "identify", "userId": "u1", "anonymousId": "a3"},
    {"type": "identify", "anonymousId": "a1", "traits": {"email": "Ann@Example.com",
                                                         "phone": "+1 415-555-0100"}},
    {"type": "track", "event": "Viewed", "userId": "u2", "anonymousId": "a4"},
    {"type": "alias", "previousId": "a2", "userId": "u1"},
    {"type": "identify", "userId": "u2", "traits": {"phone": "+14155550100"}},
    {"type": "group", "userId": "u2", "groupId": "globex"},
    {"type": "track", "event": "Bought", "anonymousId": "a4"},
    {"type": "alias", "previousId": "u2", "userId": "u1"},
    {"type": "identify", "anonymousId": "a5", "traits": {"email": "ann@example.com"}},
]


def _namespaced(prefix: str) -> list[dict[str, Any]]:
    """SCRIPT with every id and address made distinct per run, so both runs share a store."""
    out = []
    for n, message in enumerate(SCRIPT):
        copy: dict[str, Any] = {**message, "messageId": f"{prefix}m{n}"}
        for name in ("userId", "anonymousId", "previousId", "groupId"):
            if name in copy:
                copy[name] = prefix + copy[name]
        traits = dict(copy.get("traits", {}))
        if "email" in traits:
            traits["email"] = prefix + traits["email"]
        if "phone" in traits:  # one run in the US, one in the UK
            traits["phone"] = traits["phone"] if prefix == "x-" else "+44 20 7946 0000"
        if "traits" in copy:
            copy["traits"] = traits
        out.append(copy)
    return out


def _shape(store: Store, prefix: str) -> dict[str, Any]:
    """Who is who after a run, in terms of the script (ids without the run's prefix)."""
    def plain(value: str) -> str:
        if value.startswith("+"):
            return "<phone>"
        return value.removeprefix(prefix)

    i, e, c = schema.identities, schema.events, schema.contacts
    co, cm, m = schema.companies, schema.company_members, schema.contact_merges
    with store.read() as conn:
        people: dict[int, set[tuple[str, str]]] = {}
        for kind, value, cid in conn.execute(sa.select(i.c.kind, i.c.value, i.c.contact_id)):
            if kind == "phone" or value.startswith(prefix):
                people.setdefault(cid, set()).add((kind, value))
        # The phone differs per run; keep only the contacts of this run.
        people = {cid: ids for cid, ids in people.items()
                  if any(v.startswith(prefix) for _, v in ids)}
        name = {cid: frozenset((k, plain(v)) for k, v in ids) for cid, ids in people.items()}
        rows = {r["id"]: r for r in conn.execute(sa.select(c)).mappings()}
        live = {cid for cid, r in rows.items() if r["merged_into"] is None}

        def alive(cid: int) -> int:
            while cid not in live:
                cid = rows[cid]["merged_into"]
            return cid

        events = {plain(mid): name[cid] for mid, cid in conn.execute(
            sa.select(e.c.message_id, e.c.contact_id)) if mid.startswith(prefix)}
        members = {(name[cid], plain(g)) for cid, g in conn.execute(
            sa.select(cm.c.contact_id, co.c.group_id).join(co, co.c.id == cm.c.company_id))
            if cid in name}
        refused = {(plain(r["message_id"]), frozenset((name[alive(r["winner_id"])],
                                                       name[alive(r["loser_id"])])))
                   for r in conn.execute(sa.select(m).where(m.c.outcome == "refused")).mappings()
                   if r["message_id"].startswith(prefix)}
    assert set(name) <= live
    return {
        "people": {name[cid]: (rows[cid]["user_id"] and plain(rows[cid]["user_id"]),
                               rows[cid]["email"] and plain(rows[cid]["email"]))
                   for cid in name},
        "events": events,
        "members": members,
        "refused": refused,
    }


def test_one_batch_and_many_batches_agree(events: EventService, store: Store) -> None:
    send(events, _namespaced("x-"), one_batch=True)
    send(events, _namespaced("y-"), one_batch=False)

    batched, split = _shape(store, "x-"), _shape(store, "y-")
    assert batched == split
    # And the script did exercise merges and refusals.
    assert len(batched["people"]) == 2
    assert batched["refused"]


# --- what follows a merge --------------------------------------------------------------------


@batching
def test_company_memberships_survive_merge(
    events: EventService, store: Store, contacts: ContactService, one_batch: bool
) -> None:
    send(events, [
        {"type": "group", "anonymousId": "a1", "groupId": "acme", "traits": {"name": "Acme"},
         "messageId": "m1"},
        {"type": "group", "anonymousId": "a1", "groupId": "initech", "messageId": "m2"},
        {"type": "group", "userId": "u1", "groupId": "acme", "messageId": "m3"},
        {"type": "group", "userId": "u1", "groupId": "globex", "traits": {"name": "Globex"},
         "messageId": "m4"},
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m5"},
    ], one_batch)

    cid = owner(store, "user_id", "u1")
    co, cm = schema.companies, schema.company_members
    with store.read() as conn:
        membership = sorted(conn.execute(
            sa.select(cm.c.contact_id, co.c.group_id).join(co, co.c.id == cm.c.company_id)
            .order_by(co.c.group_id)))
    assert [tuple(row) for row in membership] == [(cid, "acme"), (cid, "globex"),
                                                  (cid, "initech")]
    profile = contacts.profile(cid)
    assert sorted(c["group_id"] for c in profile["companies"]) == ["acme", "globex", "initech"]
    acme = next(c for c in profile["companies"] if c["group_id"] == "acme")
    assert contacts.company(acme["id"])["member_count"] == 1


def test_merge_moves_attributes_and_keeps_the_winners(events: EventService,
                                                     store: Store) -> None:
    send(events, [
        {"type": "identify", "userId": "u1", "messageId": "m1",
         "traits": {"plan": "pro", "email": "ann@example.com"}},
        {"type": "identify", "anonymousId": "a1", "messageId": "m2",
         "traits": {"plan": "free", "city": "Lyon", "phone": "+14155550100"}},
        {"type": "track", "event": "Logged In", "userId": "u1", "anonymousId": "a1",
         "messageId": "m3"},
    ], one_batch=False)
    row = contact(store, owner(store, "user_id", "u1"))
    assert row["attributes"] == {"plan": "pro", "city": "Lyon"}
    assert (row["email"], row["phone"]) == ("ann@example.com", "+14155550100")


# --- merge_contacts guards -------------------------------------------------------------------


def test_merge_contacts_refuses_what_would_break_invariants(events: EventService,
                                                            store: Store) -> None:
    result = events.ingest([
        {"type": "identify", "userId": "u1", "messageId": "m1"},
        {"type": "identify", "userId": "u2", "messageId": "m2"},
        {"type": "identify", "anonymousId": "a1", "messageId": "m3"},
        {"type": "identify", "anonymousId": "a2", "messageId": "m4"},
    ])
    u1, u2, a1, a2 = result.contact_ids
    with store.begin() as conn:
        merge_contacts(conn, a1, a2, at=1)
    with store.begin() as conn, pytest.raises(MergeRefused, match="different user ids"):
        merge_contacts(conn, u1, u2, at=2)
    with store.begin() as conn, pytest.raises(MergeRefused, match="into itself"):
        merge_contacts(conn, u1, u1, at=2)
    with store.begin() as conn, pytest.raises(MergeRefused, match="already merged"):
        merge_contacts(conn, u1, a2, at=2)
    with store.begin() as conn, pytest.raises(NotFound):
        merge_contacts(conn, u1, 999_999, at=2)
    assert live_ids(store) == {u1, u2, a1}
    assert owner(store, "anonymous_id", "a2") == a1


def test_resolve_reports_what_it_recorded(store: Store) -> None:
    claims = [
        Claim("m1", 1, "identify", user_id="u1", keys=[(ANONYMOUS_ID, "a1")]),
        Claim("m2", 2, "track", keys=[(ANONYMOUS_ID, "a2")]),
        Claim("m3", 3, "identify", user_id="u2", keys=[(ANONYMOUS_ID, "a1"),
                                                       (EMAIL, "bo@example.com")]),
        Claim("m4", 4, "alias", user_id="u2", previous="a2"),
    ]
    with store.begin() as conn:
        resolution = resolve(conn, claims, "api")
    u1, u2 = resolution.contact_ids[0], resolution.contact_ids[2]
    assert u1 != u2
    assert resolution.contact_ids == [u1, u2, u2, u2]
    assert resolution.created == {u1, u2}  # a2's contact was born and merged in the batch
    assert [(m.outcome, m.winner, m.loser, m.message_id) for m in resolution.merges] == [
        ("refused", u2, u1, "m3")]
    assert [(m["outcome"], m["winner_id"], m["loser_id"]) for m in merges(store)] == [
        ("refused", u2, u1)]
