"""SendGrid and Postmark as providers of the `email` channel, against loopback servers that
validate requests and answer as the documented APIs do (tests/channels/esp_servers.py)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cadenza.channels import (
    ChannelDeps,
    ChannelError,
    ChannelRegistry,
    Message,
    Recipient,
    SmtpOptions,
    TemplateService,
    Undeliverable,
)
from cadenza.channels.email import create as create_email
from cadenza.channels.email import message_id
from cadenza.channels.esp import EspChannel, PostmarkChannel, SendGridChannel
from cadenza.clock import FakeClock
from cadenza.engine.dispatch import Dispatcher, DispatchReport
from cadenza.engine.retry import RetryPolicy
from cadenza.errors import ConfigError
from cadenza.store import Store
from tests.channels.esp_servers import POSTMARK_TOKEN, SENDGRID_KEY, EspServer, esp_server
from tests.channels.support import add_contact, add_outbox, outbox_rows

AT = 1_767_225_600_000
LINKS = {"one_click": "https://mail.example.com/u/tok", "unsubscribe":
         "https://mail.example.com/p/tok"}


class Settings:
    """The settings an email channel reads (a plain object, not the environment)."""

    def __init__(self, provider: str, url: str, **more: Any) -> None:
        self.email_provider = provider
        self.sendgrid_api_key = SENDGRID_KEY
        self.sendgrid_base_url = url
        self.postmark_server_token = POSTMARK_TOKEN
        self.postmark_base_url = url
        self.esp_timeout_s = 5.0
        for name, value in more.items():
            setattr(self, name, value)


@pytest.fixture
def esp() -> Iterator[EspServer]:
    with esp_server() as server:
        yield server


def message(key: str, to: str = "ada@example.com", *, purpose: str = "marketing",
            **content: Any) -> Message:
    return Message(outbox_id=7, key=key, channel="email", contact=Recipient(3, email=to),
                   params={}, content={"subject": "Welcome", "body": "Hello Ada", **content},
                   at_ms=AT, address_kind="email", address=to, purpose=purpose, links=LINKS)


def channel(store: Store, provider: str, url: str, clock: FakeClock | None = None,
            **more: Any) -> EspChannel:
    deps = ChannelDeps(store, clock or FakeClock(AT), settings=Settings(provider, url, **more),
                       smtp=SmtpOptions(from_address="Zoë News <news@example.com>"))
    chan = create_email(deps)
    assert isinstance(chan, EspChannel)
    return chan


def send(chan: EspChannel, *messages: Message) -> list[str | None]:
    async def go() -> list[str | None]:
        try:
            return [(await chan.send(m)).provider_ref for m in messages]
        finally:
            await chan.close()

    return asyncio.run(go())


# --- SendGrid ---------------------------------------------------------------------------


def test_sendgrid_accepts_and_the_reference_is_its_message_id(esp: EspServer,
                                                               store: Store) -> None:
    chan = channel(store, "sendgrid", esp.url)
    assert isinstance(chan, SendGridChannel)
    refs = send(chan, message("k-1", body="<p>Hi</p>", html=True, text="Hi"))
    ((ref, body),) = esp.accepted
    assert refs == [ref]
    request = esp.requests[0]
    assert request["headers"]["authorization"] == f"Bearer {SENDGRID_KEY}"
    assert body["personalizations"] == [{"to": [{"email": "ada@example.com"}],
                                         "custom_args": {"cadenza_key": "k-1",
                                                         "outbox_id": "7"}}]
    assert body["from"] == {"email": "news@example.com", "name": "Zoë News"}
    assert body["content"] == [{"type": "text/plain", "value": "Hi"},
                               {"type": "text/html", "value": "<p>Hi</p>"}]
    assert body["headers"]["List-Unsubscribe"] == "<https://mail.example.com/u/tok>"
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["headers"]["X-Cadenza-Message-ID"] == message_id("k-1")


def test_sendgrid_refusals(esp: EspServer, store: Store) -> None:
    esp.plan = [(400, {}, {"errors": [{"message": "The subject is required.",
                                       "field": "subject"}]}),
                (413, {}, {"errors": [{"message": "Payload too large", "field": None}]}),
                (503, {}, None)]
    chan = channel(store, "sendgrid", esp.url)
    outcomes = []
    for key in ("k-400", "k-413", "k-503"):
        with pytest.raises(ChannelError) as caught:
            send(chan, message(key))
        outcomes.append((caught.value.retryable, caught.value.message))
    assert outcomes[0] == (False, "email: sendgrid 400: subject: The subject is required.")
    assert not outcomes[1][0]
    assert "too large" in outcomes[1][1]
    assert outcomes[2][0]
    assert esp.accepted == []


def test_sendgrid_wrong_key_names_the_setting(esp: EspServer, store: Store) -> None:
    chan = channel(store, "sendgrid", esp.url, sendgrid_api_key="SG.wrong")
    with pytest.raises(ChannelError, match="CADENZA_SENDGRID_API_KEY") as caught:
        send(chan, message("k-401"))
    assert not caught.value.retryable
    assert "authorization grant is invalid" in caught.value.message


def test_sendgrid_validation_is_real(esp: EspServer, store: Store) -> None:
    # The server's own validation: a reserved header is refused with the documented body.
    chan = channel(store, "sendgrid", esp.url)
    from cadenza.channels import esp as esp_module

    original = esp_module._extra_headers
    esp_module._extra_headers = lambda parts: {**original(parts), "Subject": "x"}
    try:
        with pytest.raises(ChannelError, match=r"headers\.Subject: The header Subject is "
                           r"reserved") as caught:
            send(chan, message("k-reserved"))
    finally:
        esp_module._extra_headers = original
    assert not caught.value.retryable


def test_a_429_pauses_every_send_of_the_provider(esp: EspServer, store: Store) -> None:
    esp.plan = [(429, {"Retry-After": "1", "X-RateLimit-Reset": str(AT // 1000 + 1)},
                 {"errors": [{"message": "too many requests"}]})]
    clock = FakeClock(AT)
    chan = channel(store, "sendgrid", esp.url, clock)

    async def go() -> tuple[ChannelError, float, str | None]:
        try:
            with pytest.raises(ChannelError) as caught:
                await chan.send(message("k-429"))
            started = time.monotonic()
            result = await chan.send(message("k-next", "b@example.com"))
            return caught.value, time.monotonic() - started, result.provider_ref
        finally:
            await chan.close()

    error, waited, ref = asyncio.run(go())
    assert error.retryable
    assert error.retry_after_ms == AT + 1000
    assert waited >= 0.9  # the next send waited for the pause instead of failing too
    assert ref == esp.accepted[0][0]
    assert len(esp.requests) == 2


# --- Postmark ---------------------------------------------------------------------------


def test_postmark_accepts_on_the_stream_of_the_purpose(esp: EspServer, store: Store) -> None:
    chan = channel(store, "postmark", esp.url)
    assert isinstance(chan, PostmarkChannel)
    refs = send(chan, message("k-m", body="<p>News</p>", html=True, text="News"),
                message("k-t", "tom@example.com", purpose="transactional"))
    (ref_m, marketing), (ref_t, transactional) = esp.accepted
    assert refs == [ref_m, ref_t]
    assert esp.requests[0]["headers"]["x-postmark-server-token"] == POSTMARK_TOKEN
    assert marketing["MessageStream"] == "broadcast"
    assert transactional["MessageStream"] == "outbound"
    assert marketing["From"] == '"Zoë News" <news@example.com>'
    assert marketing["HtmlBody"] == "<p>News</p>"
    assert marketing["TextBody"] == "News"
    assert marketing["Metadata"] == {"cadenza_key": "k-m", "outbox_id": "7"}
    names = {h["Name"]: h["Value"] for h in marketing["Headers"]}
    assert names["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "List-Unsubscribe" not in {h["Name"] for h in transactional["Headers"]}


def test_postmark_refusals(esp: EspServer, store: Store) -> None:
    esp.inactive.add("gone@example.com")
    chan = channel(store, "postmark", esp.url, postmark_broadcast_stream="newsletters")
    with pytest.raises(ChannelError, match="ErrorCode 1235") as stream:
        send(chan, message("k-stream"))
    assert not stream.value.retryable
    chan = channel(store, "postmark", esp.url)
    with pytest.raises(Undeliverable, match="inactive"):
        send(chan, message("k-gone", "gone@example.com"))
    esp.plan = [(429, {}, {"ErrorCode": 429, "Message": "Rate limit exceeded"}),
                (500, {}, {"ErrorCode": 0, "Message": "Internal server error"})]
    for key in ("k-429", "k-500"):
        with pytest.raises(ChannelError) as caught:
            send(chan, message(key))
        assert caught.value.retryable
    wrong = channel(store, "postmark", esp.url, postmark_server_token="nope")
    with pytest.raises(ChannelError, match="CADENZA_POSTMARK_SERVER_TOKEN") as token:
        send(wrong, message("k-401"))
    assert not token.value.retryable
    assert esp.accepted == []


# --- selection and the dispatcher ---------------------------------------------------------


def test_the_provider_is_chosen_by_settings_and_checked(esp: EspServer, store: Store) -> None:
    with pytest.raises(ConfigError, match="CADENZA_SENDGRID_API_KEY"):
        channel(store, "sendgrid", esp.url, sendgrid_api_key=None)
    with pytest.raises(ConfigError, match="CADENZA_POSTMARK_BASE_URL"):
        channel(store, "postmark", "ftp://nowhere")
    with pytest.raises(ConfigError, match="CADENZA_EMAIL_PROVIDER"):
        channel(store, "mailchimp", esp.url)


def test_dispatcher_records_the_esp_reference_for_feedback(esp: EspServer, store: Store,
                                                           clock: FakeClock) -> None:
    now = clock.now_ms()
    TemplateService(store, clock).save("hi", "email", "Hi {{ contact.attributes.name }}",
                                       "<p>Hello {{ contact.attributes.name }}</p>")
    contacts = [add_contact(store, now, email=f"p{i}@example.com",
                            attributes={"name": f"P{i}"}) for i in range(3)]
    rows = add_outbox(store, now, [{"contact_id": c, "channel": "email", "template": "hi",
                                    "key": f"esp-{c}"} for c in contacts])
    deps = ChannelDeps(store, clock, settings=Settings("sendgrid", esp.url))
    dispatcher = Dispatcher(store, clock, ChannelRegistry.build(deps, ["email"]),
                            TemplateService(store, clock), RetryPolicy(), random.Random(1))

    async def go() -> DispatchReport:
        try:
            return await dispatcher.run_once()
        finally:
            await dispatcher.close()

    assert asyncio.run(go()) == DispatchReport(claimed=3, sent=3)
    refs = {body["personalizations"][0]["custom_args"]["cadenza_key"]: ref
            for ref, body in esp.accepted}
    state = outbox_rows(store)
    assert {state[r]["idempotency_key"]: state[r]["provider_ref"] for r in rows} == refs
