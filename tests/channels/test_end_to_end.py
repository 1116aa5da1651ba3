"""Issue 5 end to end: published journeys run by the real engine, delivered by a dispatcher
wired from Settings exactly as `cadenza serve` wires it, to a real SMTP server (aiosmtpd), a
Twilio-compatible API and an HTTP receiver on loopback; the recipient's side (one-click
unsubscribe, clicks, SMS keywords) and the providers' side (DSNs, status callbacks) go through
the app's public routes on a real server. On both dialects.

What each test proves:
- one-click unsubscribe: the header the recipient's mail client sees works, and nothing more
  reaches that inbox, although the journey goes on writing rows (checked at send time);
- a bounce suppresses: a DSN for the received Message-ID suppresses the address, records
  `email.bounced`, and the journey's next email is not sent;
- SMS: the provider gets To/Body, a signed status callback becomes `sms.delivered`, a signed
  STOP opts the contact out and the next SMS is cancelled;
- webhooks: signed per Standard Webhooks, verified by the reference library with the saved
  endpoint's secret and with `webhook_signing_secret`;
- clicks: links in the received HTML are signed redirects to exactly the original URL; a
  tampered token is a 404, not a redirect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Iterator, Sequence
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook, WebhookVerificationError

from cadenza.channels import TemplateService
from cadenza.clock import FakeClock
from cadenza.engine import Engine
from cadenza.events import EventService
from cadenza.governance import KeyKind, create_key
from cadenza.store import Store, schema
from tests.channels.e2e_support import (
    DAY,
    PUBLIC,
    SECRET,
    build_dsn,
    dispatch,
    e2e_settings,
    events_named,
    header_map,
    identify,
    outbox_by_node,
    public_path,
    publish,
    serve_app,
    start_engine,
    track,
)
from tests.channels.servers import SmtpSink, http_receiver, smtp_sink
from tests.channels.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FROM, TwilioServer, twilio_server

ANN = "ann@example.com"
PHONE = "+14155550123"
OFFER = "https://shop.example/offer?x=1&y=2"
DSN_SECRET = "dsn-shared-secret-value"

EMAIL_JOURNEY = """
journey: welcome-series
entry: {event: signed_up}
steps:
  - {id: welcome, send: {channel: email, template: welcome}}
  - {id: pause, wait: 1d}
  - {id: follow-up, send: {channel: email, template: follow-up}}
"""
WELCOME_MJML = f"""<mjml><mj-body><mj-section><mj-column>
  <mj-text>Welcome, {{{{ contact.user_id }}}}!</mj-text>
  <mj-button href="{OFFER.replace('&', '&amp;')}">See the offer</mj-button>
  <mj-text><a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a></mj-text>
</mj-column></mj-section></mj-body></mjml>"""
FOLLOW_UP_HTML = ("<html><body><p>Still there, {{ contact.user_id }}?</p>"
                  '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>')


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def engine(store: Store, clock: FakeClock) -> Engine:
    """The engine, running before anyone signs up (it reads events from its start on)."""
    return start_engine(store, clock)


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with twilio_server() as server:
        yield server


def email_journey(store: Store, clock: FakeClock, events: EventService) -> int:
    """Ann's contact, the two templates and the published journey; her contact id."""
    templates = TemplateService(store, clock)
    templates.save("welcome", "email", "Welcome, {{ contact.user_id }}", WELCOME_MJML,
                   format="mjml")
    templates.save("follow-up", "email", "Still there?", FOLLOW_UP_HTML)
    contact = identify(events, "ann", email=ANN)
    publish(store, clock, EMAIL_JOURNEY)
    return contact


def first_email_sent(store: Store, clock: FakeClock, events: EventService, engine: Engine,
                     sink: SmtpSink, store_url: str) -> None:
    """Ann signs up; the engine writes the welcome row; the dispatcher delivers it."""
    track(events, "ann", "signed_up", "signup-ann")
    assert engine.run_once().entered == 1
    report = dispatch(store, clock, e2e_settings(store_url, smtp_port=sink.port))
    assert (report.sent, report.cancelled) == (1, 0)
    assert [m.rcpt for m in sink.mails] == [ANN]


def later_email_not_sent(store: Store, clock: FakeClock, engine: Engine, sink: SmtpSink,
                         store_url: str, reason: str) -> None:
    """A day on, the journey writes its follow-up row; the dispatcher cancels it for `reason`
    and the SMTP server receives nothing more."""
    clock.advance(DAY)
    engine.run_once()
    report = dispatch(store, clock, e2e_settings(store_url, smtp_port=sink.port))
    assert (report.sent, report.cancelled) == (0, 1)
    follow_up = outbox_by_node(store)["follow-up"]
    assert follow_up["status"] == "cancelled"
    assert reason in str(follow_up["last_error"]), follow_up["last_error"]
    assert len(sink.mails) == 1


def test_one_click_unsubscribe_stops_the_journeys_later_email(
        store: Store, store_url: str, clock: FakeClock, events: EventService,
        engine: Engine, sink: SmtpSink) -> None:
    contact = email_journey(store, clock, events)
    first_email_sent(store, clock, events, engine, sink, store_url)
    (mail,) = sink.mails
    assert mail.subject == "Welcome, ann"
    assert mail.message_id == outbox_by_node(store)["welcome"]["provider_ref"]
    header = str(mail.mime["List-Unsubscribe"])
    assert str(mail.mime["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    one_click = re.fullmatch(r"<(https://[^>]+)>", header)
    assert one_click is not None, header
    html = mail.mime.get_body(preferencelist=("html",))
    assert html is not None
    assert one_click.group(1) in html.get_content()  # {{ unsubscribe_url }} rendered

    settings = e2e_settings(store_url, smtp_port=sink.port)
    with serve_app(settings, store, clock) as http:
        clock.advance(60_000)
        answer = http.post(public_path(one_click.group(1)),
                           data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200, answer.text
        # A forged token changes nothing and is not a 200.
        assert http.post(public_path(one_click.group(1))[:-2],
                         data={"List-Unsubscribe": "One-Click"}).status_code in (400, 404)

    later_email_not_sent(store, clock, engine, sink, store_url, "consent: opted out of email")
    h = schema.consent_history
    with store.read() as conn:
        history = [tuple(r) for r in conn.execute(
            sa.select(h.c.channel, h.c.purpose, h.c.status, h.c.source)
            .where(h.c.contact_id == contact).order_by(h.c.id))]
    assert history == [("email", "marketing", "opted_out", "unsubscribe")]
    assert [e["contact_id"] for e in events_named(store, "email.unsubscribed")] == [contact]


def test_a_bounce_suppresses_the_address(
        store: Store, store_url: str, clock: FakeClock, events: EventService,
        engine: Engine, sink: SmtpSink) -> None:
    contact = email_journey(store, clock, events)
    first_email_sent(store, clock, events, engine, sink, store_url)
    (mail,) = sink.mails
    dsn = build_dsn(mail.mime, ANN)

    settings = e2e_settings(store_url, smtp_port=sink.port, dsn_secret=DSN_SECRET)
    with serve_app(settings, store, clock) as http:
        assert http.post("/hooks/dsn", content=dsn).status_code == 401
        assert http.post("/hooks/dsn", content=dsn, headers={
            "Authorization": "Bearer not-the-secret"}).status_code == 401
        answer = http.post("/hooks/dsn", content=dsn,
                           headers={"Authorization": f"Bearer {DSN_SECRET}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["suppressed"] == 1

    s = schema.suppressions
    with store.read() as conn:
        suppressed = [tuple(r) for r in conn.execute(sa.select(s.c.kind, s.c.address,
                                                               s.c.reason))]
    assert suppressed == [("email", ANN, "hard_bounce")]
    (bounced,) = events_named(store, "email.bounced")
    assert bounced["contact_id"] == contact
    assert bounced["properties"]["bounce_type"] == "hard"
    assert bounced["properties"]["outbox_id"] == outbox_by_node(store)["welcome"]["id"]
    later_email_not_sent(store, clock, engine, sink, store_url,
                         "suppressed: the email address is on the suppression list")


def twilio_signature(url: str, params: Sequence[tuple[str, str]]) -> str:
    """X-Twilio-Signature as Twilio documents it (written here, not borrowed from the
    product): HMAC-SHA1 of the URL followed by every parameter sorted by name, name then
    value, keyed with the auth token; base64."""
    data = url + "".join(f"{k}{v}" for k, v in sorted(params))
    return base64.b64encode(hmac.new(AUTH_TOKEN.encode(), data.encode(),
                                     hashlib.sha1).digest()).decode()


SMS_JOURNEY = """
journey: sms-welcome
entry: {event: signed_up}
steps:
  - {id: hello, send: {channel: sms, template: sms-hello}}
  - {id: pause, wait: 1d}
  - {id: reminder, send: {channel: sms, template: sms-reminder}}
"""


def test_sms_status_callback_and_stop(store: Store, store_url: str, clock: FakeClock,
                                      events: EventService, engine: Engine,
                                      twilio: TwilioServer) -> None:
    settings = e2e_settings(store_url, twilio_account_sid=ACCOUNT_SID,
                            twilio_auth_token=AUTH_TOKEN, twilio_from=FROM,
                            twilio_base_url=twilio.url)
    templates = TemplateService(store, clock)
    templates.save("sms-hello", "sms", "", "Welcome, {{ contact.user_id }}! Reply STOP to "
                                           "opt out.")
    templates.save("sms-reminder", "sms", "", "Still there, {{ contact.user_id }}?")
    contact = identify(events, "bo", phone=PHONE)
    publish(store, clock, SMS_JOURNEY)
    track(events, "bo", "signed_up", "signup-bo")
    engine.run_once()
    assert dispatch(store, clock, settings).sent == 1
    (sent,) = twilio.sent
    assert sent.form["To"] == PHONE
    assert sent.form["From"] == FROM
    assert sent.form["Body"] == "Welcome, bo! Reply STOP to opt out."
    callback = sent.form["StatusCallback"]
    assert callback == f"{PUBLIC}/hooks/twilio/status"
    assert outbox_by_node(store)["hello"]["provider_ref"] == sent.sid

    status = [("AccountSid", ACCOUNT_SID), ("MessageSid", sent.sid), ("SmsSid", sent.sid),
              ("MessageStatus", "delivered"), ("To", PHONE), ("From", FROM)]
    inbound_url = f"{PUBLIC}/hooks/twilio/inbound"
    stop = [("AccountSid", ACCOUNT_SID), ("MessageSid", "SM" + "7" * 32), ("From", PHONE),
            ("To", FROM), ("Body", "STOP")]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with serve_app(settings, store, clock) as http:
        forged = http.post("/hooks/twilio/status", content=urlencode(status), headers={
            **form, "X-Twilio-Signature": twilio_signature(callback, status[:-1])})
        assert forged.status_code == 403
        answer = http.post("/hooks/twilio/status", content=urlencode(status), headers={
            **form, "X-Twilio-Signature": twilio_signature(callback, status)})
        assert answer.status_code == 200, answer.text
        assert answer.json()["recorded"] is True
        replied = http.post("/hooks/twilio/inbound", content=urlencode(stop), headers={
            **form, "X-Twilio-Signature": twilio_signature(inbound_url, stop)})
        assert replied.status_code == 200, replied.text
        assert replied.headers["content-type"].startswith("application/xml")

    (delivered,) = events_named(store, "sms.delivered")
    assert delivered["contact_id"] == contact
    assert delivered["properties"]["provider_ref"] == sent.sid
    k = schema.consents
    with store.read() as conn:
        consents = {(r.channel, r.purpose): (r.status, r.source) for r in conn.execute(
            sa.select(k).where(k.c.contact_id == contact))}
    assert consents[("sms", "marketing")] == ("opted_out", "sms_keyword")

    clock.advance(DAY)
    engine.run_once()
    report = dispatch(store, clock, settings)
    assert (report.sent, report.cancelled) == (0, 1)
    reminder = outbox_by_node(store)["reminder"]
    assert reminder["status"] == "cancelled"
    assert "consent: opted out of sms" in str(reminder["last_error"])
    assert len(twilio.sent) == 1


def test_webhook_steps_are_signed_per_standard_webhooks(
        store: Store, store_url: str, clock: FakeClock, events: EventService,
        engine: Engine) -> None:
    # The reference verifier compares webhook-timestamp with the wall clock (5 minutes).
    clock.set(int(time.time() * 1000))
    inline_secret = "whsec_" + base64.b64encode(b"inline-secret-0123456789abcdef!").decode()
    with http_receiver() as receiver:
        settings = e2e_settings(store_url, webhook_allow_networks="127.0.0.0/8",
                                webhook_signing_secret=inline_secret)
        with store.begin() as conn:
            _, admin = create_key(conn, SECRET, KeyKind.ADMIN, "e2e admin", clock.now_ms())
        with serve_app(settings, store, clock) as http:
            saved = http.put("/api/webhook-endpoints/crm", json={"url": f"{receiver.url}/crm"},
                             headers={"Authorization": f"Bearer {admin}"})
            assert saved.status_code == 201, saved.text
            endpoint_secret = saved.json()["secret"]
        contact = identify(events, "cy", email="cy@example.com")
        publish(store, clock, f"""
journey: crm-sync
entry: {{event: signed_up}}
steps:
  - {{id: to-crm, send: {{channel: webhook, endpoint: crm, data: {{plan: pro}}}}}}
  - {{id: to-inline, send: {{channel: webhook, url: "{receiver.url}/inline",
                            data: {{source: cadenza}}}}}}
""")
        track(events, "cy", "signed_up", "signup-cy")
        engine.run_once()
        report = dispatch(store, clock, settings)
        assert report.sent == 2, report

    rows = outbox_by_node(store)
    by_path = {r.path: r for r in receiver.requests}
    assert set(by_path) == {"/crm", "/inline"}
    for path, secret, step, data in (("/crm", endpoint_secret, "to-crm", {"plan": "pro"}),
                                     ("/inline", inline_secret, "to-inline",
                                      {"source": "cadenza"})):
        request = by_path[path]
        headers = header_map(request.headers)
        assert headers["idempotency-key"] == rows[step]["idempotency_key"]
        body = Webhook(secret).verify(request.raw, headers)
        assert body["data"] == data, body
        assert body["id"] == headers["webhook-id"] == rows[step]["idempotency_key"]
        assert (body["journey"], body["step"]) == ("crm-sync", step)
        assert body["contact"]["id"] == contact
        other = endpoint_secret if secret == inline_secret else inline_secret
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(request.raw, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(request.raw.replace(b"cadenza", b"cadenzA")
                                   .replace(b"pro", b"prO"), headers)


def test_tracked_click_redirects_to_the_original_link_only(
        store: Store, store_url: str, clock: FakeClock, events: EventService,
        engine: Engine, sink: SmtpSink) -> None:
    contact = email_journey(store, clock, events)
    first_email_sent(store, clock, events, engine, sink, store_url)
    (mail,) = sink.mails
    part = mail.mime.get_body(preferencelist=("html",))
    assert part is not None
    html = part.get_content()
    assert "shop.example" not in html  # the link itself was rewritten
    tracked = re.findall(rf'href="({re.escape(PUBLIC)}/t/c/[^"]+)"', html)
    assert len(tracked) == 1, html
    pixel = re.findall(rf'src="({re.escape(PUBLIC)}/t/o/[^"]+)"', html)
    assert len(pixel) == 1

    settings = e2e_settings(store_url, smtp_port=sink.port)
    with serve_app(settings, store, clock) as http:
        clock.advance(120_000)  # a person reads before clicking
        answer = http.get(public_path(tracked[0]))
        assert answer.status_code == 302
        assert answer.headers["location"] == OFFER
        token = public_path(tracked[0]).removeprefix("/t/c/")
        flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
        for bad in (f"/t/c/{flipped}", f"/t/c/{token[:-4]}", f"/t/c/{token}x"):
            refused = http.get(bad)
            assert refused.status_code == 404, bad
            assert "location" not in refused.headers
        assert http.get(public_path(pixel[0])).status_code == 200

    (clicked,) = events_named(store, "email.clicked")
    assert clicked["contact_id"] == contact
    assert clicked["properties"]["url"] == OFFER
    assert clicked["properties"]["bot"] is False
    assert clicked["properties"]["outbox_id"] == outbox_by_node(store)["welcome"]["id"]
    assert [e["contact_id"] for e in events_named(store, "email.opened")] == [contact]
