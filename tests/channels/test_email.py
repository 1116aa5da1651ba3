"""The email channel against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import binascii
import email as email_package
import email.policy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.channels import ChannelError, Message, Recipient, SmtpOptions, Undeliverable, mime
from cadenza.channels.email import EmailChannel, message_id
from cadenza.channels.registry import check_params
from cadenza.errors import ValidationFailed
from tests.channels.servers import SmtpSink, free_port
from tests.channels.support import smtp

__all__ = ["smtp"]


def message(key: str, to: str | None = "ada@example.com", **content: Any) -> Message:
    return Message(outbox_id=1, key=key, channel="email", contact=Recipient(3, email=to),
                   params={}, content={"subject": "Welcome", "body": "Hello Ada", **content},
                   at_ms=1_767_225_600_000, address_kind="email", address=to)


def channel(sink: SmtpSink, **options: Any) -> EmailChannel:
    return EmailChannel(SmtpOptions(host="127.0.0.1", port=sink.port, timeout_s=5, **options))


def run_batch(chan: EmailChannel, messages: list[Message]) -> list[str | None]:
    """Send `messages` one after another in an event loop of their own; the channel's
    connections are closed before that loop ends (as the dispatcher's owner does)."""
    async def go() -> list[str | None]:
        try:
            return [(await chan.send(m)).provider_ref for m in messages]
        finally:
            await chan.end_batch()
            await chan.close()

    return asyncio.run(go())


def test_message_id_derives_from_the_key() -> None:
    assert message_id("k-1") == message_id("k-1")
    assert message_id("k-1") != message_id("k-2")
    assert message_id("k-1", "mail.example.com").endswith("@mail.example.com>")
    assert len(message_id("k-1").split("@")[0]) == 33  # '<' and 32 hex digits


def test_sends_a_batch_over_one_connection(smtp: SmtpSink) -> None:
    chan = channel(smtp, from_address="News <news@example.com>")
    refs = run_batch(chan, [message(f"k-{i}", f"p{i}@example.com") for i in range(5)])
    assert smtp.connections == 1
    assert chan.connections_opened == 1
    assert [m.rcpt for m in smtp.mails] == [f"p{i}@example.com" for i in range(5)]
    assert refs == [message_id(f"k-{i}") for i in range(5)]
    first = smtp.mails[0].mime
    assert first["From"] == "News <news@example.com>"
    assert first["Subject"] == "Welcome"
    assert first["X-Cadenza-Key"] == "k-0"
    assert first.get_content_type() == "text/plain"


def test_html_bodies_go_as_html(smtp: SmtpSink) -> None:
    run_batch(channel(smtp), [message("k-h", body="<p>Hi</p>", html=True)])
    assert smtp.mails[0].mime.get_content_type() == "text/html"


def test_a_retry_after_451_carries_the_same_message_id(smtp: SmtpSink) -> None:
    smtp.data_replies["ada@example.com"] = ["451 4.3.0 try again later"]
    chan = channel(smtp)
    with pytest.raises(ChannelError) as caught:
        run_batch(chan, [message("k-retry")])
    assert caught.value.retryable
    assert "451" in caught.value.message
    run_batch(chan, [message("k-retry")])
    assert [m.message_id for m in smtp.mails] == [message_id("k-retry")]


def test_a_failure_mid_batch_keeps_the_connection(smtp: SmtpSink) -> None:
    smtp.data_replies["b@example.com"] = ["452 4.3.1 mailbox full"]
    chan = channel(smtp)

    async def go() -> list[bool]:
        results = []
        for to in ("a@example.com", "b@example.com", "c@example.com"):
            try:
                await chan.send(message(f"k-{to}", to))
                results.append(True)
            except ChannelError:
                results.append(False)
        await chan.close()
        return results

    assert asyncio.run(go()) == [True, False, True]
    assert smtp.connections == 1


def test_permanent_refusals_are_not_retried(smtp: SmtpSink) -> None:
    smtp.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    with pytest.raises(ChannelError, match="550") as caught:
        run_batch(channel(smtp), [message("k-gone", "gone@example.com")])
    assert not caught.value.retryable
    smtp.data_replies["spam@example.com"] = ["554 5.7.1 rejected as spam"]
    with pytest.raises(ChannelError, match="554") as data:
        run_batch(channel(smtp), [message("k-spam", "spam@example.com")])
    assert not data.value.retryable


def test_an_unreachable_server_is_retryable() -> None:
    chan = EmailChannel(SmtpOptions(host="127.0.0.1", port=free_port(), timeout_s=2))
    with pytest.raises(ChannelError) as caught:
        run_batch(chan, [message("k-1")])
    assert caught.value.retryable


def test_no_address_is_undeliverable(smtp: SmtpSink) -> None:
    with pytest.raises(Undeliverable, match="no email address"):
        run_batch(channel(smtp), [message("k-none", None)])
    assert smtp.connections == 0


def test_header_injection_is_impossible(smtp: SmtpSink) -> None:
    run_batch(channel(smtp), [message("k-inj", subject="Hi\r\nBcc: all@example.com")])
    mime = smtp.mails[0].mime
    assert mime["Bcc"] is None
    assert [m.rcpt for m in smtp.mails] == ["ada@example.com"]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="not both"):
        SmtpOptions(starttls=True, implicit_tls=True)
    with pytest.raises(ValueError, match="user name and a password"):
        SmtpOptions(username="u")
    with pytest.raises(ValueError, match="port"):
        SmtpOptions(port=0)


def test_publish_time_checks() -> None:
    check_params("email", {"reply_to": "help@example.com"}, "s")
    with pytest.raises(ValidationFailed, match="did you mean 'subject'"):
        check_params("email", {"subjet": "x"}, "s")
    with pytest.raises(ValidationFailed, match="did you mean 'email'") as caught:
        check_params("e-mail", {}, "s", channel_field="steps.s.channel")
    assert caught.value.field == "steps.s.channel"


# --- the MIME writer (cadenza.channels.mime): properties ---------------------------------



def _parsed_header(name: str, value: str) -> Any:
    raw = f"{name}: {value}\r\nX-After: end\r\n\r\nbody\r\n".encode("ascii")
    parsed = email_package.message_from_bytes(raw, policy=email.policy.default)
    assert list(parsed.keys()) == [name, "X-After"]  # nothing else became a header
    return parsed[name]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400).filter(lambda t: "=?" not in t))
def test_any_subject_stays_one_header_and_reads_back(text: str) -> None:
    value = mime.header_text(text)
    assert value.isascii()
    assert value.replace("\r\n ", "").count("\n") == 0
    assert "\r" not in value.replace("\r\n ", "")
    assert all(len(line) <= 998 for line in value.split("\r\n"))
    assert str(_parsed_header("Subject", value)) == mime.one_line(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_display_name_stays_in_its_mailbox(name: str) -> None:
    value = mime.mailbox(name, "zoe@example.com")
    header = _parsed_header("From", value)
    assert [a.addr_spec for a in header.addresses] == ["zoe@example.com"]
    if "=?" not in name:
        # A long non-ASCII name spans encoded words; Python's parser puts a space between
        # words of a phrase where RFC 2047 says to drop it, hence the comparison without.
        shown = header.addresses[0].display_name
        assert shown.replace(" ", "") == mime.one_line(name).replace(" ", "")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_bodies_survive_quoted_printable(text: str) -> None:
    encoded = mime.quoted_printable(text)
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert b"=_" not in encoded.replace(b"=\r\n", b"")  # so a boundary cannot occur in it
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    assert binascii.a2b_qp(encoded.replace(b"\r\n", b"\n")).decode("utf-8") == normal


def test_multipart_and_single_part_messages_parse() -> None:
    both = mime.compose([("Subject", "x")], text="plain", html="<p>h</p>", boundary="----=_b")
    parsed = email_package.message_from_bytes(both, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content().strip() for p in parsed.iter_parts()] == ["plain", "<p>h</p>"]
    one = mime.compose([("Subject", "x")], text=None, html="<p>h</p>", boundary="b")
    assert email_package.message_from_bytes(one).get_content_type() == "text/html"
