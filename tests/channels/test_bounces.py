"""DSNs and ARF reports as Postfix, Exchange and mailbox providers send them, and the bounce
rules: hard bounces and complaints suppress, soft bounces count to the limit, a delivery
resets the count, repeats change nothing, feedback for other senders' mail is ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cadenza.channels.bounces import (
    FeedbackKind,
    FeedbackService,
    Signal,
    parse_report,
    report_signals,
)
from cadenza.channels.email import message_id
from cadenza.cli import app
from cadenza.clock import FakeClock
from cadenza.contacts import is_suppressed
from cadenza.errors import ValidationFailed
from cadenza.store import Store, schema
from tests.channels.support import add_contact, add_outbox

DOMAIN = "cadenza.local"


def postfix_dsn(rcpt: str, original_id: str, *, action: str = "failed",
                status: str = "5.1.1", key: str | None = "journey:1:welcome:0",
                report_id: str = "<20260101120000.ABC123@mx.example.net>") -> bytes:
    """A bounce the way Postfix's bounce daemon writes it."""
    key_header = f"X-Cadenza-Key: {key}\n" if key else ""
    return f"""Return-Path: <>
Received: by mx.example.net (Postfix) id ABC123; Thu,  1 Jan 2026 12:00:00 +0000 (UTC)
Date: Thu,  1 Jan 2026 12:00:00 +0000 (UTC)
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces@cadenza.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="ABC123.1767268800/mx.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: {report_id}

This is a MIME-encapsulated message.

--ABC123.1767268800/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{rcpt}>: host mx.gmail.example[192.0.2.5] said: 550-5.1.1 The email account
    that you tried to reach does not exist. (in reply to RCPT TO command)

--ABC123.1767268800/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: ABC123
X-Postfix-Sender: rfc822; bounces@cadenza.example
Arrival-Date: Thu,  1 Jan 2026 11:59:58 +0000 (UTC)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.gmail.example
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does
    not exist.

--ABC123.1767268800/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <bounces@cadenza.example>
From: Cadenza <noreply@cadenza.example>
To: {rcpt}
Subject: Welcome
Message-ID: {original_id}
{key_header}
--ABC123.1767268800/mx.example.net--
""".replace("\n", "\r\n").encode()


def exchange_dsn(rcpt: str, original_id: str) -> bytes:
    """A non-delivery report the way Exchange Online writes it (the original attached as
    message/rfc822, upper-case field names, no X-Cadenza-Key)."""
    return f"""From: postmaster@contoso.example
To: bounces@cadenza.example
Date: Thu, 1 Jan 2026 12:00:00 +0000
Content-Type: multipart/report; report-type="delivery-status";
 boundary="_000_EXCH_"
Subject: Undeliverable: Welcome
Message-ID: <exch-ndr-1@contoso.example>
MIME-Version: 1.0

--_000_EXCH_
Content-Type: multipart/alternative; boundary="_001_"

--_001_
Content-Type: text/plain; charset="us-ascii"

Your message to {rcpt} couldn't be delivered.

--_001_
Content-Type: text/html; charset="us-ascii"

<html><body><b>Your message couldn't be delivered.</b></body></html>
--_001_--

--_000_EXCH_
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.example
Received-From-MTA: dns;mail.cadenza.example
Arrival-Date: Thu, 1 Jan 2026 11:59:59 +0000

Final-Recipient: RFC822;{rcpt}
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not
 found by SMTP address lookup
X-Display-Name: {rcpt}

--_000_EXCH_
Content-Type: message/rfc822

From: Cadenza <noreply@cadenza.example>
To: <{rcpt}>
Subject: Welcome
Message-ID: {original_id}
MIME-Version: 1.0
Content-Type: text/plain

Hello!
--_000_EXCH_--
""".replace("\n", "\r\n").encode()


def arf_report(rcpt: str, original_id: str, feedback_type: str = "abuse") -> bytes:
    """An abuse report (RFC 5965) as a mailbox provider's feedback loop sends it."""
    return f"""From: fbl@isp.example
To: abuse@cadenza.example
Subject: FW: Welcome
Message-ID: <fbl-{abs(hash(rcpt))}@isp.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1_13d.2e68ed54"

--part1_13d.2e68ed54
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.1.

--part1_13d.2e68ed54
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces@cadenza.example>
Original-Rcpt-To: <{rcpt}>
Arrival-Date: Thu, 1 Jan 2026 12:00:00 +0000
Reporting-MTA: dns; mail.isp.example
Source-IP: 192.0.2.1

--part1_13d.2e68ed54
Content-Type: message/rfc822
Content-Disposition: inline

From: <noreply@cadenza.example>
To: <{rcpt}>
Subject: Welcome
Message-ID: {original_id}
X-Cadenza-Key: arf-key

Buy now!
--part1_13d.2e68ed54--
""".replace("\n", "\r\n").encode()


# --- parsing ------------------------------------------------------------------------------

def test_postfix_hard_bounce() -> None:
    report = parse_report(postfix_dsn("gone@example.com", "<abc@cadenza.local>"))
    assert report.kind == "delivery-status"
    assert report.message_id == "<abc@cadenza.local>"
    assert report.cadenza_key == "journey:1:welcome:0"
    assert report.reporter == "dns; mx.example.net"
    [rcpt] = report.recipients
    assert (rcpt.address, rcpt.action, rcpt.status) == ("gone@example.com", "failed", "5.1.1")
    assert rcpt.diagnostic
    assert "does not exist" in rcpt.diagnostic
    [signal] = report_signals(report, 1)
    assert signal.kind is FeedbackKind.BOUNCED
    assert signal.bounce_type == "hard"


@pytest.mark.parametrize(("action", "status", "kind", "bounce_type"), [
    ("failed", "5.7.1", FeedbackKind.BOUNCED, "hard"),
    ("failed", "4.2.2", FeedbackKind.BOUNCED, "soft"),
    ("delayed", "4.4.7", FeedbackKind.BOUNCED, "soft"),
    ("delivered", "2.0.0", FeedbackKind.DELIVERED, None),
])
def test_actions_and_statuses(action: str, status: str, kind: FeedbackKind,
                              bounce_type: str | None) -> None:
    raw = postfix_dsn("a@example.com", "<x@y>", action=action, status=status)
    [signal] = report_signals(parse_report(raw), 1)
    assert (signal.kind, signal.bounce_type) == (kind, bounce_type)


def test_exchange_ndr() -> None:
    report = parse_report(exchange_dsn("nobody@contoso.example", "<m1@cadenza.local>"))
    assert report.message_id == "<m1@cadenza.local>"
    assert report.cadenza_key is None
    [rcpt] = report.recipients
    assert (rcpt.address, rcpt.status) == ("nobody@contoso.example", "5.1.10")


def test_arf_complaint() -> None:
    report = parse_report(arf_report("ann@isp.example", "<m2@cadenza.local>"))
    assert report.kind == "feedback-report"
    assert report.feedback_type == "abuse"
    assert report.complainant == "ann@isp.example"
    assert report.cadenza_key == "arf-key"
    [signal] = report_signals(report, 1)
    assert signal.kind is FeedbackKind.COMPLAINED
    not_spam = parse_report(arf_report("ann@isp.example", "<m2@x>", "not-spam"))
    assert report_signals(not_spam, 1) == []


@pytest.mark.parametrize(("raw", "words"), [
    (b"From: a@b\r\nSubject: hi\r\n\r\nhello", "not multipart/report"),
    (b"Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n"
     b"\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n", "neither"),
    (b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
     b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n", "no message/delivery-status"),
    (b"x" * (10 * 1024 * 1024 + 1), "limit"),
])
def test_bad_reports_are_refused_with_a_reason(raw: bytes, words: str) -> None:
    with pytest.raises(ValidationFailed, match=words):
        parse_report(raw)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=600).map(str.encode))
def test_the_parser_never_crashes(raw: bytes) -> None:
    try:
        report = parse_report(b"Content-Type: multipart/report; report-type=delivery-status; "
                              b"boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status"
                              b"\r\n\r\n" + raw + b"\r\n--b--\r\n")
    except ValidationFailed:
        return
    report_signals(report, 1)


# --- rules ----------------------------------------------------------------------------------

def _message(store: Store, clock: FakeClock, email: str, key: str) -> tuple[int, str]:
    """A sent email: the contact id and the Message-ID stored as provider_ref."""
    contact = add_contact(store, clock.now_ms(), email=email)
    [row] = add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "email",
                                                 "key": key}])
    ref = message_id(key, DOMAIN)
    o = schema.outbox
    with store.begin() as conn:
        conn.execute(sa.update(o).where(o.c.id == row).values(
            status="sent", provider_ref=ref, sent_at=clock.now_ms(), purpose="marketing"))
    return contact, ref


def _suppressed(store: Store, address: str) -> dict[str, str] | None:
    s = schema.suppressions
    with store.read() as conn:
        row = conn.execute(sa.select(s.c.reason, s.c.note).where(
            s.c.address == address)).first()
    return {"reason": row.reason, "note": row.note} if row else None


def _event_names(store: Store, contact: int) -> list[str]:
    e = schema.events
    with store.read() as conn:
        return list(conn.execute(sa.select(e.c.name).where(e.c.contact_id == contact)
                                 .order_by(e.c.id)).scalars())


def test_hard_bounce_suppresses_once(store: Store, clock: FakeClock) -> None:
    contact, ref = _message(store, clock, "gone@example.com", "k-hard")
    service = FeedbackService(store, clock)
    raw = postfix_dsn("gone@example.com", ref, key=None)
    first = service.apply(report_signals(parse_report(raw), clock.now_ms()))
    assert (first.recorded, first.suppressed, first.unmatched) == (1, 1, 0)
    again = service.apply(report_signals(parse_report(raw), clock.now_ms()))
    assert (again.recorded, again.duplicates, again.suppressed) == (0, 1, 0)
    found = _suppressed(store, "gone@example.com")
    assert found
    assert found["reason"] == "hard_bounce"
    assert "5.1.1" in found["note"]
    assert _event_names(store, contact) == ["email.bounced"]


def test_matching_by_key_and_exchange_reference(store: Store, clock: FakeClock) -> None:
    contact, _ = _message(store, clock, "ann@example.com", "journey:1:welcome:0")
    other, ref = _message(store, clock, "nobody@contoso.example", "k-exchange")
    service = FeedbackService(store, clock)
    # By X-Cadenza-Key even though the Message-ID names no row of ours.
    by_key = postfix_dsn("ann@example.com", "<unknown@elsewhere>")
    assert service.apply(report_signals(parse_report(by_key), 1)).recorded == 1
    # By Message-ID without angle brackets.
    assert service.apply(report_signals(parse_report(
        exchange_dsn("nobody@contoso.example", ref.strip("<>"))), 1)).recorded == 1
    assert _event_names(store, contact) == ["email.bounced"]
    assert _event_names(store, other) == ["email.bounced"]


def test_soft_bounces_count_to_the_limit_and_a_delivery_resets(store: Store,
                                                                 clock: FakeClock) -> None:
    _, ref = _message(store, clock, "full@example.com", "k-soft")
    service = FeedbackService(store, clock, soft_bounce_limit=3)

    def soft(n: int) -> None:
        raw = postfix_dsn("full@example.com", ref, action="failed", status="4.2.2", key=None,
                          report_id=f"<soft-{n}@mx>")
        service.apply(report_signals(parse_report(raw), clock.now_ms()))

    soft(1)
    soft(2)
    soft(2)  # a repeat of the same DSN does not count twice
    assert service.soft_bounce_count("full@example.com") == 2
    delivered = postfix_dsn("full@example.com", ref, action="delivered", status="2.0.0",
                            key=None, report_id="<ok@mx>")
    service.apply(report_signals(parse_report(delivered), clock.now_ms()))
    assert service.soft_bounce_count("full@example.com") == 0
    for n in (3, 4):
        soft(n)
    assert _suppressed(store, "full@example.com") is None
    soft(5)
    found = _suppressed(store, "full@example.com")
    assert found
    assert found["reason"] == "hard_bounce"
    assert "3 soft bounces" in found["note"]
    with store.read() as conn:
        assert is_suppressed(conn, "email", ["FULL@example.com"]) == {"FULL@example.com"}


def test_complaints_suppress_and_unknown_messages_are_ignored(store: Store,
                                                              clock: FakeClock) -> None:
    contact, ref = _message(store, clock, "ann@isp.example", "k-arf")
    service = FeedbackService(store, clock)
    report = service.apply(report_signals(parse_report(arf_report("ann@isp.example", ref)),
                                          1))
    assert (report.recorded, report.suppressed) == (1, 1)
    found = _suppressed(store, "ann@isp.example")
    assert found
    assert found["reason"] == "complaint"
    assert _event_names(store, contact) == ["email.complained"]
    stranger = service.apply(report_signals(parse_report(
        postfix_dsn("zed@example.com", "<not-ours@x>", key=None)), 1))
    assert (stranger.unmatched, stranger.recorded) == (1, 0)
    assert _suppressed(store, "zed@example.com") is None


def test_provider_unsubscribe_records_opt_out(store: Store, clock: FakeClock) -> None:
    contact, ref = _message(store, clock, "bo@example.com", "k-unsub")
    service = FeedbackService(store, clock)
    signal = Signal(FeedbackKind.UNSUBSCRIBED, "sendgrid", "ev-1", 5, provider_ref=ref)
    assert service.apply([signal, signal]).unsubscribed == 1
    c = schema.consents
    with store.read() as conn:
        row = conn.execute(sa.select(c.c.purpose, c.c.status, c.c.source)
                           .where(c.c.contact_id == contact)).one()
    assert tuple(row) == ("marketing", "opted_out", "sendgrid")
    assert _event_names(store, contact) == ["email.unsubscribed"]


# --- the CLI ------------------------------------------------------------------------------

def test_cli_feeds_dsn_files(store_url: str, store: Store, clock: FakeClock, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", "cli-feedback-secret-0123456789-0123456789")
    monkeypatch.chdir(tmp_path)
    _, ref = _message(store, clock, "gone@example.com", "k-cli")
    good = tmp_path / "bounce.eml"
    good.write_bytes(postfix_dsn("gone@example.com", ref, key=None))
    bad = tmp_path / "note.eml"
    bad.write_bytes(b"Subject: hello\r\n\r\nnot a report")
    result = CliRunner().invoke(app, ["feedback", "dsn", str(good), str(bad)],
                                catch_exceptions=False, env=dict(os.environ))
    assert result.exit_code == 1, result.output
    assert "1 events recorded, 1 addresses suppressed" in result.output
    assert "not multipart/report" in result.output
    assert _suppressed(store, "gone@example.com") is not None
