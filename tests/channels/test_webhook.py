"""The webhook channel against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from cadenza.channels import ChannelError, Message, Recipient, WebhookOptions
from cadenza.channels.endpoints import EndpointService
from cadenza.channels.registry import check_params
from cadenza.channels.signing import new_secret, verify
from cadenza.channels.ssrf import SsrfGuard, parse_networks
from cadenza.channels.templates import TemplateService
from cadenza.channels.webhook import WebhookChannel, retry_after_ms
from cadenza.clock import FakeClock
from cadenza.errors import ValidationFailed
from cadenza.store import Store
from tests.channels.servers import HttpReceiver
from tests.channels.support import (
    LOOPBACK,
    add_contact,
    add_outbox,
    make_dispatcher,
    outbox_rows,
    receiver,
)

__all__ = ["receiver"]


def hooks(options: WebhookOptions | None = None, **kwargs: Any) -> WebhookChannel:
    """A webhook channel allowed to reach the loopback receiver."""
    options = options or WebhookOptions()
    return WebhookChannel(WebhookOptions(timeout_s=options.timeout_s,
                                         max_response_bytes=options.max_response_bytes,
                                         signing_secret=options.signing_secret,
                                         allow_networks=LOOPBACK), **kwargs)


def message(url: str, key: str = "k-1", **params: Any) -> Message:
    return Message(outbox_id=1, key=key, channel="webhook",
                   contact=Recipient(5, email="ada@example.com", user_id="u-5"),
                   params={"url": url, **params}, content={"subject": "S", "body": "B"},
                   at_ms=0, journey="onboarding", step="notify")


def send(channel: WebhookChannel, msg: Message) -> str | None:
    async def go() -> str | None:
        try:
            return (await channel.send(msg)).provider_ref
        finally:
            await channel.close()

    return asyncio.run(go())


def test_posts_json_with_the_idempotency_key(receiver: HttpReceiver) -> None:
    ref = send(hooks(), message(receiver.url + "/hook", data={"plan": "pro"},
                                         headers={"X-Team": "growth"}))
    assert ref == "http:200"
    (got,) = receiver.requests
    assert got.key == "k-1"
    assert got.headers["X-Team"] == "growth"
    assert got.body == {"id": "k-1", "journey": "onboarding", "step": "notify",
                        "contact": {"id": 5, "email": "ada@example.com", "phone": None,
                                    "user_id": "u-5"},
                        "data": {"plan": "pro"}, "subject": "S", "body": "B"}


@pytest.mark.parametrize(("status", "retryable"), [
    (503, True), (500, True), (429, True), (408, True),
    (400, False), (404, False), (410, False), (301, False),
])
def test_status_decides_retry(receiver: HttpReceiver, status: int, retryable: bool) -> None:
    receiver.always = status
    with pytest.raises(ChannelError) as caught:
        send(hooks(), message(receiver.url))
    assert caught.value.retryable is retryable
    assert f"HTTP {status}" in caught.value.message


def test_timeouts_and_refused_connections_are_retryable(receiver: HttpReceiver) -> None:
    channel = hooks(WebhookOptions(timeout_s=0.2))
    with pytest.raises(ChannelError, match="timed out") as caught:
        send(channel, message(receiver.url + "/slow"))
    assert caught.value.retryable
    from tests.channels.servers import free_port

    with pytest.raises(ChannelError) as refused:
        send(hooks(), message(f"http://127.0.0.1:{free_port()}/"))
    assert refused.value.retryable


def test_reads_at_most_the_response_cap(receiver: HttpReceiver) -> None:
    started = time.monotonic()
    assert send(hooks(WebhookOptions(max_response_bytes=1024)),
                message(receiver.url + "/big")) == "http:200"
    assert time.monotonic() - started < 5


def test_the_url_guard_runs_before_any_connection(receiver: HttpReceiver) -> None:
    with pytest.raises(ChannelError, match="loopback") as caught:
        send(WebhookChannel(), message(receiver.url))  # the default guard: public only
    assert not caught.value.retryable
    assert receiver.requests == []
    with pytest.raises(ChannelError, match="http"):
        send(hooks(), message("ftp://example.com/x"))


@pytest.mark.parametrize(("params", "field"), [
    ({}, "send.url"),
    ({"endpoint": "Not A Key"}, "send.endpoint"),
    ({"url": "http://%31%32%37.0.0.1/"}, "send.url"),
    ({"url": "https://example.com", "headers": {"webhook-signature": "v1,x"}},
     "send.headers.webhook-signature"),
    ({"url": "https://example.com", "headers": {"X-A": "a\r\nX-B: b"}}, "send.headers.X-A"),
    ({"url": "ftp://example.com"}, "send.url"),
    ({"url": "http://"}, "send.url"),
    ({"url": "https://example.com", "headers": {"Idempotency-Key": "x"}},
     "send.headers.Idempotency-Key"),
    ({"url": "https://example.com", "headers": ["x"]}, "send.headers"),
    ({"url": "https://example.com", "data": 3}, "send.data"),
    ({"url": "https://example.com", "ulr": "x"}, "send.ulr"),
    ({"url": "https://example.com", "body": 7}, "send.body"),
])
def test_publish_time_checks_name_the_parameter(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_params("webhook", params, "send")
    assert caught.value.field == field


def test_a_typo_gets_a_suggestion() -> None:
    with pytest.raises(ValidationFailed, match="did you mean 'url'"):
        check_params("webhook", {"url": "https://example.com", "ulr": "x"}, "send")
    check_params("webhook", {"url": "https://example.com/hook", "purpose": "marketing"}, "s")


def test_publish_accepts_an_endpoint_alone_or_with_a_url() -> None:
    check_params("webhook", {"endpoint": "crm-sync"}, "s")
    check_params("webhook", {"endpoint": "crm-sync", "url": "https://example.com/x"}, "s")


def test_inline_urls_are_signed_with_the_settings_secret(receiver: HttpReceiver) -> None:
    secret = new_secret()
    msg = message(receiver.url + "/hook", key="k-signed")
    assert send(hooks(WebhookOptions(signing_secret=secret)), msg) == "http:200"
    (got,) = receiver.requests
    assert got.headers["webhook-id"] == "k-signed"
    assert got.headers["webhook-timestamp"] == "0"  # the message's (injected) time
    assert got.headers["webhook-signature"].startswith("v1,")
    unsigned = message(receiver.url + "/plain")
    send(hooks(), unsigned)
    assert "webhook-signature" not in receiver.requests[1].headers


def test_a_saved_endpoint_signs_with_its_secret(store: Store, receiver: HttpReceiver) -> None:
    clock = FakeClock()
    guard = SsrfGuard(parse_networks(LOOPBACK))
    service = EndpointService(store, clock, guard)
    saved = asyncio.run(service.save("crm", receiver.url + "/crm", {"X-Team": "growth"}))
    assert saved.secret is not None
    at = int(time.time() * 1000)
    msg = Message(outbox_id=1, key="k-ep", channel="webhook", contact=Recipient(5),
                  params={"endpoint": "crm", "headers": {"X-Step": "1"}}, content={},
                  at_ms=at)
    channel = WebhookChannel(WebhookOptions(allow_networks=LOOPBACK), store=store)
    assert send(channel, msg) == "http:200"
    (got,) = receiver.requests
    assert got.path == "/crm"
    assert got.headers["X-Team"] == "growth"
    assert got.headers["X-Step"] == "1"
    raw = orjson.dumps(got.body)
    verify(saved.secret, raw, got.headers)  # as a receiver would, with the reference library
    rotated = service.rotate("crm")
    assert rotated.secret is not None
    send(WebhookChannel(WebhookOptions(allow_networks=LOOPBACK), store=store), msg)
    verify(rotated.secret, orjson.dumps(receiver.requests[1].body), receiver.requests[1].headers)


def test_a_missing_endpoint_is_not_retried(store: Store) -> None:
    msg = Message(outbox_id=1, key="k", channel="webhook", contact=Recipient(5),
                  params={"endpoint": "gone"}, content={}, at_ms=0)
    with pytest.raises(ChannelError, match="endpoint 'gone' does not exist") as caught:
        send(WebhookChannel(store=store), msg)
    assert not caught.value.retryable


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_ms("30", 1_000) == 31_000
    assert retry_after_ms("Thu, 01 Jan 1970 00:01:00 GMT", 1_000) == 60_000
    assert retry_after_ms("999999", 0) == 3_600_000  # capped at an hour
    assert retry_after_ms("soon", 0) is None
    assert retry_after_ms(None, 0) is None


def test_a_webhook_that_always_answers_4xx_is_dead_lettered_while_the_rest_flow(
        store: Store, receiver: HttpReceiver) -> None:
    """Poison: one endpoint refuses everything with 422; the batch around it is delivered."""
    clock = FakeClock(1_000_000)
    contacts = [add_contact(store, clock.now_ms(), email=f"c{i}@example.com") for i in range(6)]
    rows = add_outbox(store, clock.now_ms(), [
        {"contact_id": c, "channel": "webhook", "key": f"hook-{i}",
         "params": {"url": receiver.url + ("/poison" if i == 2 else "/ok")}}
        for i, c in enumerate(contacts)])
    receiver.plan["hook-2"] = [422] * 10
    dispatcher = make_dispatcher(store, clock)
    report = asyncio.run(dispatcher.run_once())
    asyncio.run(dispatcher.close())
    assert (report.sent, report.dead, report.retried) == (5, 1, 0)
    state = outbox_rows(store)
    assert state[rows[2]]["status"] == "dead"
    assert "HTTP 422" in state[rows[2]]["last_error"]
    assert state[rows[2]]["attempts"] == 1  # a 4xx is not worth another try
    assert all(state[r]["status"] == "sent" for i, r in enumerate(rows) if i != 2)
    assert set(receiver.effects) == {f"hook-{i}" for i in range(6) if i != 2}


def test_a_webhook_template_defines_the_whole_body(store: Store,
                                                   receiver: HttpReceiver) -> None:
    """A webhook-body template is posted as rendered (its own shape, values via tojson),
    with the same idempotency key; no Cadenza envelope around it."""
    clock = FakeClock(1_000_000)
    TemplateService(store, clock).save(
        "slack", "webhook", "",
        '{"text": {{ ("Signup: " ~ contact.attributes.name) | tojson }}, "n": 2}')
    contact = add_contact(store, clock.now_ms(), email="q@example.com",
                          attributes={"name": 'Zoë "Q" <b>'})
    (row,) = add_outbox(store, clock.now_ms(), [
        {"contact_id": contact, "channel": "webhook", "key": "tpl-1", "template": "slack",
         "params": {"url": receiver.url + "/slack"}}])
    dispatcher = make_dispatcher(store, clock)
    report = asyncio.run(dispatcher.run_once())
    asyncio.run(dispatcher.close())
    assert report.sent == 1, outbox_rows(store)[row]
    (got,) = receiver.requests
    assert got.key == "tpl-1"
    assert got.body == {"text": 'Signup: Zoë "Q" <b>', "n": 2}

