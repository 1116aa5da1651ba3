"""Provider event webhooks: SendGrid's Event Webhook and Postmark's webhooks, verified and
reduced to feedback `Signal`s (see `bounces`).

SendGrid signs each POST with ECDSA P-256 over SHA-256: the signature (base64 DER) is in
`X-Twilio-Email-Event-Webhook-Signature`, the signed payload is the
`X-Twilio-Email-Event-Webhook-Timestamp` header followed by the raw body, and the public key
is the base64 DER (SubjectPublicKeyInfo) shown in SendGrid's Mail Settings. A timestamp
further from now than the allowed age is refused, so a captured request cannot be replayed
later. Postmark has no signature; its webhook URL carries HTTP Basic credentials, compared in
constant time.

Matching: SendGrid's `sg_message_id` starts with the `X-Message-Id` its API returned (the
provider reference stored on the outbox row) followed by '.'; a custom argument
`cadenza_key` (our idempotency key) wins when present. Postmark's `MessageID` is the
reference its API returned; `Metadata.cadenza_key` wins likewise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from cadenza.channels.bounces import FeedbackKind, Signal
from cadenza.channels.tracking import Hit, classify_open
from cadenza.clock import iso_to_ms
from cadenza.errors import AuthError, ConfigError, ValidationFailed

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024
KEY_ARGUMENT = "cadenza_key"
"""The custom argument (SendGrid) or metadata field (Postmark) carrying our idempotency key."""


# --- SendGrid -----------------------------------------------------------------------------

class SendGridVerifier:
    """Checks the Event Webhook's ECDSA signature and timestamp."""

    def __init__(self, public_key_b64: str, max_age_s: int = 600) -> None:
        try:
            key = load_der_public_key(base64.b64decode(public_key_b64.strip(), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ConfigError("CADENZA_SENDGRID_WEBHOOK_PUBLIC_KEY",
                              f"is not a base64 DER public key ({exc}); copy the "
                              "verification key from SendGrid's Event Webhook settings") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ConfigError("CADENZA_SENDGRID_WEBHOOK_PUBLIC_KEY",
                              "must be an ECDSA P-256 key (SendGrid's verification key)")
        self.key = key
        self.max_age_s = max_age_s

    def verify(self, signature: str | None, timestamp: str | None, body: bytes,
               now_ms: int) -> None:
        """Raise AuthError unless `body` was signed by SendGrid at a recent `timestamp`."""
        if not signature or not timestamp:
            raise AuthError(f"the request has no {SENDGRID_SIGNATURE} and "
                            f"{SENDGRID_TIMESTAMP} headers: turn on Signed Event Webhook "
                            "Requests in SendGrid")
        try:
            sent_s = int(timestamp.strip())
        except ValueError:
            raise AuthError(f"{SENDGRID_TIMESTAMP} is not a Unix time") from None
        if abs(now_ms / 1000 - sent_s) > self.max_age_s:
            raise AuthError(f"the webhook's timestamp is more than {self.max_age_s} s from "
                            "now (a replay, or this server's clock is wrong)")
        try:
            der = base64.b64decode(signature.strip(), validate=True)
            self.key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature):
            raise AuthError("the SendGrid webhook signature does not verify with the "
                            "configured public key") from None


def _load_json(body: bytes) -> Any:
    if len(body) > MAX_WEBHOOK_BYTES:
        raise ValidationFailed("body", f"is {len(body):,} bytes; the limit is "
                               f"{MAX_WEBHOOK_BYTES:,}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("body", f"is not JSON: {exc}") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds_ms(value: Any, fallback: int) -> int:
    return int(value * 1000) if isinstance(value, int | float) and value > 0 else fallback


_SG_DROPPED = (("bounced address", FeedbackKind.BOUNCED), ("invalid", FeedbackKind.BOUNCED),
               ("spam reporting", FeedbackKind.COMPLAINED),
               ("unsubscribed", FeedbackKind.UNSUBSCRIBED))
_SG_SIMPLE = {"delivered": FeedbackKind.DELIVERED, "deferred": FeedbackKind.DEFERRED,
              "open": FeedbackKind.OPENED, "click": FeedbackKind.CLICKED,
              "spamreport": FeedbackKind.COMPLAINED, "unsubscribe": FeedbackKind.UNSUBSCRIBED,
              "group_unsubscribe": FeedbackKind.UNSUBSCRIBED}


def sendgrid_signals(body: bytes, now_ms: int) -> list[Signal]:
    """The signals of an Event Webhook POST (a JSON array of events); events of other kinds
    (processed, group_resubscribe, ...) are skipped."""
    events = _load_json(body)
    if not isinstance(events, list):
        raise ValidationFailed("body", "must be a JSON array of events, as SendGrid posts")
    signals = []
    for n, event in enumerate(events):
        if not isinstance(event, dict):
            raise ValidationFailed(f"body[{n}]", "must be an event object")
        signal = _sendgrid_signal(event, now_ms)
        if signal is not None:
            signals.append(signal)
    return signals


def _sendgrid_signal(event: Mapping[str, Any], now_ms: int) -> Signal | None:
    name = _text(event.get("event"))
    message = _text(event.get("sg_message_id"))
    ref = message.split(".", 1)[0] if message else None
    key = _text(event.get(KEY_ARGUMENT))
    if key is None and isinstance(event.get("unique_args"), dict):
        key = _text(event["unique_args"].get(KEY_ARGUMENT))
    dedupe = _text(event.get("sg_event_id")) or hashlib.sha256(
        orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()
    at = _seconds_ms(event.get("timestamp"), now_ms)
    address = _text(event.get("email"))
    properties: dict[str, Any] = {"provider_event": name}
    for field in ("reason", "status", "response", "attempt", "url", "useragent", "ip",
                  "asm_group_id", "bounce_classification"):
        if event.get(field) is not None:
            properties[field] = event[field]
    bounce_type = None
    if name == "bounce":
        kind = FeedbackKind.BOUNCED
        bounce_type = "soft" if event.get("type") == "blocked" else "hard"
    elif name == "dropped":
        reason = str(event.get("reason") or "").lower()
        kind = next((k for text, k in _SG_DROPPED if text in reason), FeedbackKind.DROPPED)
        properties["dropped"] = True
        bounce_type = "hard" if kind is FeedbackKind.BOUNCED else None
    elif name in _SG_SIMPLE:
        kind = _SG_SIMPLE[name]
        if kind is FeedbackKind.OPENED:
            properties["machine"] = bool(event.get("sg_machine_open"))
        elif kind is FeedbackKind.CLICKED:
            properties["bot"] = False
    else:
        return None
    return Signal(kind, "sendgrid", dedupe, at, provider_ref=ref, key=key, address=address,
                  bounce_type=bounce_type, properties=properties)


# --- Postmark -----------------------------------------------------------------------------

class PostmarkVerifier:
    """Checks the HTTP Basic credentials Postmark's webhook URL carries."""

    def __init__(self, username: str | None, password: str | None) -> None:
        self.username = username or ""
        self.password = password or ""

    def verify(self, authorization: str | None) -> None:
        """Raise AuthError unless `authorization` is Basic with the configured credentials."""
        if not self.username or not self.password:
            raise AuthError("Postmark webhooks are off: set CADENZA_POSTMARK_WEBHOOK_USERNAME "
                            "and CADENZA_POSTMARK_WEBHOOK_PASSWORD and use them in the "
                            "webhook URL (https://user:password@host/hooks/postmark)")
        scheme, _, value = (authorization or "").partition(" ")
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        user, _, password = decoded.partition(b":")
        good_user = hmac.compare_digest(user, self.username.encode())
        good_password = hmac.compare_digest(password, self.password.encode())
        if scheme.lower() != "basic" or not (good_user and good_password):
            raise AuthError("the Postmark webhook credentials are wrong")


_PM_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
_PM_SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked", "DMARCPolicy",
                      "Undeliverable"})


def postmark_signals(body: bytes, now_ms: int) -> list[Signal]:
    """The signal of one Postmark webhook POST (a JSON object with RecordType); record types
    and bounce types that say nothing about deliverability (AutoResponder, Subscribe, ...)
    give none."""
    record = _load_json(body)
    if not isinstance(record, dict):
        raise ValidationFailed("body", "must be a JSON object, as Postmark posts")
    kind_name = _text(record.get("RecordType"))
    if kind_name is None:
        raise ValidationFailed("RecordType", "is required (Delivery, Bounce, SpamComplaint, "
                               "Open, Click or SubscriptionChange)")
    ref = _text(record.get("MessageID"))
    metadata = record.get("Metadata")
    key = _text(metadata.get(KEY_ARGUMENT)) if isinstance(metadata, dict) else None
    address = _text(record.get("Recipient")) or _text(record.get("Email"))
    when = next((_text(record.get(f)) for f in ("DeliveredAt", "BouncedAt", "ReceivedAt",
                                                 "ChangedAt") if _text(record.get(f))), None)
    at = (iso_to_ms(when) if when else None) or now_ms
    properties: dict[str, Any] = {"provider_event": kind_name}
    for field in ("Type", "Description", "Details", "Tag", "OriginalLink", "UserAgent",
                  "SuppressionReason", "Platform"):
        if record.get(field) not in (None, ""):
            properties[field[0].lower() + field[1:]] = record[field]
    dedupe = f"{kind_name}:{record.get('ID') or ref}:{address}:{when}"
    bounce_type = None
    if kind_name == "Delivery":
        kind = FeedbackKind.DELIVERED
    elif kind_name == "Bounce":
        bounce = str(record.get("Type") or "")
        if bounce in _PM_HARD:
            kind, bounce_type = FeedbackKind.BOUNCED, "hard"
        elif bounce in _PM_SOFT:
            kind, bounce_type = FeedbackKind.BOUNCED, "soft"
        elif bounce == "SpamComplaint":
            kind = FeedbackKind.COMPLAINED
        elif bounce == "Unsubscribe":
            kind = FeedbackKind.UNSUBSCRIBED
        else:
            return []
        if record.get("Details"):
            properties["diagnostic"] = record["Details"]
    elif kind_name == "SpamComplaint":
        kind = FeedbackKind.COMPLAINED
    elif kind_name == "Open":
        kind = FeedbackKind.OPENED
        why = classify_open(Hit(str(record.get("UserAgent") or "")), None, 0)
        properties.update(machine=why is not None, machine_reason=why)
    elif kind_name == "Click":
        kind = FeedbackKind.CLICKED
        properties.update(url=record.get("OriginalLink"), bot=False)
    elif kind_name == "SubscriptionChange":
        if not record.get("SuppressSending"):
            return []  # reactivation: Cadenza's own consent decides, not the provider's list
        reason = record.get("SuppressionReason")
        if reason == "HardBounce":
            kind, bounce_type = FeedbackKind.BOUNCED, "hard"
        elif reason == "SpamComplaint":
            kind = FeedbackKind.COMPLAINED
        else:  # ManualSuppression: the recipient unsubscribed through Postmark's link
            kind = FeedbackKind.UNSUBSCRIBED
    else:
        return []
    return [Signal(kind, "postmark", dedupe, at, provider_ref=ref, key=key, address=address,
                   bounce_type=bounce_type, properties=properties)]
