"""What Twilio posts back: delivery statuses and inbound messages (STOP, START, HELP).

Both arrive as form posts signed with `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the
account's auth token, over the full URL Twilio called followed by every POST parameter sorted
by name, each as name then value. A request whose signature does not match is refused before
anything is read from it.

- Status callbacks (`MessageSid`, `MessageStatus`, `ErrorCode`) become message events
  `sms.sent`, `sms.delivered`, `sms.undelivered`, `sms.failed` on the contact the message
  went to. A sid Cadenza never sent is acknowledged and ignored.
- Inbound messages become `sms.received` events. When the whole body (trimmed, any case) is a
  keyword, consent follows: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT opt the contact out of
  SMS for every purpose; START, YES, UNSTOP opt them back in (marketing, and whatever STOP
  turned off); HELP, INFO get the help text as a reply. A STOP from a number no contact has
  puts that number on the suppression list (kind phone, reason unsubscribed), so no SMS goes
  to it whoever it later belongs to; START from that number lifts it again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.feedback import (
    MessageEvent,
    find_messages,
    message_properties,
    record_message_events,
)
from cadenza.channels.sms import opt_out_of_sms
from cadenza.clock import Clock
from cadenza.contacts.consent import (
    ConsentChange,
    ConsentStatus,
    SuppressionReason,
    record_consent,
    suppress,
)
from cadenza.contacts.normalize import normalize_phone
from cadenza.errors import ValidationFailed
from cadenza.store import Store, schema

logger = logging.getLogger("cadenza.channels.smshooks")

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
KEYWORD_SOURCE = "sms_keyword"
STATUS_EVENTS = {"sent": "sms.sent", "delivered": "sms.delivered",
                 "undelivered": "sms.undelivered", "failed": "sms.failed"}
"""Twilio statuses that become events; queued, accepted, sending and the like do not."""
MAX_BODY_KEPT = 1600


def twilio_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """The `X-Twilio-Signature` Twilio computes for a POST of `params` to `url`."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(auth_token: str, url: str, params: Sequence[tuple[str, str]],
                    signature: str) -> bool:
    """True when `signature` is Twilio's for this request (constant-time comparison)."""
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


def keyword_of(body: str) -> str | None:
    """The keyword the whole body is (upper case), or None."""
    word = body.strip().upper()
    return word if word in STOP_WORDS | START_WORDS | HELP_WORDS else None


def twiml(reply: str | None) -> str:
    """A TwiML answer: one message back, or none."""
    head = '<?xml version="1.0" encoding="UTF-8"?>'
    if not reply:
        return head + "<Response></Response>"
    return f"{head}<Response><Message>{escape(reply)}</Message></Response>"


@dataclass(frozen=True)
class StatusResult:
    """What a status callback did."""

    sid: str
    status: str
    recorded: bool
    """True when it became a (new) event; False for unknown sids, repeats and interim
    statuses."""


@dataclass(frozen=True)
class InboundResult:
    """What an inbound message did, and the reply to give."""

    phone: str | None
    contact_id: int | None
    keyword: str | None
    action: str
    """opted_out, opted_in, suppressed, unsuppressed, help, received, ignored."""
    reply: str | None


@dataclass(frozen=True)
class KeywordReplies:
    """The texts answered to keywords (empty: no reply)."""

    help: str = "Reply STOP to unsubscribe, START to subscribe again."
    stop: str = ""
    start: str = ""


class SmsHooks:
    """Applies Twilio's callbacks to the store."""

    def __init__(self, store: Store, clock: Clock,
                 replies: KeywordReplies | None = None) -> None:
        self.store = store
        self.clock = clock
        self.replies = replies or KeywordReplies()

    def status(self, form: Mapping[str, str]) -> StatusResult:
        """Record a delivery status as a message event of the contact it went to."""
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
        if not sid:
            raise ValidationFailed("MessageSid", "is required in a status callback")
        name = STATUS_EVENTS.get(status)
        if name is None:
            return StatusResult(sid, status, False)
        now = self.clock.now_ms()
        error = form.get("ErrorCode") or None

        def work(conn: Connection) -> bool:
            sent = find_messages(conn, provider_refs=[sid]).get(f"ref:{sid}")
            if sent is None:
                logger.info("status %s for unknown Twilio message %s ignored", status, sid)
                return False
            properties = {**message_properties(sent), "provider_ref": sid, "status": status,
                          "error_code": error}
            if error == "21610":
                opt_out_of_sms(conn, sent.contact_id, now, "twilio:21610")
            event = MessageEvent(f"twilio:{sid}:{status}", sent.contact_id, name, now,
                                 properties)
            return record_message_events(conn, [event], now) > 0

        return StatusResult(sid, status, self.store.retry(work))

    def inbound(self, form: Mapping[str, str]) -> InboundResult:
        """Apply a keyword (if the body is one) and record the message; the reply to send."""
        raw_from = form.get("From", "")
        body = form.get("Body", "")
        keyword = keyword_of(body)
        try:
            phone = normalize_phone(raw_from, "From")
        except ValidationFailed:
            logger.info("inbound SMS from an unusable number %r ignored", raw_from[:40])
            return InboundResult(None, None, keyword, "ignored", self._reply(keyword))
        now = self.clock.now_ms()

        def work(conn: Connection) -> InboundResult:
            contact = find_contact_by_phone(conn, phone)
            action = self._apply(conn, keyword, phone, contact, now)
            if contact is not None:
                sid = form.get("MessageSid") or form.get("SmsSid") or f"{phone}:{now}:{body}"
                properties = {"from": phone, "to": form.get("To", ""),
                              "body": body[:MAX_BODY_KEPT], "keyword": keyword,
                              "provider_ref": form.get("MessageSid") or None}
                record_message_events(conn, [MessageEvent(
                    f"twilio-in:{sid}", contact, "sms.received", now, properties)], now)
            return InboundResult(phone, contact, keyword, action, self._reply(keyword))

        return self.store.retry(work)

    def _apply(self, conn: Connection, keyword: str | None, phone: str,
               contact: int | None, now: int) -> str:
        if keyword in STOP_WORDS:
            if contact is None:
                suppress(conn, "phone", phone, SuppressionReason.UNSUBSCRIBED, now,
                         note=f"{KEYWORD_SOURCE}: {keyword}")
                return "suppressed"
            opt_out_of_sms(conn, contact, now, KEYWORD_SOURCE)
            return "opted_out"
        if keyword in START_WORDS:
            if contact is None:
                return "unsuppressed" if _lift_keyword_suppression(conn, phone) else "received"
            _opt_back_in(conn, contact, now)
            return "opted_in"
        if keyword in HELP_WORDS:
            return "help"
        return "received"

    def _reply(self, keyword: str | None) -> str | None:
        if keyword in HELP_WORDS:
            return self.replies.help
        if keyword in STOP_WORDS:
            return self.replies.stop or None
        if keyword in START_WORDS:
            return self.replies.start or None
        return None


def find_contact_by_phone(conn: Connection, phone: str) -> int | None:
    """The live contact with this (E.164) phone: its primary phone, else a phone identity."""
    c, i = schema.contacts, schema.identities
    found = conn.execute(sa.select(c.c.id).where(c.c.phone == phone, c.c.merged_into.is_(None))
                         .order_by(c.c.id).limit(1)).scalar()
    if found is None:
        found = conn.execute(sa.select(i.c.contact_id).where(i.c.kind == "phone",
                                                             i.c.value == phone)).scalar()
        if found is not None:
            merged = conn.execute(sa.select(c.c.merged_into).where(c.c.id == found)).scalar()
            found = merged if merged is not None else found
    return int(found) if found is not None else None


def _opt_back_in(conn: Connection, contact_id: int, now: int) -> None:
    """Marketing, and every purpose a keyword turned off, opted in again."""
    k = schema.consents
    stopped = set(conn.execute(sa.select(k.c.purpose).where(
        k.c.contact_id == contact_id, k.c.channel == "sms",
        k.c.status == ConsentStatus.OPTED_OUT.value,
        k.c.source.in_((KEYWORD_SOURCE, "twilio:21610")))).scalars())
    record_consent(conn, [ConsentChange(contact_id, "sms", purpose, ConsentStatus.OPTED_IN,
                                        KEYWORD_SOURCE, now)
                          for purpose in sorted(stopped | {"marketing"})])


def _lift_keyword_suppression(conn: Connection, phone: str) -> bool:
    """Remove the number's suppression if a STOP put it there (other reasons stay)."""
    s = schema.suppressions
    done = conn.execute(sa.delete(s).where(
        s.c.kind == "phone", s.c.address == phone,
        s.c.reason == SuppressionReason.UNSUBSCRIBED.value,
        s.c.note.like(f"{KEYWORD_SOURCE}:%")))
    return bool(done.rowcount)
