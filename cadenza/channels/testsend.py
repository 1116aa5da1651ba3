"""Test sends: a template rendered as a real contact, mailed to a verified internal address.

Only addresses that are (1) at a domain the operator listed in `test_send_domains` and
(2) verified by a token mailed to them may receive test sends, so a test send can never be
used to mail a template to an arbitrary person. The token is shown once, in that email; only
its SHA-256 is stored. The domain rule is checked again at every test send, so removing a
domain from the settings stops test sends to it at once.

Mail goes through the real email channel (the one the dispatcher would build from the same
settings), with the subject prefixed "[Test] ".
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from cadenza.channels.base import Channel
from cadenza.channels.errors import ChannelError
from cadenza.channels.models import Message, Recipient
from cadenza.channels.templates import TemplateService
from cadenza.clock import Clock
from cadenza.errors import ConfigError, Forbidden, NotFound, ValidationFailed
from cadenza.store import Store, dialect_insert, schema

TEST_PREFIX = "[Test] "
_a = schema.test_addresses
T = TypeVar("T")


@dataclass(frozen=True)
class TestAddress:
    """An internal address that may receive test sends once verified."""

    __test__ = False  # not a pytest class

    address: str
    verified: bool
    created_at: int
    verified_at: int | None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"address": self.address, "verified": self.verified,
                "created_at": self.created_at, "verified_at": self.verified_at}


def parse_domains(value: str | Sequence[str]) -> tuple[str, ...]:
    """The allowed domains from the setting (a comma list), lower-case."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(d.strip().lower().lstrip("@") for d in items if d.strip())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a channel call from synchronous code (API worker threads and the CLI)."""
    return asyncio.run(coroutine)


class TestSendService:
    """Verified test addresses and test sends through the email channel."""

    __test__ = False  # not a pytest class

    def __init__(self, store: Store, clock: Clock, templates: TemplateService,
                 email: Channel | None, domains: str | Sequence[str]) -> None:
        self.store = store
        self.clock = clock
        self.templates = templates
        self.email = email
        """The email channel; None when none can be built (sends are refused with why)."""
        self.domains = parse_domains(domains)

    @classmethod
    def from_settings(cls, store: Store, clock: Clock, settings: Any,
                      templates: TemplateService | None = None) -> TestSendService:
        """A service that mails through the email channel the settings configure."""
        from cadenza.channels.base import ChannelDeps
        from cadenza.channels.options import SmtpOptions
        from cadenza.channels.registry import ChannelRegistry

        try:
            smtp = SmtpOptions.from_settings(settings)
        except ValueError as exc:
            raise ConfigError("CADENZA_SMTP_*", str(exc)) from None
        registry = ChannelRegistry.build(ChannelDeps(store, clock, smtp=smtp, settings=settings),
                                         names=["email"])
        return cls(store, clock, templates or TemplateService.from_settings(store, clock,
                                                                            settings),
                   registry.get("email"), settings.test_send_domains)

    # --- addresses ----------------------------------------------------------------------------

    def _check_domain(self, address: str, field: str = "address") -> str:
        if not self.domains:
            raise ValidationFailed(field, "test sends are turned off: no domain is allowed; "
                                   "set CADENZA_TEST_SEND_DOMAINS to your team's domains "
                                   "(e.g. example.com)")
        try:
            normalized = validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValidationFailed(field, f"{address[:200]!r} is not a valid address: "
                                   f"{exc}") from None
        domain = normalized.rpartition("@")[2].lower()
        if not any(domain == d or domain.endswith("." + d) for d in self.domains):
            raise ValidationFailed(field, f"{domain!r} is not a test-send domain; allowed: "
                                   f"{', '.join(self.domains)} (CADENZA_TEST_SEND_DOMAINS)")
        return normalized.lower()

    def add(self, address: str) -> TestAddress:
        """Add (or re-verify) an address: a new token is mailed to it and must be confirmed
        with `verify`. An address already verified stays verified."""
        normalized = self._check_domain(address)
        token = secrets.token_hex(16)  # hex: never starts with "-" (a CLI option)
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            row = conn.execute(sa.select(_a.c.verified_at, _a.c.created_at)
                               .where(_a.c.address == normalized)).first()
            if row is not None and row[0] is not None:
                return TestAddress(normalized, True, int(row[1]), int(row[0]))
            insert = dialect_insert(conn, _a)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["address"], set_={"token_hash": insert.excluded.token_hash}),
                {"address": normalized, "token_hash": _hash(token), "verified_at": None,
                 "created_at": now})
        body = (f"Someone asked for {normalized} to receive Cadenza test sends.\n\n"
                f"Verification token: {token}\n\n"
                f"Confirm with: cadenza test-addresses verify {normalized} {token}\n"
                "or POST /api/test-addresses/verify. Ignore this email if it was not you.\n")
        self._mail(normalized, "Verify your Cadenza test address", {"body": body,
                                                                   "html": False},
                   key=f"test-address:{normalized}:{now}")
        return TestAddress(normalized, False, now if row is None else int(row[1]), None)

    def verify(self, address: str, token: str) -> TestAddress:
        """Confirm an address with the token mailed to it."""
        normalized = address.strip().lower()
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            row = conn.execute(sa.select(_a.c.token_hash, _a.c.verified_at, _a.c.created_at)
                               .where(_a.c.address == normalized)).first()
            if row is None:
                raise NotFound("test address", normalized)
            if row[1] is not None:
                return TestAddress(normalized, True, int(row[2]), int(row[1]))
            if not row[0] or not hmac.compare_digest(str(row[0]), _hash(token.strip())):
                raise ValidationFailed("token", "does not match; use the token from the latest "
                                       "verification email (add the address again for a new "
                                       "one)")
            conn.execute(sa.update(_a).where(_a.c.address == normalized)
                         .values(token_hash=None, verified_at=now))
        return TestAddress(normalized, True, int(row[2]), now)

    def all(self) -> list[TestAddress]:
        """Every test address, verified or pending."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(_a.c.address, _a.c.verified_at, _a.c.created_at)
                                .order_by(_a.c.address)).all()
        return [TestAddress(r[0], r[1] is not None, int(r[2]),
                            None if r[1] is None else int(r[1])) for r in rows]

    def remove(self, address: str) -> None:
        """Remove a test address (NotFound when it is not one)."""
        normalized = address.strip().lower()
        with self.store.begin() as conn:
            if not conn.execute(sa.delete(_a).where(_a.c.address == normalized)).rowcount:
                raise NotFound("test address", normalized)

    # --- sending ------------------------------------------------------------------------------

    def send(self, key: str, address: str, contact_id: int,
             entry: Mapping[str, Any] | None = None, *,
             locale: str | None = None) -> dict[str, Any]:
        """Render template `key` as contact `contact_id` and mail it to `address`, which
        must be a verified test address at an allowed domain."""
        normalized = self._check_domain(address)
        with self.store.read() as conn:
            verified = conn.execute(sa.select(_a.c.verified_at)
                                    .where(_a.c.address == normalized)).scalar()
        if verified is None:
            raise Forbidden(f"{normalized} is not a verified test address; add it (cadenza "
                            "test-addresses add) and confirm the token mailed to it")
        template = self.templates.get(key)
        if template.channel != "email":
            raise ValidationFailed("key", f"template {key!r} is for {template.channel}; test "
                                   "sends are for email templates")
        _, contact, content = self.templates.render_as(template, contact_id, entry,
                                                       locale=locale)
        content.pop("locale", None)
        subject = TEST_PREFIX + str(content.get("subject", ""))
        now = self.clock.now_ms()
        ref = self._mail(normalized, subject, content, key=f"test-send:{key}:{normalized}:{now}",
                         contact=contact, template=key, sender=template.sender)
        return {"address": normalized, "template": key, "contact_id": contact_id,
                "subject": subject, "provider_ref": ref}

    def _mail(self, address: str, subject: str, content: Mapping[str, Any], *, key: str,
              contact: Recipient | None = None, template: str | None = None,
              sender: str | None = None) -> str | None:
        channel = self.email
        if channel is None:
            raise ConfigError("CADENZA_SMTP_*", "no email channel is configured")
        message = Message(
            outbox_id=0, key=key, channel="email",
            contact=contact or Recipient(0, email=address), params={},
            content={**content, "to": address, "subject": subject}, at_ms=self.clock.now_ms(),
            template=template, address_kind="email", address=address,
            purpose="transactional", sender=sender)

        async def send() -> str | None:
            try:
                return (await channel.send(message)).provider_ref
            finally:
                await channel.close()

        try:
            return _run(send())
        except ChannelError as exc:
            raise ChannelError("email", f"the test email to {address} was not sent: "
                               f"{exc.reason}", retryable=exc.retryable) from None
