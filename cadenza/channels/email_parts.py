"""What every email carries, whichever provider submits it: sender, recipient, subject,
text and HTML parts, Message-ID and the list headers.

The SMTP provider turns `EmailParts` into bytes (`smtp_bytes`); the ESP providers into
their JSON. Sender identities (table `sender_identities`: From, Reply-To, List-Id per key)
are read through a short cache, one query per refresh, never one per message.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate

import sqlalchemy as sa

from cadenza.channels import mime
from cadenza.channels.errors import ChannelError, Undeliverable
from cadenza.channels.models import Message
from cadenza.channels.options import SmtpOptions
from cadenza.clock import Clock
from cadenza.store import Store, schema

ONE_CLICK = "List-Unsubscribe=One-Click"


def message_id(key: str, domain: str = "cadenza.local") -> str:
    """The Message-ID of the message with idempotency key `key`: the same on every attempt."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def list_id_value(value: str) -> str:
    """A `List-Id` header value: `Name <id.example.com>` or a bare id (bracketed here);
    ValueError unless the id is a dotted host-like name."""
    text = mime.one_line(value)
    name, _, rest = text.rpartition("<")
    ident = (rest.removesuffix(">") if name or text.startswith("<") else text).strip()
    if not ident or "." not in ident or not all(c.isalnum() or c in "-._" for c in ident) \
            or not ident.isascii():
        raise ValueError(f"{value[:80]!r} is not a List-Id; write `News <news.example.com>` "
                         "or `news.example.com`")
    name = name.strip().strip('"')
    return f"{mime.header_text(name)} <{ident}>" if name else f"<{ident}>"


@dataclass(frozen=True)
class Sender:
    """A sender identity, its headers already checked and encoded."""

    key: str | None
    from_header: str
    envelope_from: str
    """The bare From address: the SMTP envelope sender (where bounces go)."""
    from_name: str
    reply_to: str | None = None
    list_id: str | None = None

    @classmethod
    def build(cls, key: str | None, from_address: str, reply_to: str | None = None,
              list_id: str | None = None) -> Sender:
        """A sender from configured text; ValueError naming the field that is wrong."""
        try:
            name, address = mime.parse_mailbox(from_address)
        except ValueError as exc:
            raise ValueError(f"from_address: {exc}") from None
        reply = None
        if reply_to:
            try:
                reply = mime.mailbox(*mime.parse_mailbox(reply_to))
            except ValueError as exc:
                raise ValueError(f"reply_to: {exc}") from None
        try:
            lid = list_id_value(list_id) if list_id else None
        except ValueError as exc:
            raise ValueError(f"list_id: {exc}") from None
        return cls(key, mime.mailbox(name, address), address, name, reply, lid)


class SenderBook:
    """Sender identities by key, re-read at most every `ttl_ms` (one query for all)."""

    def __init__(self, store: Store, clock: Clock, ttl_ms: int = 30_000) -> None:
        self.store = store
        self.clock = clock
        self.ttl_ms = ttl_ms
        self._senders: dict[str, Sender | str] = {}
        self._loaded_at: int | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.loads = 0
        """How many times the table was read (for tests)."""

    async def get(self, key: str) -> Sender:
        """The identity `key`; a non-retryable ChannelError when there is none or it is
        not usable."""
        if self._stale():
            async with self._turn():
                if self._stale():
                    self._senders = await asyncio.to_thread(self._load)
                    self._loaded_at = self.clock.now_ms()
        found = self._senders.get(key)
        if isinstance(found, Sender):
            return found
        reason = (f"sender identity {key!r} does not exist; add it to the sender identities "
                  "or change the template's sender") if found is None else (
                  f"sender identity {key!r}: {found}; correct it and replay the message")
        raise ChannelError("email", reason, retryable=False)

    def _stale(self) -> bool:
        return self._loaded_at is None or self.clock.now_ms() - self._loaded_at >= self.ttl_ms

    def _load(self) -> dict[str, Sender | str]:
        s = schema.sender_identities
        with self.store.read() as conn:
            rows = conn.execute(sa.select(s.c.key, s.c.from_address, s.c.reply_to,
                                          s.c.list_id)).all()
        self.loads += 1
        senders: dict[str, Sender | str] = {}
        for key, from_address, reply_to, list_id in rows:
            try:
                senders[key] = Sender.build(key, from_address, reply_to, list_id)
            except ValueError as exc:
                senders[key] = str(exc)
        return senders

    def _turn(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock = asyncio.Lock()
            self._loop = loop
        return self._lock


@dataclass(frozen=True)
class EmailParts:
    """One email, provider-neutral; every header value is already one safe line."""

    key: str
    message_id: str
    date: str
    sender: Sender
    to: str
    subject: str
    text: str | None
    html: str | None
    reply_to: str | None
    list_headers: tuple[tuple[str, str], ...]
    """List-Id, List-Unsubscribe and List-Unsubscribe-Post, on marketing mail only."""
    one_click: str | None
    """The RFC 8058 one-click URL when the message carries one."""

    def headers(self) -> list[tuple[str, str]]:
        """Every header but the MIME ones, in the order they are written."""
        out = [("Message-ID", self.message_id), ("Date", self.date),
               ("From", self.sender.from_header), ("To", self.to),
               ("Subject", mime.header_text(self.subject))]
        if self.reply_to:
            out.append(("Reply-To", self.reply_to))
        out += self.list_headers
        out.append(("X-Cadenza-Key", mime.header_text(self.key)))
        return out


def email_parts(message: Message, options: SmtpOptions, sender: Sender,
                default: Sender | None = None) -> EmailParts:
    """The parts of `message` as `sender` sends it (`default`, the configured sender, lends
    its List-Id to an identity without one); Undeliverable without a usable address, a
    non-retryable ChannelError when a parameter cannot be used."""
    if not message.address:
        raise Undeliverable("email", f"contact {message.contact.id} has no email address")
    try:
        to = mime.check_address(message.address)
    except ValueError as exc:
        raise Undeliverable("email", f"contact {message.contact.id}: {exc}") from None
    content = message.content
    body = str(content.get("body", ""))
    if content.get("html"):
        text = content.get("text")
        text, html = (str(text) if text else None), body
    else:
        text, html = body, None
    reply_to = sender.reply_to
    asked = message.params.get("reply_to")
    if isinstance(asked, str) and asked.strip():
        try:
            reply_to = mime.mailbox(*mime.parse_mailbox(asked))
        except ValueError as exc:
            raise ChannelError("email", f"params.reply_to: {exc}", retryable=False) from None
    list_id = sender.list_id or (default.list_id if default else None)
    headers, one_click = ((), None) if message.transactional else _list_headers(
        message.links, options.unsubscribe_mailto, list_id)
    return EmailParts(
        key=message.key, message_id=message_id(message.key, options.message_id_domain),
        date=_date(message.at_ms // 1000), sender=sender, to=to,
        subject=mime.one_line(str(content.get("subject", ""))), text=text, html=html,
        reply_to=reply_to, list_headers=headers, one_click=one_click)


@functools.lru_cache(maxsize=64)
def _date(seconds: int) -> str:
    """The Date header of a message handed over at `seconds` (a batch shares one)."""
    return formatdate(seconds, usegmt=True)


def _list_headers(links: Mapping[str, str], mailto: str | None, list_id: str | None
                  ) -> tuple[tuple[tuple[str, str], ...], str | None]:
    headers: list[tuple[str, str]] = []
    if list_id:
        headers.append(("List-Id", list_id))
    one_click = links.get("one_click")
    one_click = one_click if one_click and mime.safe_uri(one_click) else None
    page = links.get("unsubscribe")
    target = one_click or (page if page and mime.safe_uri(page) else None)
    targets = [f"<{target}>"] if target else []
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    if targets:
        headers.append(("List-Unsubscribe", ", ".join(targets)))
    # RFC 8058: the one-click POST needs an HTTPS target in List-Unsubscribe.
    if one_click and one_click.startswith("https://"):
        headers.append(("List-Unsubscribe-Post", ONE_CLICK))
    else:
        one_click = None
    return tuple(headers), one_click


def boundary(key: str) -> str:
    """The multipart boundary of message `key` (see `mime.compose` for why it is safe)."""
    return "----=_cadenza_" + hashlib.sha256(b"boundary:" + key.encode()).hexdigest()[:24]


def smtp_bytes(parts: EmailParts) -> bytes:
    """The message as submitted over SMTP."""
    return mime.compose(parts.headers(), text=parts.text, html=parts.html,
                        boundary=boundary(parts.key))
