"""Bounces, complaints and other provider feedback: SMTP delivery status notifications
(RFC 3464), abuse reports (ARF, RFC 5965), and the rules that turn them into events,
suppressions and consent.

Every source (a DSN, an ARF report, a SendGrid or Postmark webhook) is reduced to `Signal`s;
`FeedbackService.apply` then does the same for all of them in one transaction:

    match       each signal to its outbox row: our idempotency key (X-Cadenza-Key, a custom
                argument) or the provider's reference (the Message-ID for SMTP)
    dedupe      a signal whose event is already in the log (a provider repeating a webhook,
                a DSN delivered twice) changes nothing
    rules       hard bounce, complaint      -> the address is suppressed
                soft bounce                 -> its count + 1; suppressed at the limit
                delivery                    -> the count is reset
                unsubscribe at the provider -> consent opted_out for the message's purpose
    record      one message event per signal (email.bounced, email.complained, ...)

A signal for a message Cadenza did not send (unmatched) is counted and otherwise ignored: a
provider account shared with another application must not suppress Cadenza's contacts.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import Message as MimeMessage
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.feedback import (
    MessageEvent,
    SentMessage,
    find_messages,
    message_properties,
    record_message_events,
)
from cadenza.clock import Clock
from cadenza.contacts import (
    ConsentChange,
    ConsentStatus,
    SuppressionReason,
    normalize_address,
    record_consent,
    suppress,
)
from cadenza.errors import ValidationFailed
from cadenza.events import lock_event_log
from cadenza.store import Store, dialect_insert, schema

MAX_REPORT_BYTES = 10 * 1024 * 1024
"""A DSN with the whole original attached can be large; more than this is refused."""
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"[^\s<>;\"]+@[^\s<>;\"]+")
_sb = schema.soft_bounces
_c = schema.contacts
_e = schema.events


class FeedbackKind(StrEnum):
    """What a signal says happened to a message; the event is `<channel>.<kind>`."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    DEFERRED = "deferred"
    DROPPED = "dropped"


@dataclass(frozen=True)
class Signal:
    """One piece of provider feedback about one message."""

    kind: FeedbackKind
    source: str
    """Where it came from: dsn, arf, sendgrid, postmark."""
    dedupe: str
    """Unique at the source (the provider's event id, the report's Message-ID + recipient)."""
    at: int
    provider_ref: str | None = None
    key: str | None = None
    """Our idempotency key, when the feedback carries it."""
    address: str | None = None
    """The address the feedback is about (else the contact's current address)."""
    bounce_type: str | None = None
    """hard or soft, for bounces."""
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class FeedbackReport:
    """What one `apply` did."""

    received: int = 0
    recorded: int = 0
    duplicates: int = 0
    unmatched: int = 0
    suppressed: int = 0
    soft_bounces: int = 0
    unsubscribed: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON form."""
        return asdict(self)

    def merged(self, other: FeedbackReport) -> FeedbackReport:
        """Both added up."""
        return FeedbackReport(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


class FeedbackService:
    """Applies signals: events, suppressions, soft-bounce counts and consent."""

    def __init__(self, store: Store, clock: Clock, *, soft_bounce_limit: int = 3) -> None:
        if soft_bounce_limit < 1:
            raise ValueError(f"soft_bounce_limit must be at least 1, got {soft_bounce_limit}")
        self.store = store
        self.clock = clock
        self.soft_bounce_limit = soft_bounce_limit

    def apply(self, signals: Sequence[Signal]) -> FeedbackReport:
        """Apply `signals` in one transaction; repeats of earlier signals change nothing."""
        if not signals:
            return FeedbackReport()
        return self.store.retry(lambda conn: self._apply(conn, signals))

    def _apply(self, conn: Connection, signals: Sequence[Signal]) -> FeedbackReport:
        now = self.clock.now_ms()
        report = FeedbackReport(received=len(signals))
        found = find_messages(conn, provider_refs=sorted(_ref_forms(
            s.provider_ref for s in signals)), keys=sorted({s.key for s in signals if s.key}))
        matched: list[tuple[Signal, SentMessage]] = []
        for signal in signals:
            message = _match(found, signal)
            if message is None:
                report.unmatched += 1
            else:
                matched.append((signal, message))
        contacts = _live_contacts(conn, {m.contact_id for _, m in matched})
        events: dict[str, tuple[MessageEvent, Signal, SentMessage]] = {}
        for signal, message in matched:
            contact = contacts.get(message.contact_id)
            if contact is None:
                report.unmatched += 1
                continue
            properties = {**message_properties(message), **signal.properties,
                          "source": signal.source}
            if signal.bounce_type:
                properties["bounce_type"] = signal.bounce_type
            event = MessageEvent(f"{signal.source}\x00{signal.dedupe}", contact[0],
                                 f"{message.channel}.{signal.kind.value}", signal.at,
                                 properties)
            if event.message_id() in events:
                report.duplicates += 1
            else:
                events[event.message_id()] = (event, signal, message)
        lock_event_log(conn)  # the check below and the insert see the same log
        seen = set(conn.execute(sa.select(_e.c.message_id).where(
            _e.c.message_id.in_(sorted(events)))).scalars()) if events else set()
        report.duplicates += len(seen)
        fresh = [item for mid, item in events.items() if mid not in seen]
        for event, signal, message in fresh:
            self._rules(conn, event.contact_id, contacts[message.contact_id][1], signal,
                        message, now, report)
        report.recorded = record_message_events(conn, [e for e, _, _ in fresh], now)
        return report

    def _rules(self, conn: Connection, contact_id: int, contact_email: str | None,
               signal: Signal, message: SentMessage, now: int,
               report: FeedbackReport) -> None:
        if signal.kind is FeedbackKind.UNSUBSCRIBED:
            purpose = message.purpose or "marketing"
            if purpose == "transactional":
                purpose = "marketing"
            report.unsubscribed += record_consent(conn, [ConsentChange(
                contact_id, message.channel, purpose, ConsentStatus.OPTED_OUT,
                signal.source, now)])
            return
        if message.channel != "email":
            return
        address = _normal(signal.address) or _normal(contact_email)
        if address is None:
            return
        note = str(signal.properties.get("diagnostic") or signal.properties.get("reason")
                   or "")[:500]
        if signal.kind is FeedbackKind.COMPLAINED:
            suppress(conn, "email", address, SuppressionReason.COMPLAINT, now,
                     f"{signal.source}: {note}".rstrip(": "))
            report.suppressed += 1
        elif signal.kind is FeedbackKind.BOUNCED and signal.bounce_type == "hard":
            suppress(conn, "email", address, SuppressionReason.HARD_BOUNCE, now,
                     f"{signal.source}: {note}".rstrip(": "))
            conn.execute(sa.delete(_sb).where(_sb.c.kind == "email", _sb.c.address == address))
            report.suppressed += 1
        elif signal.kind is FeedbackKind.BOUNCED:
            report.soft_bounces += 1
            count = _count_soft_bounce(conn, address, now)
            if count >= self.soft_bounce_limit:
                suppress(conn, "email", address, SuppressionReason.HARD_BOUNCE, now,
                         f"{count} soft bounces in a row (limit {self.soft_bounce_limit}); "
                         f"last: {note}"[:500])
                report.suppressed += 1
        elif signal.kind is FeedbackKind.DELIVERED:
            conn.execute(sa.delete(_sb).where(_sb.c.kind == "email", _sb.c.address == address))

    def soft_bounce_count(self, address: str) -> int:
        """Soft bounces of `address` since its last delivery."""
        stored = normalize_address("email", address)
        with self.store.read() as conn:
            value = conn.execute(sa.select(_sb.c.count).where(
                _sb.c.kind == "email", _sb.c.address == stored)).scalar()
        return int(value or 0)


def _ref_forms(refs: Iterable[str | None]) -> set[str]:
    # A Message-ID is stored with its angle brackets; reports quote it with or without.
    forms: set[str] = set()
    for ref in refs:
        if ref:
            bare = ref.strip().strip("<>")
            forms.update({bare, f"<{bare}>"})
    return forms


def _match(found: Mapping[str, SentMessage], signal: Signal) -> SentMessage | None:
    if signal.key and f"key:{signal.key}" in found:
        return found[f"key:{signal.key}"]
    if signal.provider_ref:
        bare = signal.provider_ref.strip().strip("<>")
        return found.get(f"ref:{bare}") or found.get(f"ref:<{bare}>")
    return None


def _live_contacts(conn: Connection, ids: set[int]) -> dict[int, tuple[int, str | None]]:
    """Contact id -> (live contact id after merges, its email)."""
    result: dict[int, tuple[int, str | None]] = {}
    looking = {i: i for i in ids}
    for _ in range(8):
        if not looking:
            break
        rows = {r.id: r for r in conn.execute(sa.select(_c.c.id, _c.c.merged_into, _c.c.email)
                                              .where(_c.c.id.in_(sorted(set(
                                                  looking.values()))))).all()}
        following: dict[int, int] = {}
        for named, current in looking.items():
            row = rows.get(current)
            if row is None:
                continue
            if row.merged_into is not None:
                following[named] = int(row.merged_into)
            else:
                result[named] = (int(row.id), row.email)
        looking = following
    return result


def _normal(address: str | None) -> str | None:
    if not address:
        return None
    try:
        return normalize_address("email", address)
    except ValidationFailed:
        return None


def _count_soft_bounce(conn: Connection, address: str, now: int) -> int:
    insert = dialect_insert(conn, _sb).values(kind="email", address=address, count=1,
                                              updated_at=now)
    conn.execute(insert.on_conflict_do_update(
        index_elements=["kind", "address"],
        set_={"count": _sb.c.count + 1, "updated_at": now}))
    return int(conn.execute(sa.select(_sb.c.count).where(
        _sb.c.kind == "email", _sb.c.address == address)).scalar_one())


# --- DSN and ARF reports ------------------------------------------------------------------

@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a delivery status notification."""

    address: str | None
    action: str
    """failed, delayed, delivered, relayed, expanded (RFC 3464 §2.3.3)."""
    status: str | None
    """The enhanced status code, e.g. 5.1.1."""
    diagnostic: str | None


@dataclass(frozen=True)
class Report:
    """A parsed multipart/report."""

    kind: str
    """delivery-status (a DSN) or feedback-report (an ARF complaint)."""
    report_id: str
    """The report's own Message-ID (or a hash of it): what makes it unique."""
    message_id: str | None
    """The original message's Message-ID, from the returned headers."""
    cadenza_key: str | None
    """The original's X-Cadenza-Key header (our idempotency key)."""
    recipients: tuple[RecipientStatus, ...] = ()
    feedback_type: str | None = None
    complainant: str | None = None
    reporter: str | None = None


def parse_report(raw: bytes) -> Report:
    """Parse a DSN (`multipart/report; report-type=delivery-status`) or an ARF complaint
    (`report-type=feedback-report`); ValidationFailed names what is missing."""
    if len(raw) > MAX_REPORT_BYTES:
        raise ValidationFailed("report", f"is {len(raw):,} bytes; the limit is "
                               f"{MAX_REPORT_BYTES:,}")
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    if message.get_content_type() != "multipart/report":
        raise ValidationFailed("report", f"is {message.get_content_type()}, not "
                               "multipart/report: send the DSN or ARF message as received, "
                               "headers included")
    report_type = (message.get_param("report-type") or "")
    if not isinstance(report_type, str) or report_type.lower() not in (
            "delivery-status", "feedback-report"):
        raise ValidationFailed("report", f"report-type {report_type!r} is neither "
                               "delivery-status (a DSN) nor feedback-report (ARF)")
    kind = report_type.lower()
    own_id = str(message.get("Message-ID") or "").strip() or (
        "sha256:" + hashlib.sha256(raw).hexdigest()[:32])
    fields: list[MimeMessage] = []
    original: MimeMessage | None = None
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/feedback-report"):
            fields = _blocks(part)
        elif ctype == "message/rfc822" and original is None:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], MimeMessage):
                original = inner[0]
        elif ctype == "text/rfc822-headers" and original is None:
            text = part.get_payload(decode=True) or b""
            original = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
                text if isinstance(text, bytes) else str(text).encode())
    if not fields:
        raise ValidationFailed("report", f"has no message/{kind} part")
    message_id = _header(original, "Message-ID")
    key = _header(original, "X-Cadenza-Key")
    if kind == "feedback-report":
        block = fields[0]
        complainant = (_address(block.get("Original-Rcpt-To"))
                       or _address(_header(original, "To")))
        return Report(kind, own_id, message_id, key, (), str(block.get("Feedback-Type") or
                                                            "abuse").strip().lower(),
                      complainant, str(block.get("Reporting-MTA") or block.get("User-Agent")
                                       or "").strip() or None)
    per_message, recipients = fields[0], fields[1:]
    statuses = tuple(RecipientStatus(
        _address(block.get("Final-Recipient")) or _address(block.get("Original-Recipient")),
        str(block.get("Action") or "").strip().lower(),
        _status(block.get("Status")), _one_line(block.get("Diagnostic-Code")))
        for block in recipients)
    if not statuses:
        raise ValidationFailed("report", "has no per-recipient fields (Final-Recipient, "
                               "Action, Status)")
    return Report(kind, own_id, message_id, key, statuses,
                  reporter=_one_line(per_message.get("Reporting-MTA")))


def _blocks(part: MimeMessage) -> list[MimeMessage]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, MimeMessage)]
    # Some senders base64-encode the status part: parse its decoded text as header blocks.
    text = part.get_payload(decode=True)
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(payload)
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    return [parser.parsestr(chunk.strip() + "\n") for chunk in
            re.split(r"\r?\n\s*\r?\n", data) if chunk.strip()]


def _header(message: MimeMessage | None, name: str) -> str | None:
    if message is None:
        return None
    value = message.get(name)
    return str(value).strip() or None if value is not None else None


def _address(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    _, semi, rest = text.partition(";")
    found = _ADDRESS.search(rest if semi else text)
    return found.group(0) if found else None


def _status(value: object) -> str | None:
    found = _STATUS.search(str(value or ""))
    return ".".join(found.groups()) if found else None


def _one_line(value: object) -> str | None:
    text = " ".join(str(value or "").split())
    return text[:1000] or None


def report_signals(report: Report, at: int) -> list[Signal]:
    """The signals of a parsed report: failed 5.x.x is a hard bounce; failed 4.x.x and
    delayed are soft; delivered resets the soft count; an ARF report is a complaint (unless
    its Feedback-Type is not-spam)."""
    base = {"provider_ref": report.message_id, "key": report.cadenza_key}
    if report.kind == "feedback-report":
        if report.feedback_type == "not-spam":
            return []
        return [Signal(FeedbackKind.COMPLAINED, "arf", report.report_id, at,
                       address=report.complainant,
                       properties={"feedback_type": report.feedback_type,
                                   "reporter": report.reporter}, **base)]
    signals = []
    for n, rcpt in enumerate(report.recipients):
        properties = {"action": rcpt.action, "status": rcpt.status,
                      "diagnostic": rcpt.diagnostic, "reporter": report.reporter}
        dedupe = f"{report.report_id}\x00{rcpt.address or n}"
        if rcpt.action == "failed":
            hard = rcpt.status is None or rcpt.status.startswith("5")
            signals.append(Signal(FeedbackKind.BOUNCED, "dsn", dedupe, at,
                                  address=rcpt.address,
                                  bounce_type="hard" if hard else "soft",
                                  properties=properties, **base))
        elif rcpt.action == "delayed":
            signals.append(Signal(FeedbackKind.BOUNCED, "dsn", dedupe, at,
                                  address=rcpt.address, bounce_type="soft",
                                  properties=properties, **base))
        elif rcpt.action in ("delivered", "relayed", "expanded"):
            signals.append(Signal(FeedbackKind.DELIVERED, "dsn", dedupe, at,
                                  address=rcpt.address, properties=properties, **base))
    return signals
