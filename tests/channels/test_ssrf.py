"""The SSRF guard: a corpus of internal targets in every spelling, refused when an endpoint is
saved and again when a webhook is sent; DNS rebinding, redirects and the allow-list."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.channels import ChannelError, Message, Recipient
from cadenza.channels.endpoints import EndpointService
from cadenza.channels.ssrf import (
    SsrfGuard,
    address_refusal,
    parse_ipv4_literal,
    parse_networks,
)
from cadenza.channels.webhook import WebhookChannel
from cadenza.clock import FakeClock
from cadenza.errors import ValidationFailed
from cadenza.store import Store
from tests.channels.servers import HttpReceiver
from tests.channels.support import LOOPBACK, receiver

__all__ = ["receiver"]

PUBLIC_IP = "93.184.216.34"
NAMES: dict[str, list[str]] = {
    "public.example": [PUBLIC_IP],
    "loop.example": ["127.0.0.1"],
    "meta.example": ["169.254.169.254"],
    "private.example": ["10.1.2.3"],
    "mixed.example": [PUBLIC_IP, "192.168.0.10"],
    "v6loop.example": ["::1"],
    "mapped.example": ["::ffff:169.254.169.254"],
    "ula.example": ["fd00:ec2::254"],
    "cgnat.example": ["100.64.0.7"],
    "sixtofour.example": ["2002:a9fe:a9fe::1"],
}


class FakeResolver:
    """Answers from a table (or a sequence of answers per name); counts lookups."""

    def __init__(self, table: dict[str, list[str]] | None = None,
                 sequence: dict[str, list[list[str]]] | None = None) -> None:
        self.table = dict(NAMES if table is None else table)
        self.sequence = sequence or {}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        if host in self.sequence:
            answers = self.sequence[host]
            return answers.pop(0) if len(answers) > 1 else answers[0]
        if host not in self.table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return self.table[host]


def corpus(port: int) -> list[str]:
    """Internal targets in every spelling; loopback ones point at the live receiver, so a
    guard that let them through would be caught by the receiver seeing a request."""
    p = f":{port}"
    return [
        f"http://127.0.0.1{p}/", f"http://127.1{p}/", f"http://127.0.1{p}/",
        f"http://2130706433{p}/", f"http://0x7f000001{p}/", f"http://0x7f.0.0.1{p}/",
        f"http://0x7f.1{p}/", f"http://0177.0.0.1{p}/", f"http://017700000001{p}/",
        f"http://[::1]{p}/", f"http://[::ffff:127.0.0.1]{p}/", f"http://[::ffff:7f00:1]{p}/",
        f"http://[0:0:0:0:0:ffff:127.0.0.1]{p}/", f"http://[::127.0.0.1]{p}/",
        f"http://127.0.0.1.{p}/", f"http://localhost{p}/", f"http://LOCALHOST.{p}/",
        f"http://app.localhost{p}/", f"http://%31%32%37.0.0.1{p}/",
        f"http://good.example@127.0.0.1{p}/", f"http://user:pw@[::1]{p}/",
        "http://169.254.169.254/latest/meta-data/", "http://169.254.169.254./",
        "http://2852039166/", "http://0xa9fea9fe/", "http://0251.0376.0251.0376/",
        "http://[::ffff:a9fe:a9fe]/", "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/", "http://metadata/",
        "http://instance-data/latest/", "http://10.0.0.1/", "http://172.16.5.4/",
        "http://172.31.255.255/", "http://192.168.1.1/", "http://100.64.0.1/",
        "http://0.0.0.0/", "http://0/", "http://[::]/", "http://224.0.0.1/",
        "http://255.255.255.255/", "http://240.0.0.1/", "http://[fe80::1%25eth0]/",
        "http://[fe80::1]/", "http://[fc00::1]/", "http://[ff02::1]/",
        "http://[2002:7f00:1::]/", "http://[2002:a9fe:a9fe::]/", "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://loop.example/", "http://meta.example/", "http://private.example/",
        "http://mixed.example/", "http://v6loop.example/", "http://mapped.example/",
        "http://ula.example/", "http://cgnat.example/", "http://sixtofour.example/",
        "ftp://public.example/", "file:///etc/passwd", "gopher://public.example/",
        "http:///nohost",
    ]


def hook_message(url: str) -> Message:
    return Message(outbox_id=1, key="k-1", channel="webhook", contact=Recipient(5),
                   params={"url": url}, content={}, at_ms=0, journey="j", step="s")


def send(channel: WebhookChannel, url: str) -> str | None:
    async def go() -> str | None:
        try:
            return (await channel.send(hook_message(url))).provider_ref
        finally:
            await channel.close()

    return asyncio.run(go())


def test_the_corpus_is_refused_when_sent(receiver: HttpReceiver) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    resolver = FakeResolver()
    for url in corpus(port):
        channel = WebhookChannel(guard=SsrfGuard(resolver=resolver))
        with pytest.raises(ChannelError) as caught:
            send(channel, url)
        assert not caught.value.retryable, url
        assert "refused" in caught.value.message, url
    assert receiver.requests == []


def test_the_corpus_is_refused_when_saved(store: Store, receiver: HttpReceiver) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    service = EndpointService(store, FakeClock(), SsrfGuard(resolver=FakeResolver()))
    for url in corpus(port):
        with pytest.raises(ValidationFailed) as caught:
            asyncio.run(service.save("hook", url))
        assert caught.value.field == "url", url
    assert service.all() == []


@pytest.mark.parametrize(("url", "reason"), [
    ("http://169.254.169.254/", "metadata"),
    ("http://2852039166/", "metadata"),
    ("http://[fd00:ec2::254]/", "AWS instance metadata"),
    ("http://127.1/", "loopback"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped IPv6 address carrying 127.0.0.1"),
    ("http://[64:ff9b::a00:1]/", "NAT64 IPv6 address carrying 10.0.0.1"),
    ("http://[2002:c0a8:101::]/", "6to4 IPv6 address carrying 192.168.1.1"),
    ("http://metadata.google.internal/", "internal host name"),
    ("http://100.64.1.1/", "carrier-grade NAT"),
    ("http://mixed.example/", "'mixed.example' resolves to 192.168.0.10"),
])
def test_refusals_say_why(store: Store, url: str, reason: str) -> None:
    service = EndpointService(store, FakeClock(), SsrfGuard(resolver=FakeResolver()))
    with pytest.raises(ValidationFailed, match=reason):
        asyncio.run(service.save("hook", url))


@pytest.mark.parametrize("address", ["8.8.8.8", PUBLIC_IP, "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_a_public_endpoint_saves_with_a_secret_and_lists_without_it(store: Store) -> None:
    service = EndpointService(store, FakeClock(), SsrfGuard(resolver=FakeResolver()))
    saved = asyncio.run(service.save("crm", "https://public.example/hooks",
                                     {"X-Team": "growth"}))
    assert saved.created
    assert saved.secret
    assert saved.secret.startswith("whsec_")
    (listed,) = service.all()
    assert "secret" not in listed.to_dict()
    assert listed.to_dict()["signed"] is True
    again = asyncio.run(service.save("crm", "https://public.example/v2"))
    assert not again.created
    assert again.secret is None
    assert service.get("crm").secret == saved.secret  # kept on update
    rotated = service.rotate("crm")
    assert rotated.secret != saved.secret
    assert service.get("crm").secret == rotated.secret
    service.remove("crm")
    assert service.all() == []


def test_an_unresolvable_name_is_refused_at_save(store: Store) -> None:
    service = EndpointService(store, FakeClock(), SsrfGuard(resolver=FakeResolver()))
    with pytest.raises(ValidationFailed, match="does not resolve"):
        asyncio.run(service.save("hook", "https://nowhere.example/"))


def test_allow_listed_loopback_works_and_keeps_the_host_header(receiver: HttpReceiver) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    guard = SsrfGuard(parse_networks(LOOPBACK), FakeResolver())
    assert send(WebhookChannel(guard=guard), receiver.url + "/direct") == "http:200"
    assert send(WebhookChannel(guard=guard), f"http://loop.example:{port}/named") == "http:200"
    assert [r.headers["Host"] for r in receiver.requests] == [
        f"127.0.0.1:{port}", f"loop.example:{port}"]
    # The allow-list opens exactly what it names.
    with pytest.raises(ChannelError, match="metadata"):
        send(WebhookChannel(guard=guard), "http://meta.example/")


def test_a_rebinding_resolver_cannot_win(receiver: HttpReceiver) -> None:
    """First answer allowed, every later one internal: the request goes to the address that
    was checked (one lookup per connection), and the next connection is refused."""
    port = int(receiver.url.rsplit(":", 1)[1])
    resolver = FakeResolver(sequence={"rebind.example": [["127.0.0.1"], ["169.254.169.254"]]})
    guard = SsrfGuard(parse_networks(LOOPBACK), resolver)
    url = f"http://rebind.example:{port}/"
    assert send(WebhookChannel(guard=guard), url) == "http:200"
    assert resolver.calls == ["rebind.example"]
    with pytest.raises(ChannelError, match=r"169\.254\.169\.254"):
        send(WebhookChannel(guard=guard), url)
    assert len(receiver.requests) == 1


def test_a_rebinding_resolver_is_caught_between_save_and_send(store: Store) -> None:
    resolver = FakeResolver(sequence={"rebind.example": [[PUBLIC_IP], ["127.0.0.1"]]})
    guard = SsrfGuard(resolver=resolver)
    service = EndpointService(store, FakeClock(), guard)
    asyncio.run(service.save("hook", "http://rebind.example/"))  # public at save time
    with pytest.raises(ChannelError, match="loopback"):
        send(WebhookChannel(guard=guard), "http://rebind.example/")


@pytest.fixture
def redirector(receiver: HttpReceiver) -> Iterator[str]:
    """A server that answers every POST with a redirect to the loopback receiver."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(307)
            self.send_header("Location", receiver.url + "/internal")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_inward_is_not_followed(receiver: HttpReceiver, redirector: str) -> None:
    guard = SsrfGuard(parse_networks(LOOPBACK), FakeResolver())
    with pytest.raises(ChannelError, match="redirects are not followed") as caught:
        send(WebhookChannel(guard=guard), redirector + "/hook")
    assert not caught.value.retryable
    assert receiver.requests == []


def test_bad_allow_list_entries_are_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])


@given(st.lists(st.one_of(
    st.integers(min_value=0, max_value=2**32 + 5).map(str),
    st.integers(min_value=0, max_value=2**32 + 5).map(hex),
    st.integers(min_value=0, max_value=2**32 + 5).map(lambda n: "0" + oct(n)[2:]),
    st.sampled_from(["0", "00", "0x", "08", "09", "0x1g", ""])), min_size=1, max_size=5))
def test_literals_parse_as_the_c_library_parses_them(parts: list[str]) -> None:
    text = ".".join(parts)
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        expected = None
    assert parse_ipv4_literal(text) == expected
