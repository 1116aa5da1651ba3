"""Consent per channel and purpose with history, merges, and the suppression list."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.contacts import (
    ConsentChange,
    ConsentStatus,
    ContactService,
    SuppressionReason,
    check_channel,
    is_suppressed,
    parse_status,
    record_consent,
    suppress,
    unsuppress,
)
from cadenza.errors import NotFound, ValidationFailed
from cadenza.events.service import EventService
from cadenza.store import Store, schema

IN, OUT, PENDING = ConsentStatus.OPTED_IN, ConsentStatus.OPTED_OUT, ConsentStatus.PENDING


@pytest.fixture
def contacts(store: Store, clock: FakeClock) -> ContactService:
    """The contact service over the test store."""
    return ContactService(store, clock)


@pytest.fixture
def ann(events: EventService) -> int:
    """A known contact."""
    return events.ingest([{"type": "identify", "userId": "ann", "messageId": "ann-1"}]
                         ).contact_ids[0]


def consents(store: Store, contact_id: int) -> dict[tuple[str, str], tuple[str, int]]:
    """(channel, purpose) -> (status, updated_at) of a contact."""
    k = schema.consents
    with store.read() as conn:
        return {(ch, p): (status, at) for ch, p, status, at in conn.execute(
            sa.select(k.c.channel, k.c.purpose, k.c.status, k.c.updated_at)
            .where(k.c.contact_id == contact_id))}


def record(store: Store, *changes: ConsentChange) -> int:
    with store.begin() as conn:
        return record_consent(conn, changes)


# --- decisions and history -------------------------------------------------------------------


def test_history_records_source_text_version_ip_and_previous_status(
    store: Store, contacts: ContactService, clock: FakeClock, ann: int
) -> None:
    assert contacts.set_consent(ann, "email", "marketing", "yes", "form", text_version="v3",
                                ip="203.0.113.7")
    clock.advance(60_000)
    assert contacts.set_consent(ann, "email", "marketing", "unsubscribed", "preference_center",
                                ip="2001:db8::1")

    history = contacts.consent_history(ann)
    assert [(h["channel"], h["purpose"], h["status"], h["previous_status"], h["source"],
             h["text_version"], h["ip"], h["at"]) for h in history] == [
        ("email", "marketing", "opted_in", None, "form", "v3", "203.0.113.7",
         clock.now_ms() - 60_000),
        ("email", "marketing", "opted_out", "opted_in", "preference_center", None,
         "2001:db8::1", clock.now_ms()),
    ]
    assert consents(store, ann) == {("email", "marketing"): ("opted_out", clock.now_ms())}


def test_repeated_decision_is_not_a_change(store: Store, contacts: ContactService,
                                          clock: FakeClock, ann: int) -> None:
    assert contacts.set_consent(ann, "sms", "marketing", "opted_in", "api")
    first = clock.now_ms()
    clock.advance(1_000)
    assert not contacts.set_consent(ann, "sms", "marketing", "opted_in", "api")
    assert len(contacts.consent_history(ann)) == 1
    assert consents(store, ann) == {("sms", "marketing"): ("opted_in", first)}


def test_one_call_applies_changes_in_order(store: Store, ann: int) -> None:
    changed = record(
        store,
        ConsentChange(ann, "email", "newsletter", PENDING, "form", 1),
        ConsentChange(ann, "email", "newsletter", PENDING, "form", 2),  # a repeat
        ConsentChange(ann, "email", "newsletter", IN, "double_opt_in", 3, text_version="v1"),
        ConsentChange(ann, "sms", "marketing", OUT, "sms_keyword", 4),
    )
    assert changed == 3
    h = schema.consent_history
    with store.read() as conn:
        rows = conn.execute(sa.select(h.c.channel, h.c.status, h.c.previous_status, h.c.at)
                            .order_by(h.c.at)).all()
    assert [tuple(r) for r in rows] == [("email", "pending", None, 1),
                                        ("email", "opted_in", "pending", 3),
                                        ("sms", "opted_out", None, 4)]
    assert consents(store, ann) == {("email", "newsletter"): ("opted_in", 3),
                                    ("sms", "marketing"): ("opted_out", 4)}
    assert record(store) == 0


def test_unknown_channel_is_refused_with_a_suggestion(contacts: ContactService,
                                                      ann: int) -> None:
    with pytest.raises(ValidationFailed) as caught:
        contacts.set_consent(ann, "emial", "marketing", "opted_in", "api")
    assert caught.value.field == "channel"
    assert "did you mean 'email'?" in caught.value.reason
    with pytest.raises(ValidationFailed, match="one of email, sms"):
        check_channel("carrier-pigeon")
    with pytest.raises(ValidationFailed, match="lower-case slug") as bad_purpose:
        ConsentChange(ann, "email", "Marketing!", IN, "api", 1)
    assert bad_purpose.value.field == "purpose"
    assert contacts.consent_history(ann) == []


def test_status_spellings(contacts: ContactService, ann: int) -> None:
    assert [parse_status(s) for s in ("Yes", "opted-in", "0", "double opt in")] == [
        IN, IN, OUT, PENDING]
    with pytest.raises(ValidationFailed, match="use opted_in, opted_out or pending"):
        contacts.set_consent(ann, "email", "marketing", "maybe", "api")


def test_consent_needs_a_live_contact(store: Store, contacts: ContactService,
                                      events: EventService) -> None:
    ids = events.ingest([
        {"type": "track", "event": "Viewed", "anonymousId": "a1", "messageId": "m1"},
        {"type": "identify", "userId": "u1", "messageId": "m2"},
    ]).contact_ids
    events.ingest([{"type": "identify", "userId": "u1", "anonymousId": "a1",
                    "messageId": "m3"}])
    anonymous, known = ids
    with pytest.raises(NotFound):
        record(store, ConsentChange(anonymous, "email", "marketing", IN, "api", 1))
    with pytest.raises(NotFound):
        record(store, ConsentChange(10_000, "email", "marketing", IN, "api", 1))
    # The service follows the merge to the surviving contact.
    assert contacts.set_consent(anonymous, "email", "marketing", "opted_in", "api")
    assert set(consents(store, known)) == {("email", "marketing")}


# --- consent through merges ------------------------------------------------------------------


@pytest.mark.parametrize("later", ["winner", "loser"])
def test_latest_decision_wins_when_contacts_merge(
    store: Store, events: EventService, contacts: ContactService, clock: FakeClock, later: str
) -> None:
    winner, loser = events.ingest([
        {"type": "identify", "userId": "u1", "messageId": "m1"},
        {"type": "identify", "anonymousId": "a1", "messageId": "m2"},
    ]).contact_ids
    first, second = (loser, winner) if later == "winner" else (winner, loser)
    contacts.set_consent(first, "email", "marketing", "opted_in", "form", text_version="v1")
    contacts.set_consent(loser, "sms", "marketing", "opted_out", "sms_keyword")
    contacts.set_consent(winner, "email", "newsletter", "pending", "form")
    clock.advance(1_000)
    contacts.set_consent(second, "email", "marketing", "opted_out", "preference_center")
    clock.advance(1_000)

    events.ingest([{"type": "identify", "userId": "u1", "anonymousId": "a1",
                    "messageId": "m3"}])

    assert consents(store, loser) == {}
    now = clock.now_ms()
    assert consents(store, winner) == {
        ("email", "marketing"): ("opted_out", now - 1_000),
        ("sms", "marketing"): ("opted_out", now - 2_000),
        ("email", "newsletter"): ("pending", now - 2_000),
    }
    history = contacts.consent_history(winner)
    assert len(history) == 4
    assert {h["contact_id"] for h in history} == {winner}
    assert contacts.consent_history(loser) == history  # old ids still explain themselves


def test_simultaneous_decisions_merge_to_the_more_restrictive(
    store: Store, events: EventService, contacts: ContactService
) -> None:
    winner, loser = events.ingest([
        {"type": "identify", "userId": "u1", "messageId": "m1"},
        {"type": "identify", "anonymousId": "a1", "messageId": "m2"},
    ]).contact_ids
    contacts.set_consent(winner, "email", "marketing", "opted_in", "form")
    contacts.set_consent(loser, "email", "marketing", "opted_out", "form")
    contacts.set_consent(winner, "sms", "marketing", "pending", "form")
    contacts.set_consent(loser, "sms", "marketing", "opted_in", "form")

    events.ingest([{"type": "identify", "userId": "u1", "anonymousId": "a1",
                    "messageId": "m3"}])

    assert {what: status for what, (status, _) in consents(store, winner).items()} == {
        ("email", "marketing"): "opted_out", ("sms", "marketing"): "pending"}


# --- suppression list ------------------------------------------------------------------------


def suppressed(store: Store, kind: str, *addresses: str) -> set[str]:
    with store.read() as conn:
        return is_suppressed(conn, kind, addresses)


def suppression_rows(store: Store) -> list[dict[str, Any]]:
    s = schema.suppressions
    with store.read() as conn:
        return [dict(r) for r in conn.execute(
            sa.select(s.c.kind, s.c.address, s.c.reason, s.c.note).order_by(s.c.id)).mappings()]


def test_suppress_normalises_addresses(store: Store, contacts: ContactService) -> None:
    assert contacts.suppress("email", "  Ann@Example.COM ", "hard_bounce") == "ann@example.com"
    assert contacts.suppress("phone", "+1 (415) 555-0100", "complaint") == "+14155550100"

    assert suppressed(store, "email", "ann@example.com", "ANN@example.com", "bob@example.com",
                      "not an address") == {"ann@example.com", "ANN@example.com"}
    assert suppressed(store, "phone", "+14155550100", "+1 415 555 0100", "+442079460000") == {
        "+14155550100", "+1 415 555 0100"}
    assert suppressed(store, "email", "+14155550100") == set()  # kinds are separate


def test_suppress_again_re_reasons_the_same_entry(store: Store,
                                                  contacts: ContactService) -> None:
    contacts.suppress("email", "ann@example.com", "hard_bounce", note="550 no such user")
    contacts.suppress("email", "Ann@example.com", "complaint", note="abuse report")
    assert suppression_rows(store) == [{"kind": "email", "address": "ann@example.com",
                                        "reason": "complaint", "note": "abuse report"}]


def test_unsuppress_normalises_and_reports_whether_it_removed(
    store: Store, contacts: ContactService
) -> None:
    contacts.suppress("email", "ann@example.com", "manual")
    assert contacts.unsuppress("email", " ANN@example.com")
    assert suppressed(store, "email", "ann@example.com") == set()
    assert not contacts.unsuppress("email", "ann@example.com")


def test_erased_suppressions_cannot_be_removed(store: Store, contacts: ContactService) -> None:
    contacts.suppress("email", "gone@example.com", "erased")
    hashed = contacts.suppress("email", "sha256:" + "ab" * 32, "erased")
    assert hashed == "sha256:" + "ab" * 32

    assert not contacts.unsuppress("email", "Gone@example.com")
    assert not contacts.unsuppress("email", hashed)
    # A later bounce must not turn the erased entry into one that can be removed.
    contacts.suppress("email", "gone@example.com", "hard_bounce")
    assert not contacts.unsuppress("email", "gone@example.com")
    assert suppressed(store, "email", "gone@example.com", hashed) == {"gone@example.com", hashed}
    assert {r["reason"] for r in suppression_rows(store)} == {"erased"}


def test_suppression_input_errors_name_the_field(store: Store,
                                                 contacts: ContactService) -> None:
    with pytest.raises(ValidationFailed) as caught:
        contacts.suppress("email", "not an address", "manual")
    assert caught.value.field == "address"
    with pytest.raises(ValidationFailed) as caught:
        contacts.suppress("fax", "+14155550100", "manual")
    assert caught.value.field == "kind"
    with pytest.raises(ValidationFailed) as caught:
        contacts.suppress("fax", "sha256:" + "00" * 32, "erased")
    assert caught.value.field == "kind"
    with pytest.raises(ValidationFailed) as caught:
        contacts.suppress("email", "ann@example.com", "bored")
    assert caught.value.field == "reason"
    with store.read() as conn, pytest.raises(ValidationFailed):
        is_suppressed(conn, "fax", ["+14155550100"])
    assert suppression_rows(store) == []


def test_module_functions_take_reasons_and_times(store: Store) -> None:
    with store.begin() as conn:
        stored = suppress(conn, "phone", "+44 20 7946 0000", SuppressionReason.UNSUBSCRIBED,
                          at=5, note="STOP")
    with store.begin() as conn:
        assert unsuppress(conn, "phone", "+442079460000")
    assert stored == "+442079460000"
