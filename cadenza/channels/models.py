"""What the delivery path passes around: the recipient, the message, results and outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cadenza.errors import CadenzaError


@dataclass(frozen=True)
class Recipient:
    """The contact a message is for, as loaded at send time."""

    id: int
    email: str | None = None
    phone: str | None = None
    user_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    timezone: str | None = None
    locale: str | None = None

    def template_view(self) -> dict[str, Any]:
        """The allow-listed fields a template may read as `contact`."""
        return {"email": self.email, "phone": self.phone, "user_id": self.user_id,
                "attributes": dict(self.attributes), "timezone": self.timezone,
                "locale": self.locale}


@dataclass(frozen=True)
class Message:
    """One claimed outbox row, rendered and ready for its channel."""

    outbox_id: int
    key: str
    """The idempotency key: HTTP `Idempotency-Key`, the seed of the SMTP `Message-ID`."""
    channel: str
    contact: Recipient
    params: Mapping[str, Any]
    """The step's parameters (url, title, ...)."""
    content: Mapping[str, Any]
    """Rendered text fields (subject, body, title) and `html` for HTML email bodies."""
    at_ms: int
    """When the dispatcher handed the message over (the injected clock)."""
    attempt: int = 1
    journey_id: int | None = None
    journey: str | None = None
    step: str | None = None
    template: str | None = None
    shadow: bool = False
    address_kind: str | None = None
    """'email' or 'phone' when the channel delivers to such an address, else None."""
    address: str | None = None
    """The contact's address for `address_kind` (None when it has none)."""
    purpose: str = "marketing"
    """The consent purpose the message is sent under (`params.purpose`, else the template's,
    else marketing). `transactional` is the transactional stream: caps and quiet hours do not
    delay it."""
    links: Mapping[str, str] = field(default_factory=dict)
    """Signed URLs for this message: `unsubscribe` (the page), `one_click` (RFC 8058 POST
    target), `preferences`; empty when no link builder is configured."""
    sender: str | None = None
    """Sender identity key (the template's), None for the default sender."""

    @property
    def transactional(self) -> bool:
        """True for the transactional stream."""
        return self.purpose == "transactional"


@dataclass(frozen=True)
class SendResult:
    """A channel accepted the message."""

    provider_ref: str | None = None
    """The provider's reference for it (a Message-ID, a task id, a response id)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """What the channel learnt while sending (an SMS's segments and encoding): added to the
    row's recorded `rendered` content."""


class OutcomeKind(StrEnum):
    """How a claimed message ended this round (the outbox status it leads to)."""

    SENT = "sent"
    SHADOWED = "shadowed"
    CANCELLED = "cancelled"
    DEFERRED = "deferred"
    """Not attempted now by a rule's decision (quiet hours, a cap, a rate limit): pending again
    at `not_before`, the attempt not counted."""
    FAILED = "failed"
    """Pending again (retryable, attempts left) or dead; the dispatcher decides from the
    error's `retryable` flag and the retry policy."""


@dataclass(frozen=True)
class Outcome:
    """The result of one message's trip through the interceptor chain."""

    kind: OutcomeKind
    provider_ref: str | None = None
    reason: str | None = None
    retryable: bool = False
    not_before: int | None = None
    """Deferred: when to try again. Failed: the earliest retry the receiver asked for
    (Retry-After)."""

    @classmethod
    def sent(cls, provider_ref: str | None) -> Outcome:
        """Delivered."""
        return cls(OutcomeKind.SENT, provider_ref=provider_ref)

    @classmethod
    def shadowed(cls) -> Outcome:
        """Rendered and recorded, deliberately not delivered."""
        return cls(OutcomeKind.SHADOWED)

    @classmethod
    def cancelled(cls, reason: str) -> Outcome:
        """Must not be delivered, now or later (suppressed, no address)."""
        return cls(OutcomeKind.CANCELLED, reason=reason)

    @classmethod
    def deferred(cls, not_before: int, reason: str) -> Outcome:
        """Held back by a rule until `not_before` (epoch ms); no attempt is counted."""
        return cls(OutcomeKind.DEFERRED, reason=reason, not_before=not_before)

    @classmethod
    def failed(cls, error: CadenzaError) -> Outcome:
        """Not delivered; `error.retryable` says whether another attempt may succeed."""
        retry_after = getattr(error, "retry_after_ms", None)
        return cls(OutcomeKind.FAILED, reason=error.message, retryable=error.retryable,
                   not_before=retry_after)


@dataclass(frozen=True)
class TemplateRecord:
    """A stored template: Jinja2 sources for a subject and a body."""

    key: str
    channel: str
    subject: str
    body: str
    created_at: int = 0
    updated_at: int = 0
    preheader: str = ""
    text: str | None = None
    """Source of the text part; generated from the HTML when None."""
    format: str = "jinja"
    """How `body` is written: jinja (HTML or text) or mjml."""
    compiled: str | None = None
    """`body` after layout and CSS inlining (still a Jinja2 source); None when `body` is
    used as is."""
    locales: Mapping[str, Any] | None = None
    """Locale -> {subject, preheader, body, text, compiled}: translations with fallback."""
    purpose: str = "marketing"
    sender: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"key": self.key, "channel": self.channel, "subject": self.subject,
                "body": self.body, "created_at": self.created_at,
                "updated_at": self.updated_at, "preheader": self.preheader,
                "text": self.text, "format": self.format,
                "locales": dict(self.locales or {}), "purpose": self.purpose,
                "sender": self.sender}
