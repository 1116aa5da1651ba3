"""SMTP in depth against real aiosmtpd servers on loopback: STARTTLS, implicit TLS and AUTH
with a certificate made for the test, the connection pool, list headers (RFC 8058), sender
identities, multipart bodies, DKIM, and header injection checked at the receiving server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dkim
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cadenza.channels import ChannelError, Message, Recipient, SmtpOptions
from cadenza.channels.dkim import DkimSigner, dns_record
from cadenza.channels.email import EmailChannel, message_id
from cadenza.channels.email_parts import SenderBook
from cadenza.channels.smtp_pool import SmtpPool
from cadenza.clock import FakeClock
from cadenza.store import Store, schema
from tests.channels.servers import SmtpSink, free_port
from tests.channels.smtp_servers import (
    PASSWORD,
    USER,
    Certificate,
    RawSink,
    _Controller,
    make_certificate,
    raw_sink,
    secure_sink,
)
from tests.channels.support import smtp

__all__ = ["smtp"]
# The implicit-TLS server offers AUTH without STARTTLS (its every connection is TLS already);
# aiosmtpd warns about that configuration when it builds each session.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning")
T = TypeVar("T")
AT = 1_767_225_600_000


def message(key: str, to: str = "ada@example.com", *, purpose: str = "marketing",
            links: dict[str, str] | None = None, sender: str | None = None,
            params: dict[str, Any] | None = None, **content: Any) -> Message:
    return Message(outbox_id=1, key=key, channel="email", contact=Recipient(3, email=to),
                   params=params or {},
                   content={"subject": "Welcome", "body": "Hello Ada", **content},
                   at_ms=AT, address_kind="email", address=to, purpose=purpose,
                   links=links or {}, sender=sender)


def run(chan: EmailChannel, work: Callable[[], Awaitable[T]]) -> T:
    """`work` in an event loop of its own; the channel is closed before the loop ends."""
    async def go() -> T:
        try:
            return await work()
        finally:
            await chan.close()

    return asyncio.run(go())


def send_all(chan: EmailChannel, messages: list[Message]) -> list[str | None]:
    async def work() -> list[str | None]:
        return [(await chan.send(m)).provider_ref for m in messages]

    return run(chan, work)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def raw() -> Iterator[RawSink]:
    with raw_sink() as sink:
        yield sink


# --- TLS and AUTH ------------------------------------------------------------------------


def test_starttls_with_auth(certificate: Certificate) -> None:
    with secure_sink(certificate) as sink:
        chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=sink.port, starttls=True,
                                        username=USER, password=PASSWORD, timeout_s=5,
                                        ca_file=str(certificate.cert_file)))
        assert send_all(chan, [message("k-tls")]) == [message_id("k-tls")]
        assert [m.rcpt for m in sink.mails] == ["ada@example.com"]


def test_implicit_tls_with_auth(certificate: Certificate) -> None:
    with secure_sink(certificate, implicit=True) as sink:
        chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=sink.port, implicit_tls=True,
                                        username=USER, password=PASSWORD, timeout_s=5,
                                        ca_file=str(certificate.cert_file)))
        send_all(chan, [message("k-465")])
        assert [m.message_id for m in sink.mails] == [message_id("k-465")]


def test_a_wrong_password_is_not_retried_and_says_what_to_check(
        certificate: Certificate) -> None:
    with secure_sink(certificate) as sink:
        chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=sink.port, starttls=True,
                                        username=USER, password="wrong", timeout_s=5,
                                        ca_file=str(certificate.cert_file)))
        with pytest.raises(ChannelError, match="535") as caught:
            send_all(chan, [message("k-auth")])
        assert not caught.value.retryable
        assert "CADENZA_SMTP_PASSWORD" in caught.value.message
        assert sink.mails == []


def test_an_untrusted_certificate_is_refused_with_a_hint(certificate: Certificate) -> None:
    with secure_sink(certificate, auth=False) as sink:
        chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=sink.port, starttls=True,
                                        timeout_s=5))  # the system store: not our test CA
        with pytest.raises(ChannelError, match="CADENZA_SMTP_CA_FILE"):
            send_all(chan, [message("k-untrusted")])
        assert sink.mails == []


def test_without_starttls_the_server_refuses(certificate: Certificate) -> None:
    with secure_sink(certificate, auth=False) as sink:
        chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=sink.port, timeout_s=5))
        with pytest.raises(ChannelError, match="530"):
            send_all(chan, [message("k-plain")])
        assert sink.mails == []


# --- the pool -------------------------------------------------------------------------------


class Ticks:
    """A monotonic clock for the pool that moves when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_pool_sends_in_parallel_and_is_reused_across_batches(smtp: SmtpSink) -> None:
    options = SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5, pool_size=3)
    chan = EmailChannel(options)

    async def work() -> None:
        for batch in range(3):
            await asyncio.gather(*(chan.send(message(f"k-{batch}-{i}", f"p{i}@example.com"))
                                   for i in range(12)))
            await chan.end_batch()

    run(chan, work)
    assert len(smtp.mails) == 36
    assert smtp.connections == chan.connections_opened
    assert 2 <= smtp.connections <= 3  # in parallel, and never more than the pool's size


def test_idle_connections_are_closed_and_replaced(smtp: SmtpSink) -> None:
    options = SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5, idle_timeout_s=30)
    ticks = Ticks()
    chan = EmailChannel(options, pool=SmtpPool(options, monotonic=ticks))

    async def work() -> None:
        await chan.send(message("k-1"))
        ticks.now += 10
        await chan.send(message("k-2"))  # still fresh: reused
        assert chan.connections_opened == 1
        ticks.now += 31
        chan.pool.reap()  # what the timer set by end_batch does
        assert chan.pool.idle == 0
        await chan.send(message("k-3"))
        assert chan.connections_opened == 2
        ticks.now += 31  # stale when taken: closed, and a new one opened
        await chan.send(message("k-4"))
        assert chan.connections_opened == 3

    run(chan, work)
    assert len(smtp.mails) == 4


def test_a_broken_connection_is_dropped_and_replaced() -> None:
    port = free_port()
    options = SmtpOptions(host="127.0.0.1", port=port, timeout_s=5)
    chan = EmailChannel(options)
    first = RawSink(port=port)

    async def work() -> list[bool]:
        controller = _Controller(first, port)
        controller.start()
        await chan.send(message("k-a"))
        controller.stop()  # the server goes away under the pooled connection
        results = []
        with pytest.raises(ChannelError) as caught:
            await chan.send(message("k-b"))
        results.append(caught.value.retryable)
        second = RawSink(port=port)
        controller = _Controller(second, port)
        controller.start()
        try:
            await chan.send(message("k-c"))
        finally:
            controller.stop()
        assert [m.message_id for m in second.mails] == [message_id("k-c")]
        return results

    assert run(chan, work) == [True]  # a lost server is worth another attempt
    assert chan.connections_opened == 2


def test_421_drops_the_connection_and_pauses_every_send(smtp: SmtpSink) -> None:
    smtp.data_replies["ada@example.com"] = ["421 4.7.0 Too busy, closing"]
    clock = FakeClock(AT)
    options = SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5, throttle_pause_ms=40)
    chan = EmailChannel(options, clock=clock)

    async def work() -> None:
        with pytest.raises(ChannelError) as caught:
            await chan.send(message("k-421"))
        assert caught.value.retryable
        assert caught.value.retry_after_ms == AT + 40
        assert chan.limiter.paused_for() > 0
        await chan.send(message("k-after"))  # waits out the pause, on a new connection

    run(chan, work)
    assert chan.connections_opened == 2
    assert [m.message_id for m in smtp.mails] == [message_id("k-after")]


def test_a_454_that_states_a_time_pauses_for_that_long(smtp: SmtpSink) -> None:
    smtp.data_replies["ada@example.com"] = ["454 4.7.0 Rate exceeded, try again in 30 seconds"]
    clock = FakeClock(AT)
    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5),
                        clock=clock)

    async def work() -> None:
        with pytest.raises(ChannelError) as caught:
            await chan.send(message("k-454"))
        assert caught.value.retry_after_ms == AT + 30_000
        assert 29 < chan.limiter.paused_for() <= 30

    run(chan, work)
    assert chan.connections_opened == 1  # a 454 keeps the connection


# --- headers ------------------------------------------------------------------------------


LINKS = {"one_click": "https://mail.example.com/u/tok-1", "unsubscribe":
         "https://mail.example.com/p/tok-1", "preferences": "https://mail.example.com/pref/t"}


def test_marketing_mail_carries_one_click_unsubscribe_and_list_id(smtp: SmtpSink) -> None:
    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5,
                                    list_id="Weekly News <news.example.com>",
                                    unsubscribe_mailto="leave@example.com"))
    send_all(chan, [message("k-m", links=LINKS),
                    message("k-t", "tom@example.com", purpose="transactional", links=LINKS)])
    marketing, transactional = (m.mime for m in smtp.mails)
    assert marketing["List-Unsubscribe"] == ("<https://mail.example.com/u/tok-1>, "
                                             "<mailto:leave@example.com?subject=unsubscribe>")
    assert marketing["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert marketing["List-Id"] == "Weekly News <news.example.com>"
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"):
        assert transactional[name] is None


def test_without_an_https_one_click_url_there_is_no_post_header(smtp: SmtpSink) -> None:
    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5))
    send_all(chan, [message("k-page", links={"unsubscribe": "https://x.example/p/1"}),
                    message("k-http", "b@example.com",
                            links={"one_click": "http://x.example/u/1"}),
                    message("k-bad", "c@example.com",
                            links={"one_click": "https://x.example/u/1>, <https://evil"})])
    page, http, bad = (m.mime for m in smtp.mails)
    assert page["List-Unsubscribe"] == "<https://x.example/p/1>"
    assert page["List-Unsubscribe-Post"] is None
    assert http["List-Unsubscribe"] == "<http://x.example/u/1>"
    assert http["List-Unsubscribe-Post"] is None
    assert bad["List-Unsubscribe"] is None  # a URL that could break the header is left out


def test_text_and_html_go_as_multipart_alternative(smtp: SmtpSink) -> None:
    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5))
    html = "<p>Grüße, Zoë — " + "x" * 200 + " = 100%</p>\n<p>.line</p>"
    send_all(chan, [message("k-mp", subject="Grüße aus Köln 🎉 " * 4, body=html, html=True,
                            text="Grüße, Zoë\n.line")])
    mime = smtp.mails[0].mime
    assert mime.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mime.iter_parts()] == ["text/plain", "text/html"]
    text_part, html_part = mime.get_body(("plain",)), mime.get_body(("html",))
    assert text_part is not None
    assert html_part is not None
    assert text_part.get_content().replace("\r\n", "\n").rstrip("\n") == "Grüße, Zoë\n.line"
    assert html_part.get_content().replace("\r\n", "\n").rstrip("\n") == html
    assert str(mime["Subject"]) == " ".join(("Grüße aus Köln 🎉 " * 4).split())


def test_header_injection_never_creates_a_header_at_the_server(smtp: SmtpSink,
                                                                store: Store) -> None:
    clock = FakeClock(AT)
    with store.begin() as conn:
        conn.execute(sa.insert(schema.sender_identities).values(
            key="evil", from_address="Sales\r\nBcc: all@example.com <sales@example.com>",
            reply_to="Help\nX-Evil: 1 <help@example.com>", list_id=None,
            created_at=AT, updated_at=AT))
    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5),
                        senders=SenderBook(store, clock), clock=clock)
    send_all(chan, [message("k-inj\r\nX-Key: 1", subject="Hi\r\nBcc: all@example.com\r\n"
                            "\r\nbody", sender="evil",
                            params={"reply_to": "Me\r\nCc: x@example.com <me@example.com>"}),
                    message("k-inj2", "b@example.com", subject="Hi\u2028Bcc: a@b.c\x00\x0b")])
    assert [m.rcpt for m in smtp.mails] == ["ada@example.com", "b@example.com"]
    allowed = {"Message-ID", "Date", "From", "To", "Subject", "Reply-To", "X-Cadenza-Key",
               "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}
    for mail in smtp.mails:
        assert set(mail.mime.keys()) <= allowed
        assert mail.mime["Bcc"] is None
        assert mail.mime["Cc"] is None
    first = smtp.mails[0].mime
    assert first["Subject"] == "Hi Bcc: all@example.com body"
    assert first["From"].addresses[0].addr_spec == "sales@example.com"
    assert first["Reply-To"].addresses[0].addr_spec == "me@example.com"


def test_a_recipient_address_that_could_inject_smtp_is_undeliverable(smtp: SmtpSink) -> None:
    from cadenza.channels import Undeliverable

    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5))
    for bad in ("a@example.com>\r\nRCPT TO:<b@example.com", "a b@example.com", "nobody",
                "a@-x.example"):
        with pytest.raises(Undeliverable):
            send_all(chan, [message("k-bad", bad)])
    assert smtp.mails == []
    assert smtp.connections == 0


# --- sender identities ------------------------------------------------------------------


def test_sender_identities_are_read_once_for_many_messages(smtp: SmtpSink,
                                                            store: Store) -> None:
    clock = FakeClock(AT)
    with store.begin() as conn:
        conn.execute(sa.insert(schema.sender_identities), [
            {"key": "support", "from_address": "Zoë at Support <support@example.com>",
             "reply_to": "help@example.com", "list_id": "Support <support.example.com>",
             "created_at": AT, "updated_at": AT},
            {"key": "broken", "from_address": "not an address", "reply_to": None,
             "list_id": None, "created_at": AT, "updated_at": AT}])
    senders = SenderBook(store, clock, ttl_ms=30_000)
    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=smtp.port, timeout_s=5,
                                    list_id="news.example.com"), senders=senders, clock=clock)

    async def work() -> list[str]:
        await asyncio.gather(*(chan.send(message(f"k-{i}", f"p{i}@example.com",
                                                 sender="support")) for i in range(5)))
        await chan.send(message("k-default", "d@example.com"))
        errors = []
        for key in ("nobody", "broken"):
            with pytest.raises(ChannelError) as caught:
                await chan.send(message(f"k-{key}", sender=key))
            assert not caught.value.retryable
            errors.append(caught.value.message)
        return errors

    errors = run(chan, work)
    assert senders.loads == 1
    assert "'nobody' does not exist" in errors[0]
    assert "'broken'" in errors[1]
    assert "from_address" in errors[1]
    support = smtp.mails[0].mime
    assert support["From"].addresses[0].display_name == "Zoë at Support"
    assert support["From"].addresses[0].addr_spec == "support@example.com"
    assert support["Reply-To"] == "help@example.com"
    assert support["List-Id"] == "Support <support.example.com>"
    default = next(m.mime for m in smtp.mails if m.rcpt == "d@example.com")
    assert default["From"] == "Cadenza <noreply@cadenza.local>"
    assert default["List-Id"] == "<news.example.com>"
    clock.advance(30_000)
    send_all(chan, [message("k-later", sender="support")])
    assert senders.loads == 2  # the cache expired: read again


# --- DKIM ---------------------------------------------------------------------------------


def test_dkim_signature_verifies_and_covers_the_list_headers(raw: RawSink,
                                                              tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    record = dns_record(der).encode()
    asked: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record if name == b"mail2026._domainkey.example.com." else b""

    signer = DkimSigner("example.com", "mail2026", pem)
    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=raw.port, timeout_s=5,
                                    from_address="News <news@example.com>"), dkim=signer)
    send_all(chan, [message("k-dkim", links=LINKS, subject="Grüße", body="<p>Hi</p>",
                            html=True, text="Hi")])
    (signed,) = raw.raw
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert asked == [b"mail2026._domainkey.example.com."]
    header = signed.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"").replace(b" ", b"")
    covered = header.split(b"h=", 1)[1].split(b";", 1)[0].split(b":")
    for name in (b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
                 b"list-unsubscribe-post", b"content-type", b"mime-version"):
        assert name in covered
    tampered = signed.replace(b"To: ada@example.com", b"To: eve@example.com", 1)
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)


def test_dkim_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    from cadenza.errors import ConfigError

    class Settings:
        dkim_domain = "example.com"
        dkim_selector = "s1"
        dkim_private_key_file = str(tmp_path / "missing.pem")

    with pytest.raises(ConfigError, match="cannot read"):
        DkimSigner.from_settings(Settings())
    (tmp_path / "bad.pem").write_text("not a key")
    Settings.dkim_private_key_file = str(tmp_path / "bad.pem")
    with pytest.raises(ConfigError, match="cannot sign"):
        DkimSigner.from_settings(Settings())
    Settings.dkim_selector = None  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="all three or none"):
        DkimSigner.from_settings(Settings())


def test_the_dns_record_holds_the_public_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    record = dns_record(der)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    assert base64.b64decode(record.split("p=")[1]) == der
