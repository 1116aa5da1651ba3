"""SendGrid and Postmark webhooks: signature and credential checks (a real ECDSA P-256 key
pair), event mapping, and their effect through the feedback rules."""

from __future__ import annotations

import base64

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cadenza.channels.bounces import FeedbackKind, FeedbackService
from cadenza.channels.esp_webhooks import (
    PostmarkVerifier,
    SendGridVerifier,
    postmark_signals,
    sendgrid_signals,
)
from cadenza.clock import FakeClock
from cadenza.errors import AuthError, ConfigError, ValidationFailed
from cadenza.store import Store, schema
from tests.channels.support import add_contact, add_outbox

NOW_MS = 1_767_225_600_000


def key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key and its public half as SendGrid shows it (base64 DER SPKI)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def sign(private: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    """The X-Twilio-Email-Event-Webhook-Signature of `body` at `timestamp`."""
    return base64.b64encode(private.sign(timestamp.encode() + body,
                                         ec.ECDSA(hashes.SHA256()))).decode()


def test_sendgrid_signature_checks() -> None:
    private, public = key_pair()
    verifier = SendGridVerifier(public, max_age_s=600)
    body = b'[{"event":"delivered"}]'
    stamp = str(NOW_MS // 1000)
    verifier.verify(sign(private, stamp, body), stamp, body, NOW_MS)
    with pytest.raises(AuthError, match="does not verify"):
        verifier.verify(sign(private, stamp, body), stamp, body + b" ", NOW_MS)
    other, _ = key_pair()
    with pytest.raises(AuthError, match="does not verify"):
        verifier.verify(sign(other, stamp, body), stamp, body, NOW_MS)
    later = str(NOW_MS // 1000 + 1)
    with pytest.raises(AuthError, match="does not verify"):  # timestamp is signed too
        verifier.verify(sign(private, stamp, body), later, body, NOW_MS)
    stale = str(NOW_MS // 1000 - 601)
    with pytest.raises(AuthError, match="more than 600 s"):
        verifier.verify(sign(private, stale, body), stale, body, NOW_MS)
    with pytest.raises(AuthError, match="headers"):
        verifier.verify(None, stamp, body, NOW_MS)
    with pytest.raises(AuthError, match="does not verify"):
        verifier.verify("not base64!!", stamp, body, NOW_MS)
    with pytest.raises(AuthError, match="Unix time"):
        verifier.verify(sign(private, "soon", body), "soon", body, NOW_MS)


def test_sendgrid_key_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="base64 DER"):
        SendGridVerifier("bm90IGEga2V5")
    rsa_like = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ConfigError, match="P-256"):
        SendGridVerifier(base64.b64encode(rsa_like).decode())


def sg_event(event: str, n: int, **extra: object) -> dict[str, object]:
    return {"email": "ann@example.com", "timestamp": NOW_MS // 1000, "event": event,
            "sg_event_id": f"ev-{n}", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16"
            "648.5515E0B88.0", "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", **extra}


def test_sendgrid_event_mapping() -> None:
    events = [
        sg_event("processed", 1),
        sg_event("delivered", 2, response="250 OK"),
        sg_event("bounce", 3, type="bounce", status="5.1.1", reason="no such user"),
        sg_event("bounce", 4, type="blocked", status="4.0.0", reason="blocked"),
        sg_event("dropped", 5, reason="Bounced Address"),
        sg_event("dropped", 6, reason="Spam Content (if Spam Checker app is enabled)"),
        sg_event("deferred", 7, attempt="2"),
        sg_event("open", 8, sg_machine_open=True, useragent="Mozilla/5.0"),
        sg_event("click", 9, url="https://shop.example/"),
        sg_event("spamreport", 10),
        sg_event("unsubscribe", 11),
        sg_event("group_unsubscribe", 12, asm_group_id=42),
        sg_event("group_resubscribe", 13),
        sg_event("dropped", 14, reason="Unsubscribed Address"),
    ]
    signals = sendgrid_signals(orjson.dumps(events), NOW_MS)
    got = [(s.dedupe, s.kind, s.bounce_type) for s in signals]
    assert got == [
        ("ev-2", FeedbackKind.DELIVERED, None), ("ev-3", FeedbackKind.BOUNCED, "hard"),
        ("ev-4", FeedbackKind.BOUNCED, "soft"), ("ev-5", FeedbackKind.BOUNCED, "hard"),
        ("ev-6", FeedbackKind.DROPPED, None), ("ev-7", FeedbackKind.DEFERRED, None),
        ("ev-8", FeedbackKind.OPENED, None), ("ev-9", FeedbackKind.CLICKED, None),
        ("ev-10", FeedbackKind.COMPLAINED, None), ("ev-11", FeedbackKind.UNSUBSCRIBED, None),
        ("ev-12", FeedbackKind.UNSUBSCRIBED, None), ("ev-14", FeedbackKind.UNSUBSCRIBED, None),
    ]
    assert {s.provider_ref for s in signals} == {"14c5d75ce93"}
    assert signals[6].properties["machine"] is True
    assert signals[7].properties["url"] == "https://shop.example/"
    assert signals[0].at == NOW_MS // 1000 * 1000


@pytest.mark.parametrize(("body", "field"), [
    (b"{", "body"), (b'{"event": "open"}', "body"), (b"[1]", "body[0]"),
])
def test_sendgrid_bad_bodies(body: bytes, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        sendgrid_signals(body, NOW_MS)
    assert caught.value.field == field


def test_postmark_basic_auth() -> None:
    verifier = PostmarkVerifier("hook", "s3cret")
    good = "Basic " + base64.b64encode(b"hook:s3cret").decode()
    verifier.verify(good)
    for bad in (None, "", "Basic " + base64.b64encode(b"hook:wrong").decode(),
                "Bearer s3cret", "Basic !!!", "Basic " + base64.b64encode(b"hook").decode()):
        with pytest.raises(AuthError):
            verifier.verify(bad)
    with pytest.raises(AuthError, match="CADENZA_POSTMARK_WEBHOOK_USERNAME"):
        PostmarkVerifier(None, None).verify(good)


def pm(record_type: str, **fields: object) -> bytes:
    return orjson.dumps({"RecordType": record_type, "MessageID": "883953f4-6105-42a2-a16a",
                         "ServerID": 23, "MessageStream": "outbound", **fields})


@pytest.mark.parametrize(("body", "kind", "bounce_type"), [
    (pm("Delivery", Recipient="ann@example.com", DeliveredAt="2026-01-01T12:00:00Z"),
     FeedbackKind.DELIVERED, None),
    (pm("Bounce", ID=4323372036854775807, Type="HardBounce", TypeCode=1,
        Email="ann@example.com", BouncedAt="2026-01-01T12:00:00Z",
        Details="smtp;550 5.1.1 user unknown"), FeedbackKind.BOUNCED, "hard"),
    (pm("Bounce", ID=2, Type="SoftBounce", TypeCode=4096, Email="ann@example.com"),
     FeedbackKind.BOUNCED, "soft"),
    (pm("Bounce", ID=3, Type="SpamComplaint", Email="ann@example.com"),
     FeedbackKind.COMPLAINED, None),
    (pm("SpamComplaint", ID=4, Type="SpamComplaint", Email="ann@example.com"),
     FeedbackKind.COMPLAINED, None),
    (pm("Open", Recipient="ann@example.com", ReceivedAt="2026-01-01T12:00:00.1234567Z",
        UserAgent="Mozilla/5.0"), FeedbackKind.OPENED, None),
    (pm("Click", Recipient="ann@example.com", OriginalLink="https://shop.example/",
        ReceivedAt="2026-01-01T12:00:00Z"), FeedbackKind.CLICKED, None),
    (pm("SubscriptionChange", Recipient="ann@example.com", SuppressSending=True,
        SuppressionReason="ManualSuppression", ChangedAt="2026-01-01T12:00:00Z"),
     FeedbackKind.UNSUBSCRIBED, None),
    (pm("SubscriptionChange", Recipient="ann@example.com", SuppressSending=True,
        SuppressionReason="HardBounce"), FeedbackKind.BOUNCED, "hard"),
])
def test_postmark_mapping(body: bytes, kind: FeedbackKind, bounce_type: str | None) -> None:
    [signal] = postmark_signals(body, NOW_MS)
    assert (signal.kind, signal.bounce_type) == (kind, bounce_type)
    assert signal.provider_ref == "883953f4-6105-42a2-a16a"


def test_postmark_records_that_say_nothing() -> None:
    assert postmark_signals(pm("Bounce", ID=9, Type="AutoResponder"), NOW_MS) == []
    assert postmark_signals(pm("SubscriptionChange", SuppressSending=False), NOW_MS) == []
    with pytest.raises(ValidationFailed, match="RecordType"):
        postmark_signals(b'{"MessageID": "x"}', NOW_MS)
    with pytest.raises(ValidationFailed, match="JSON object"):
        postmark_signals(b"[]", NOW_MS)


def test_postmark_open_machine_flag() -> None:
    [apple] = postmark_signals(pm("Open", UserAgent="Mozilla/5.0"), NOW_MS)
    assert apple.properties["machine"] is True
    [person] = postmark_signals(pm("Open", UserAgent="Mozilla/5.0 (Macintosh) Safari/605"),
                                NOW_MS)
    assert person.properties["machine"] is False


def test_webhook_events_reach_the_log_once(store: Store, clock: FakeClock) -> None:
    contact = add_contact(store, clock.now_ms(), email="ann@example.com")
    rows = add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "email"},
                                              {"contact_id": contact, "channel": "email",
                                               "key": "our-key"}])
    o = schema.outbox
    with store.begin() as conn:
        conn.execute(sa.update(o).where(o.c.id == rows[0]).values(
            status="sent", provider_ref="14c5d75ce93"))
    service = FeedbackService(store, clock)
    body = orjson.dumps([sg_event("delivered", 1), sg_event("open", 2),
                         sg_event("click", 3, url="https://a.example/", cadenza_key="our-key"),
                         {**sg_event("delivered", 4), "sg_message_id": "someone-else.x"}])
    report = service.apply(sendgrid_signals(body, clock.now_ms()))
    assert (report.recorded, report.unmatched) == (3, 1)
    assert service.apply(sendgrid_signals(body, clock.now_ms())).recorded == 0
    e = schema.events
    with store.read() as conn:
        found = conn.execute(sa.select(e.c.name, e.c.properties).order_by(e.c.id)).all()
    assert [n for n, _ in found] == ["email.delivered", "email.opened", "email.clicked"]
    assert found[2][1]["outbox_id"] == rows[1]  # matched by our key
    assert found[0][1]["source"] == "sendgrid"
    assert found[0][1]["outbox_id"] == rows[0]
