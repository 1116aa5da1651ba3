"""The `email` channel: SMTP submission with aiosmtplib.

Every message gets a Message-ID derived from its idempotency key, so a resend after a crash
or a retry carries the same id and a receiving system (or a person's mail client) can fold
the duplicates. One SMTP connection serves a whole dispatch batch (`end_batch` closes it).

SMTP replies decide retries: 4xx (and connection failures, timeouts) are worth another
attempt, 5xx are not (a 550 "no such user" stays a 550).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib

from cadenza.channels.base import ChannelDeps, ChannelSpec, check_known, check_text
from cadenza.channels.errors import ChannelError, Undeliverable
from cadenza.channels.models import Message, SendResult
from cadenza.channels.options import SmtpOptions

_KNOWN = frozenset({"subject", "body", "reply_to"})


def check_params(params: Mapping[str, Any], where: str) -> None:
    """Inline `subject` and `body` (when no template is named) and `reply_to` are optional."""
    check_known(params, where, _KNOWN)
    check_text(params, where, "subject", max_length=2000)
    check_text(params, where, "body")
    check_text(params, where, "reply_to", max_length=320)


def message_id(key: str, domain: str = "cadenza.local") -> str:
    """The Message-ID of the message with idempotency key `key`: the same on every attempt."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def build_email(message: Message, options: SmtpOptions) -> EmailMessage:
    """The MIME message for `message` (To is the contact's address)."""
    if not message.address:
        raise Undeliverable("email", f"contact {message.contact.id} has no email address")
    email = EmailMessage()
    try:
        email["Message-ID"] = message_id(message.key, options.message_id_domain)
        email["Date"] = formatdate(message.at_ms / 1000, usegmt=True)
        email["From"] = options.from_address
        email["To"] = message.address
        email["Subject"] = _one_line(str(message.content.get("subject", "")))
        reply_to = message.params.get("reply_to")
        if isinstance(reply_to, str) and reply_to:
            email["Reply-To"] = _one_line(reply_to)
        email["X-Cadenza-Key"] = message.key
        body = str(message.content.get("body", ""))
        if message.content.get("html"):
            email.set_content(body, subtype="html")
        else:
            email.set_content(body)
    except (ValueError, TypeError) as exc:
        raise ChannelError("email", f"cannot build the message: {exc}", retryable=False) from None
    return email


def _one_line(value: str) -> str:
    """A header value on one line: a line break in it could start a header of its own."""
    return " ".join(value.split())


class EmailChannel:
    """Sends through one SMTP server; one connection per batch, one transaction at a time."""

    name = "email"
    text_fields: tuple[str, ...] = ("subject", "body")
    record_each = True
    address_kind: str | None = "email"

    def __init__(self, options: SmtpOptions | None = None) -> None:
        self.options = options or SmtpOptions()
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self.connections_opened = 0
        """How many connections this channel has opened (for tests and metrics)."""

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """See the module's `check_params`."""
        check_params(params, where)

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        o = self.options
        smtp = aiosmtplib.SMTP(hostname=o.host, port=o.port, username=o.username,
                               password=o.password, use_tls=o.implicit_tls,
                               start_tls=o.starttls,
                               timeout=o.timeout_s)
        await smtp.connect()
        self.connections_opened += 1
        self._smtp = smtp
        return smtp

    async def send(self, message: Message) -> SendResult:
        """Submit the message; the provider reference is its Message-ID."""
        email = build_email(message, self.options)
        async with self._lock:
            try:
                smtp = await self._connection()
                await smtp.send_message(email)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                first = exc.recipients[0]
                raise _reply_error(first.code, first.message) from None
            except aiosmtplib.SMTPResponseException as exc:
                if not (self._smtp and self._smtp.is_connected):
                    self._smtp = None
                raise _reply_error(exc.code, exc.message) from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._drop()
                raise ChannelError("email", f"SMTP {self.options.host}:{self.options.port}: "
                                   f"{type(exc).__name__}: {exc}", retryable=True) from None
        return SendResult(provider_ref=str(email["Message-ID"]))

    async def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def end_batch(self) -> None:
        """Say QUIT and close the batch's connection."""
        async with self._lock:
            smtp, self._smtp = self._smtp, None
            if smtp is None or not smtp.is_connected:
                return
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()

    async def close(self) -> None:
        """Close the connection; afterwards the channel may be used from another event loop."""
        await self.end_batch()
        self._lock = asyncio.Lock()


def _reply_error(code: int, text: str) -> ChannelError:
    retryable = 400 <= code < 500
    return ChannelError("email", f"SMTP {code} {text.strip()[:300]}", retryable=retryable)


def create(deps: ChannelDeps) -> EmailChannel:
    """An email channel with the configured SMTP server."""
    return EmailChannel(deps.smtp)


SPEC = ChannelSpec("email", check_params, create)
