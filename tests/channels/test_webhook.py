"""The webhook channel against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from cadenza.channels import ChannelError, Message, Recipient, WebhookOptions
from cadenza.channels.registry import check_params
from cadenza.channels.webhook import WebhookChannel
from cadenza.errors import ValidationFailed
from tests.channels.servers import HttpReceiver
from tests.channels.support import receiver

__all__ = ["receiver"]


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
    ref = send(WebhookChannel(), message(receiver.url + "/hook", data={"plan": "pro"},
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
        send(WebhookChannel(), message(receiver.url))
    assert caught.value.retryable is retryable
    assert f"HTTP {status}" in caught.value.message


def test_timeouts_and_refused_connections_are_retryable(receiver: HttpReceiver) -> None:
    channel = WebhookChannel(WebhookOptions(timeout_s=0.2))
    with pytest.raises(ChannelError, match="timed out") as caught:
        send(channel, message(receiver.url + "/slow"))
    assert caught.value.retryable
    from tests.channels.servers import free_port

    with pytest.raises(ChannelError) as refused:
        send(WebhookChannel(), message(f"http://127.0.0.1:{free_port()}/"))
    assert refused.value.retryable


def test_reads_at_most_the_response_cap(receiver: HttpReceiver) -> None:
    started = time.monotonic()
    assert send(WebhookChannel(WebhookOptions(max_response_bytes=1024)),
                message(receiver.url + "/big")) == "http:200"
    assert time.monotonic() - started < 5


def test_the_url_guard_runs_before_any_connection(receiver: HttpReceiver) -> None:
    def refuse_loopback(url: httpx.URL) -> None:
        if url.host == "127.0.0.1":
            raise ChannelError("webhook", "loopback addresses are not allowed",
                               retryable=False)

    with pytest.raises(ChannelError, match="loopback") as caught:
        send(WebhookChannel(guard=refuse_loopback), message(receiver.url))
    assert not caught.value.retryable
    assert receiver.requests == []
    with pytest.raises(ChannelError, match="http"):
        send(WebhookChannel(), message("ftp://example.com/x"))


@pytest.mark.parametrize(("params", "field"), [
    ({}, "send.url"),
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
