"""The SMS channel against a Twilio-compatible API on loopback; status callbacks and inbound
keywords through the real app, signed as Twilio signs them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from cadenza.api import create_app
from cadenza.channels import ChannelError, ChannelRegistry, Message, Recipient, TemplateService
from cadenza.channels.errors import Undeliverable
from cadenza.channels.options import SmsOptions
from cadenza.channels.sms import SmsChannel
from cadenza.channels.smshooks import keyword_of, signature_valid, twilio_signature, twiml
from cadenza.clock import FakeClock
from cadenza.contacts.consent import is_suppressed
from cadenza.engine.dispatch import Dispatcher
from cadenza.governance import KeyKind, create_key
from cadenza.settings import Settings
from cadenza.store import Store, schema
from tests.api.support import serving_app
from tests.channels.support import FAST, add_contact, add_outbox, outbox_rows
from tests.channels.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FROM, TwilioServer, twilio_server

PUBLIC = "https://cadenza.example.com"
CALLBACK = f"{PUBLIC}/hooks/twilio/status"
NOW = 1_760_000_000_000


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with twilio_server() as server:
        yield server


def options(server: TwilioServer, **changes: Any) -> SmsOptions:
    values: dict[str, Any] = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                              "from_number": FROM, "base_url": server.url,
                              "status_callback": CALLBACK, "timeout_s": 5}
    values.update(changes)
    return SmsOptions(**values)


def message(phone: str | None, body: str = "Hi there", contact: int = 5) -> Message:
    return Message(outbox_id=1, key="k-1", channel="sms", contact=Recipient(contact, phone=phone),
                   params={}, content={"body": body}, at_ms=NOW, address_kind="phone",
                   address=phone)


def send(channel: SmsChannel, msg: Message) -> Any:
    async def go() -> Any:
        try:
            return await channel.send(msg)
        finally:
            await channel.close()

    return asyncio.run(go())


# --- the channel ------------------------------------------------------------------------


def test_sends_form_fields_with_basic_auth_and_records_segments(twilio: TwilioServer) -> None:
    body = "Your code is 1234 — reply STOP to opt out"  # the em dash makes it UCS-2
    result = send(SmsChannel(options(twilio)), message("+14155550100", body))
    (sent,) = twilio.sent
    assert result.provider_ref == sent.sid
    assert sent.sid.startswith("SM")
    assert sent.form == {"To": "+14155550100", "From": FROM, "Body": body,
                         "StatusCallback": CALLBACK}
    assert result.details["sms"] == {"encoding": "UCS-2", "units": len(body), "segments": 1,
                                     "num_segments": "1"}


def test_a_messaging_service_replaces_the_sender(twilio: TwilioServer) -> None:
    sid = "MG" + "a" * 32
    send(SmsChannel(options(twilio, from_number=None, messaging_service_sid=sid,
                            status_callback=None)), message("+14155550100"))
    (sent,) = twilio.sent
    assert sent.form == {"To": "+14155550100", "MessagingServiceSid": sid, "Body": "Hi there"}


def test_long_gsm_text_counts_the_segments_twilio_bills(twilio: TwilioServer) -> None:
    body = "x" * 300 + "{}"  # 304 septets: 2 parts of at most 153
    result = send(SmsChannel(options(twilio)), message("+14155550100", body))
    assert result.details["sms"]["segments"] == 2
    assert result.details["sms"]["num_segments"] == "2"
    assert result.details["sms"]["encoding"] == "GSM-7"


@pytest.mark.parametrize(("code", "undeliverable"), [
    (21211, True), (21614, True), (21610, True), (21408, False),
])
def test_twilio_error_codes(twilio: TwilioServer, code: int, undeliverable: bool) -> None:
    twilio.errors["+14155550100"] = code
    with pytest.raises(ChannelError) as caught:
        send(SmsChannel(options(twilio)), message("+14155550100"))
    assert isinstance(caught.value, Undeliverable) is undeliverable
    assert not caught.value.retryable
    assert f"code {code}" in caught.value.message


def test_an_invalid_number_is_undeliverable(twilio: TwilioServer) -> None:
    with pytest.raises(Undeliverable, match="not a valid phone number"):
        send(SmsChannel(options(twilio)), message("call-me"))


def test_bad_credentials_name_the_settings(twilio: TwilioServer) -> None:
    with pytest.raises(ChannelError, match="CADENZA_TWILIO_AUTH_TOKEN") as caught:
        send(SmsChannel(options(twilio, auth_token="wrong")), message("+14155550100"))
    assert not caught.value.retryable
    assert "HTTP 401 code 20003" in caught.value.message
    assert twilio.sent == []


def test_429_is_retried_after_retry_after_and_5xx_is_retried(twilio: TwilioServer) -> None:
    twilio.statuses["+14155550100"] = [429, 500]
    channel = SmsChannel(options(twilio))
    with pytest.raises(ChannelError) as limited:
        send(channel, message("+14155550100"))
    assert limited.value.retryable
    assert limited.value.retry_after_ms == NOW + 7000
    with pytest.raises(ChannelError) as broken:
        send(channel, message("+14155550100"))
    assert broken.value.retryable
    assert broken.value.retry_after_ms is None
    assert send(channel, message("+14155550100")).provider_ref == twilio.sent[0].sid


def test_unconfigured_sms_names_the_settings() -> None:
    with pytest.raises(ChannelError, match="CADENZA_TWILIO_ACCOUNT_SID") as caught:
        send(SmsChannel(), message("+14155550100"))
    assert not caught.value.retryable


def test_no_phone_and_empty_body_are_refused_before_any_request(twilio: TwilioServer) -> None:
    with pytest.raises(Undeliverable, match="no phone number"):
        send(SmsChannel(options(twilio)), message(None))
    with pytest.raises(ChannelError, match="empty"):
        send(SmsChannel(options(twilio)), message("+14155550100", "  "))
    assert twilio.requests == 0


# --- through the dispatcher --------------------------------------------------------------


def sms_dispatcher(store: Store, clock: FakeClock, server: TwilioServer) -> Dispatcher:
    channels = ChannelRegistry([SmsChannel(options(server), store=store)])
    return Dispatcher(store, clock, channels, TemplateService(store, clock), FAST,
                      random.Random(3), 60_000, interceptors=[])


def test_dispatch_records_sids_segments_and_opt_outs(store: Store, twilio: TwilioServer
                                                     ) -> None:
    clock = FakeClock(NOW)
    ok = add_contact(store, NOW, phone="+14155550101")
    stopped = add_contact(store, NOW, phone="+14155550102")
    landline = add_contact(store, NOW, phone="+14155550103")
    nophone = add_contact(store, NOW, email="x@example.com")
    twilio.errors.update({"+14155550102": 21610, "+14155550103": 21614})
    rows = add_outbox(store, NOW, [
        {"contact_id": c, "channel": "sms", "params": {"body": "Hello {{ contact.phone }}"}}
        for c in (ok, stopped, landline, nophone)])
    report = asyncio.run(sms_dispatcher(store, clock, twilio).run_once())
    assert (report.sent, report.cancelled, report.dead) == (1, 3, 0)
    state = outbox_rows(store)
    (sent,) = twilio.sent
    assert state[rows[0]]["provider_ref"] == sent.sid
    assert sent.form["Body"] == "Hello +14155550101"
    assert state[rows[0]]["rendered"]["sms"]["segments"] == 1
    assert state[rows[0]]["rendered"]["sms"]["encoding"] == "GSM-7"
    assert "21610" in state[rows[1]]["last_error"]
    assert "no phone" in state[rows[3]]["last_error"]
    assert sms_consent(store, stopped) == {"marketing": "opted_out",
                                           "transactional": "opted_out"}
    assert sms_consent(store, ok) == {}


def sms_consent(store: Store, contact: int) -> dict[str, str]:
    k = schema.consents
    with store.read() as conn:
        return dict(conn.execute(sa.select(k.c.purpose, k.c.status).where(  # type: ignore[arg-type]
            k.c.contact_id == contact, k.c.channel == "sms")).all())


# --- callbacks ---------------------------------------------------------------------------


@pytest.fixture
def app_client(store: Store, store_url: str) -> Iterator[httpx.Client]:
    settings = Settings.load(database_url=store_url, secret_key="s" * 40, engine=False,
                             twilio_auth_token=AUTH_TOKEN, public_url=PUBLIC,
                             sms_help_text="Acme: reply STOP to end <texts> & more")
    with serving_app(create_app(settings, store=store, clock=FakeClock(NOW))) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        yield client


def post_signed(client: httpx.Client, path: str, form: dict[str, str], *,
                token: str = AUTH_TOKEN) -> Any:
    signature = twilio_signature(token, PUBLIC + path, list(form.items()))
    return client.post(path, content=urlencode(form), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})


def events(store: Store, name: str) -> list[dict[str, Any]]:
    e = schema.events
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(e).where(e.c.name == name)).mappings()]


def test_the_signature_matches_twilios_documented_example() -> None:
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"),
              ("Digits", "1234"), ("From", "+12349013030"), ("To", "+18005551212")]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signature_valid("12345", url, list(reversed(params)), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_valid("12345", url, params[:-1], "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_valid("12346", url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def test_status_callbacks_become_message_events(store: Store, twilio: TwilioServer,
                                                app_client: httpx.Client) -> None:
    contact = add_contact(store, NOW, phone="+14155550101")
    (row,) = add_outbox(store, NOW, [{"contact_id": contact, "channel": "sms",
                                      "params": {"body": "Hi"}}])
    asyncio.run(sms_dispatcher(store, FakeClock(NOW), twilio).run_once())
    sid = twilio.sent[0].sid
    for status in ("queued", "sent", "delivered", "delivered"):
        answer = post_signed(app_client, "/hooks/twilio/status",
                             {"MessageSid": sid, "MessageStatus": status,
                              "AccountSid": ACCOUNT_SID})
        assert answer.status_code == 200
    (_sent,) = events(store, "sms.sent")
    (delivered,) = events(store, "sms.delivered")  # the repeat is recorded once
    assert delivered["contact_id"] == contact
    assert delivered["properties"]["outbox_id"] == row
    assert delivered["properties"]["provider_ref"] == sid
    failed = post_signed(app_client, "/hooks/twilio/status",
                         {"MessageSid": sid, "MessageStatus": "undelivered",
                          "ErrorCode": "30005"})
    assert failed.json()["recorded"] is True
    assert events(store, "sms.undelivered")[0]["properties"]["error_code"] == "30005"


def test_unknown_sids_are_acknowledged_and_ignored(store: Store,
                                                   app_client: httpx.Client) -> None:
    answer = post_signed(app_client, "/hooks/twilio/status",
                         {"MessageSid": "SMnope", "MessageStatus": "delivered"})
    assert answer.status_code == 200
    assert answer.json()["recorded"] is False
    assert events(store, "sms.delivered") == []


@pytest.mark.parametrize("path", ["/hooks/twilio/status", "/hooks/twilio/inbound"])
def test_bad_or_missing_signatures_are_refused(store: Store, app_client: httpx.Client,
                                               path: str) -> None:
    contact = add_contact(store, NOW, phone="+14155550101")
    form = {"From": "+14155550101", "Body": "STOP", "MessageSid": "SMx",
            "MessageStatus": "delivered"}
    forged = post_signed(app_client, path, form, token="not-the-token")
    assert forged.status_code == 403
    assert "X-Twilio-Signature" in forged.json()["error"]["message"]
    unsigned = app_client.post(path, content=urlencode(form), headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 403
    signature = twilio_signature(AUTH_TOKEN, PUBLIC + path, list(form.items()))
    tampered = app_client.post(path, content=urlencode({**form, "Body": "START"}), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
    assert tampered.status_code == 403
    assert sms_consent(store, contact) == {}


@pytest.mark.parametrize(("body", "keyword"), [
    ("STOP", "STOP"), ("  stop\n", "STOP"), ("Unsubscribe", "UNSUBSCRIBE"), ("quit", "QUIT"),
    ("stopall", "STOPALL"), ("start", "START"), ("Yes", "YES"), ("help", "HELP"),
    ("stop please", None), ("STOP.", None), ("", None),
])
def test_keywords_are_the_whole_body(body: str, keyword: str | None) -> None:
    assert keyword_of(body) == keyword


def test_stop_start_and_help(store: Store, app_client: httpx.Client) -> None:
    contact = add_contact(store, NOW, phone="+14155550101")
    inbound = {"From": "+1 (415) 555-0101", "To": FROM, "AccountSid": ACCOUNT_SID}
    stop = post_signed(app_client, "/hooks/twilio/inbound",
                       {**inbound, "Body": " Stop ", "MessageSid": "SM1"})
    assert stop.status_code == 200
    assert stop.headers["content-type"].startswith("application/xml")
    assert stop.text.endswith("<Response></Response>")
    assert sms_consent(store, contact) == {"marketing": "opted_out",
                                           "transactional": "opted_out"}
    start = post_signed(app_client, "/hooks/twilio/inbound",
                        {**inbound, "Body": "START", "MessageSid": "SM2"})
    assert start.status_code == 200
    assert sms_consent(store, contact) == {"marketing": "opted_in",
                                           "transactional": "opted_in"}
    help_ = post_signed(app_client, "/hooks/twilio/inbound",
                        {**inbound, "Body": "help", "MessageSid": "SM3"})
    assert help_.text.endswith("<Response><Message>Acme: reply STOP to end &lt;texts&gt; "
                               "&amp; more</Message></Response>")
    chat = post_signed(app_client, "/hooks/twilio/inbound",
                       {**inbound, "Body": "stop sending me deals", "MessageSid": "SM4"})
    assert chat.text.endswith("<Response></Response>")
    received = events(store, "sms.received")
    assert [e["properties"]["keyword"] for e in received] == ["STOP", "START", "HELP", None]
    assert all(e["contact_id"] == contact for e in received)
    assert sms_consent(store, contact)["marketing"] == "opted_in"
    with store.read() as conn:
        sources = conn.execute(sa.select(schema.consent_history.c.source)).scalars().all()
    assert set(sources) == {"sms_keyword"}


def test_stop_from_an_unknown_number_suppresses_it(store: Store,
                                                   app_client: httpx.Client) -> None:
    form = {"From": "+14155550199", "To": FROM, "Body": "STOP", "MessageSid": "SM9"}
    assert post_signed(app_client, "/hooks/twilio/inbound", form).status_code == 200
    with store.read() as conn:
        assert is_suppressed(conn, "phone", ["+14155550199"]) == {"+14155550199"}
    post_signed(app_client, "/hooks/twilio/inbound", {**form, "Body": "unstop"})
    with store.read() as conn:
        assert is_suppressed(conn, "phone", ["+14155550199"]) == set()


def test_twiml_escapes_the_reply() -> None:
    assert twiml("a<b>&\"c\"") == ('<?xml version="1.0" encoding="UTF-8"?><Response>'
                                   '<Message>a&lt;b&gt;&amp;"c"</Message></Response>')


def test_webhook_endpoints_api(store: Store, app_client: httpx.Client) -> None:
    """The messaging router's admin side: save (SSRF-checked), list without secrets, rotate,
    remove."""
    with store.begin() as conn:
        _, admin = create_key(conn, "s" * 40, KeyKind.ADMIN, "test admin", NOW)
    auth = {"Authorization": f"Bearer {admin}"}
    refused = app_client.put("/api/webhook-endpoints/meta", headers=auth,
                             json={"url": "http://169.254.169.254/latest/meta-data/"})
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "url"
    assert "metadata" in refused.json()["error"]["message"]
    created = app_client.put("/api/webhook-endpoints/crm", headers=auth,
                             json={"url": "http://[::ffff:8.8.8.8]/hook"})
    assert created.status_code == 201
    assert created.json()["secret"].startswith("whsec_")
    listed = app_client.get("/api/webhook-endpoints", headers=auth).json()["items"]
    assert [e["key"] for e in listed] == ["crm"]
    assert "secret" not in listed[0]
    rotated = app_client.post("/api/webhook-endpoints/crm/rotate", headers=auth, json={})
    assert rotated.json()["secret"] not in (None, created.json()["secret"])
    assert app_client.get("/api/webhook-endpoints/crm").status_code == 401
    assert app_client.delete("/api/webhook-endpoints/crm", headers=auth).status_code == 204
    assert app_client.delete("/api/webhook-endpoints/crm", headers=auth).status_code == 404
