"""Consent, suppression and erasure are checked when a message is sent, not only when its step
ran: a row queued before an opt-out, a suppression or an erasure is cancelled when dispatched
after it. Consent modes per channel, pending double opt-in, the transactional stream."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import sqlalchemy as sa

from cadenza.channels.interceptors import ConsentInterceptor, Outcomes
from cadenza.channels.models import Message, Outcome, OutcomeKind
from cadenza.clock import FakeClock
from cadenza.contacts import ConsentStatus, SuppressionReason, suppress
from cadenza.engine.dispatch import DispatchReport
from cadenza.store import Store, schema
from tests.channels.policy_support import at, consent, message, set_policy
from tests.channels.servers import SmtpSink
from tests.channels.support import (
    add_contact,
    add_outbox,
    dispatch,
    make_dispatcher,
    outbox_rows,
    smtp,
)

__all__ = ["smtp"]

NOW = at("2026-02-02T10:00")


def _email(contact: int, key: str, purpose: str | None = None) -> dict[str, object]:
    params = {"subject": "S", "body": "B", **({"purpose": purpose} if purpose else {})}
    return {"contact_id": contact, "channel": "email", "key": key, "params": params}


def _statuses(store: Store, rows: Sequence[int]) -> list[str]:
    state = outbox_rows(store)
    return [state[r]["status"] for r in rows]


def test_opt_out_mode_sends_without_a_row_and_stops_at_an_opt_out_made_after_queueing(
        store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(NOW)
    quiet, leaving, pending = (add_contact(store, NOW, email=f"{n}@example.com")
                               for n in ("quiet", "leaving", "pending"))
    rows = add_outbox(store, NOW, [_email(c, f"m{c}") for c in (quiet, leaving, pending)])
    # After the step ran and before the send: an opt-out and a pending double opt-in.
    consent(store, NOW - 1000, leaving, ConsentStatus.OPTED_OUT, source="preference_center")
    consent(store, NOW - 1000, pending, ConsentStatus.PENDING, source="form")
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=3, sent=1, cancelled=2)
    assert _statuses(store, rows) == ["sent", "cancelled", "cancelled"]
    state = outbox_rows(store)
    assert state[rows[1]]["last_error"] == (
        "consent: opted out of email marketing on 2026-02-02 09:59 UTC "
        "(source: preference_center)")
    assert "pending double opt-in" in state[rows[2]]["last_error"]
    assert "(source: form)" in state[rows[2]]["last_error"]
    assert [m.rcpt for m in smtp.mails] == ["quiet@example.com"]


def test_opt_in_mode_needs_an_opt_in_for_the_purpose_or_for_all_marketing(
        store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(NOW)
    set_policy(store, clock, {"consent": {"email": "opt_in"}})
    none, own, umbrella, other = (add_contact(store, NOW, email=f"{n}@example.com")
                                  for n in ("none", "own", "umbrella", "other"))
    consent(store, NOW, own, ConsentStatus.OPTED_IN, purpose="newsletter")
    consent(store, NOW, umbrella, ConsentStatus.OPTED_IN, purpose="marketing")
    consent(store, NOW, other, ConsentStatus.OPTED_IN, purpose="product-news")
    rows = add_outbox(store, NOW, [_email(c, f"n{c}", "newsletter")
                                   for c in (none, own, umbrella, other)])
    dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert _statuses(store, rows) == ["cancelled", "sent", "sent", "cancelled"]
    assert outbox_rows(store)[rows[0]]["last_error"] == (
        "consent: no email opt-in for newsletter, and the workspace policy requires one "
        "(consent.email: opt_in)")


def test_unsubscribing_from_all_marketing_stops_every_topic(store: Store,
                                                            smtp: SmtpSink) -> None:
    clock = FakeClock(NOW)
    contact = add_contact(store, NOW, email="all@example.com")
    consent(store, NOW, contact, ConsentStatus.OPTED_IN, purpose="newsletter")
    consent(store, NOW, contact, ConsentStatus.OPTED_OUT, purpose="marketing",
            source="unsubscribe")
    rows = add_outbox(store, NOW, [_email(contact, "n", "newsletter"), _email(contact, "m")])
    dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert _statuses(store, rows) == ["cancelled", "cancelled"]
    assert "opted out of email all marketing" in outbox_rows(store)[rows[0]]["last_error"]


def test_transactional_mail_ignores_marketing_opt_outs_and_modes_but_not_its_own(
        store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(NOW)
    set_policy(store, clock, {"consent": {"email": "opt_in"}})
    marketing_out, tx_out, nothing = (add_contact(store, NOW, email=f"{n}@example.com")
                                      for n in ("mkt", "tx", "nothing"))
    consent(store, NOW, marketing_out, ConsentStatus.OPTED_OUT)
    consent(store, NOW, tx_out, ConsentStatus.OPTED_OUT, purpose="transactional")
    rows = add_outbox(store, NOW, [_email(c, f"r{c}", "transactional")
                                   for c in (marketing_out, tx_out, nothing)])
    dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert _statuses(store, rows) == ["sent", "cancelled", "sent"]
    assert "opted out of email transactional" in outbox_rows(store)[rows[1]]["last_error"]


def test_channels_without_consent_are_not_checked(store: Store) -> None:
    clock = FakeClock(NOW)
    set_policy(store, clock, {"consent": {"email": "opt_in", "sms": "opt_in"}})
    contact = add_contact(store, NOW, email="task@example.com")
    consent(store, NOW, contact, ConsentStatus.OPTED_OUT)
    rows = add_outbox(store, NOW, [
        {"contact_id": contact, "channel": "task", "key": "t", "params": {"title": "Call"}},
        {"contact_id": contact, "channel": "log", "key": "l"}])
    assert dispatch(make_dispatcher(store, clock)).sent == 2
    assert _statuses(store, rows) == ["sent", "sent"]
    hook = message(1, NOW, contact=contact, channel="webhook")
    assert _run(ConsentInterceptor(store), [hook])[1].kind is OutcomeKind.SENT


def test_suppression_and_erasure_after_queueing_cancel_at_send_time(store: Store,
                                                                    smtp: SmtpSink) -> None:
    clock = FakeClock(NOW)
    bounced, erased, deleted, fine = (add_contact(store, NOW, email=f"{n}@example.com")
                                      for n in ("bounced", "erased", "deleted", "fine"))
    rows = add_outbox(store, NOW, [_email(c, f"s{c}") for c in (bounced, erased, deleted,
                                                                 fine)])
    with store.begin() as conn:
        suppress(conn, "email", "bounced@example.com", SuppressionReason.HARD_BOUNCE, NOW)
        # Erasure suppresses the address for good and removes the contact's data.
        suppress(conn, "email", "erased@example.com", SuppressionReason.ERASED, NOW)
        conn.execute(sa.delete(schema.contacts).where(schema.contacts.c.id == deleted))
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=4, sent=1, cancelled=3)
    assert _statuses(store, rows) == ["cancelled", "cancelled", "cancelled", "sent"]
    state = outbox_rows(store)
    assert "suppression list" in state[rows[1]]["last_error"]
    assert f"contact {deleted} no longer exists" in state[rows[2]]["last_error"]
    assert [m.rcpt for m in smtp.mails] == ["fine@example.com"]


def test_a_consent_mode_change_applies_to_the_next_batch(store: Store, smtp: SmtpSink) -> None:
    clock = FakeClock(NOW)
    contact = add_contact(store, NOW, email="mode@example.com")
    first = add_outbox(store, NOW, [_email(contact, "before")])
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp.port)
    assert dispatch(dispatcher).sent == 1
    set_policy(store, clock, {"consent": {"email": "opt_in"}})
    second = add_outbox(store, NOW, [_email(contact, "after")])
    assert dispatch(make_dispatcher(store, clock, smtp_port=smtp.port)).cancelled == 1
    assert _statuses(store, first + second) == ["sent", "cancelled"]


def test_the_rule_reads_consent_in_one_query_for_the_batch(store: Store) -> None:
    contacts = [add_contact(store, NOW, email=f"c{n}@example.com") for n in range(30)]
    for contact in contacts[::2]:
        consent(store, NOW, contact, ConsentStatus.OPTED_OUT)
    messages = [message(n + 1, NOW, contact=c) for n, c in enumerate(contacts)]
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        text = statement.strip().upper()
        if text.startswith("SELECT") and text != "SELECT 1":
            seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        outcomes = _run(ConsentInterceptor(store), messages)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    assert len(seen) == 2  # the workspace policy, the consent rows
    kinds = [outcomes[m.outbox_id].kind for m in messages]
    assert kinds == [OutcomeKind.CANCELLED, OutcomeKind.SENT] * 15


def _run(interceptor: ConsentInterceptor, messages: list[Message]) -> Outcomes:
    async def deliver(passing: Sequence[Message]) -> Outcomes:
        return {m.outbox_id: Outcome.sent(None) for m in passing}

    return asyncio.run(interceptor.intercept(messages, deliver))
