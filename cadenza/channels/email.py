"""The `email` channel: SMTP submission through a pool of connections, or an ESP's HTTP API.

`email_provider` chooses the provider (smtp, sendgrid, postmark); every provider sends the
same parts (`email_parts`): From/Reply-To/List-Id from the message's sender identity,
`List-Unsubscribe` with the one-click URL (RFC 8058) on marketing mail, text and HTML.

Every message gets a Message-ID derived from its idempotency key, so a resend after a crash
or a retry carries the same id and a receiving system (or a person's mail client) can fold
the duplicates. Connections are pooled and reused from batch to batch (`smtp_pool`).

SMTP replies decide retries: 4xx (and connection failures, timeouts) are worth another
attempt, 5xx are not (a 550 "no such user" stays a 550). 421 and 454 are the server
shedding load: the attempt's rate-limit token is given back, and when the server says for
how long (or closes the connection with 421) every send of the provider pauses that long.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiosmtplib

from cadenza.channels.base import ChannelDeps, ChannelSpec, check_known, check_text
from cadenza.channels.dkim import DkimSigner
from cadenza.channels.email_parts import (
    EmailParts,
    Sender,
    SenderBook,
    email_parts,
    message_id,
    smtp_bytes,
)
from cadenza.channels.errors import ChannelError
from cadenza.channels.models import Message, SendResult
from cadenza.channels.options import SmtpOptions
from cadenza.channels.ratelimit import RateLimited, TokenBucket, stated_delay_s
from cadenza.channels.smtp_pool import PooledConnection, SmtpPool, transaction
from cadenza.clock import Clock, SystemClock
from cadenza.errors import ConfigError

__all__ = ["PROVIDERS", "SPEC", "EmailChannel", "bucket_for", "check_params", "create",
           "message_id"]

_KNOWN = frozenset({"subject", "body", "reply_to"})
PROVIDERS = ("smtp", "sendgrid", "postmark")
THROTTLE_CODES = frozenset({421, 454})


def check_params(params: Mapping[str, Any], where: str) -> None:
    """Inline `subject` and `body` (when no template is named) and `reply_to` are optional."""
    check_known(params, where, _KNOWN)
    check_text(params, where, "subject", max_length=2000)
    check_text(params, where, "body")
    check_text(params, where, "reply_to", max_length=320)


def bucket_for(options: SmtpOptions, rate_per_s: float) -> TokenBucket:
    """The token bucket of a provider sending at most `rate_per_s` (0: unlimited)."""
    return TokenBucket(rate_per_s, capacity=max(1.0, rate_per_s * options.burst_s))


def default_sender(options: SmtpOptions) -> Sender:
    """The sender of mail without an identity: `from_address` and `list_id` of the options;
    ConfigError naming the setting when one cannot be used."""
    try:
        return Sender.build(None, options.from_address, None, options.list_id)
    except ValueError as exc:
        field = "LIST_ID" if str(exc).startswith("list_id") else "FROM_ADDRESS"
        prefix = "EMAIL" if field == "LIST_ID" else "SMTP"
        raise ConfigError(f"CADENZA_{prefix}_{field}", str(exc)) from None


class EmailChannel:
    """Sends through one SMTP server over a pool of connections, within a rate limit."""

    name = "email"
    text_fields: tuple[str, ...] = ("subject", "body")
    record_each = True
    address_kind: str | None = "email"

    def __init__(self, options: SmtpOptions | None = None, *, senders: SenderBook | None = None,
                 dkim: DkimSigner | None = None, clock: Clock | None = None,
                 limiter: TokenBucket | None = None, pool: SmtpPool | None = None) -> None:
        self.options = options or SmtpOptions()
        self.pool = pool or SmtpPool(self.options)
        self.senders = senders
        self.dkim = dkim
        self.clock = clock or SystemClock()
        self.limiter = limiter or bucket_for(self.options, self.options.rate_per_s)
        self.default_sender = default_sender(self.options)

    @property
    def connections_opened(self) -> int:
        """Connections this channel has opened (for tests and metrics)."""
        return self.pool.connections_opened

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """See the module's `check_params`."""
        check_params(params, where)

    async def parts(self, message: Message) -> EmailParts:
        """The parts of `message` with its sender identity resolved."""
        return email_parts(message, self.options, await resolve_sender(self, message),
                           self.default_sender)

    async def send(self, message: Message) -> SendResult:
        """Submit the message; the provider reference is its Message-ID."""
        parts = await self.parts(message)
        data = smtp_bytes(parts)
        if self.dkim is not None:
            data = self.dkim.sign(data)
        error: ChannelError | None = None
        wait: float | None = None
        try:
            async with self.pool.connection() as conn:
                wait = await self.limiter.acquire(self.options.max_wait_s)
                if wait is None:
                    error = await self._submit(conn, parts.sender.envelope_from, parts.to, data)
        except aiosmtplib.SMTPResponseException as exc:  # refused while connecting (AUTH)
            error = _reply_error(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            error = self._unreachable(exc)
        if wait is not None:
            raise RateLimited("email", f"the SMTP rate limit ({self.options.rate_per_s:g}/s) "
                              f"has no room within {self.options.max_wait_s:g} s",
                              self.clock.now_ms() + int(wait * 1000) + 1)
        if error is not None:
            raise error
        return SendResult(provider_ref=parts.message_id)

    async def _submit(self, conn: PooledConnection, sender: str, to: str,
                      data: bytes) -> ChannelError | None:
        try:
            await transaction(conn.smtp, sender, to, data, self.options.timeout_s)
        except aiosmtplib.SMTPResponseException as exc:
            return self._refused(conn, exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            conn.broken = True
            return self._unreachable(exc, refund=True)
        return None

    def _refused(self, conn: PooledConnection, code: int, text: str) -> ChannelError:
        self.limiter.refund()  # the server did not accept it: it did not count
        if code not in THROTTLE_CODES:
            return _reply_error(code, text)
        if code == 421:  # the server closes the connection after a 421
            conn.broken = True
        stated = stated_delay_s(text)
        pause = stated if stated is not None else (
            self.options.throttle_pause_ms / 1000 if code == 421 else None)
        retry_after = None
        if pause:
            self.limiter.pause(pause)
            retry_after = self.clock.now_ms() + int(pause * 1000)
        else:
            self.limiter.hold()
        return ChannelError("email", f"SMTP {code} {text.strip()[:300]}", retryable=True,
                            retry_after_ms=retry_after)

    def _unreachable(self, exc: BaseException, *, refund: bool = False) -> ChannelError:
        if refund:
            self.limiter.refund()
        o = self.options
        hint = ""
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            hint = ("; the server's TLS certificate is not trusted (set CADENZA_SMTP_CA_FILE "
                    "to its CA's PEM file)")
        return ChannelError("email", f"SMTP {o.host}:{o.port}: {type(exc).__name__}: "
                            f"{exc}{hint}", retryable=True)

    async def end_batch(self) -> None:
        """Keep the connections for the next batch; close them if none comes in time."""
        self.pool.schedule_reap()

    async def close(self) -> None:
        """Close every connection; afterwards the channel may be used from another loop."""
        await self.pool.close()


async def resolve_sender(channel: Any, message: Message) -> Sender:
    """The sender identity `message.sender` names, or the channel's default sender."""
    if not message.sender:
        return channel.default_sender  # type: ignore[no-any-return]
    senders: SenderBook | None = channel.senders
    if senders is None:
        raise ChannelError("email", f"sender identity {message.sender!r}: this email channel "
                           "reads no sender identities", retryable=False)
    return await senders.get(message.sender)


def _reply_error(code: int, text: str) -> ChannelError:
    retryable = 400 <= code < 500
    hint = ""
    if code in (530, 534, 535, 538):
        hint = " (check CADENZA_SMTP_USERNAME and CADENZA_SMTP_PASSWORD, and TLS)"
    return ChannelError("email", f"SMTP {code} {text.strip()[:300]}{hint}",
                        retryable=retryable)


def create(deps: ChannelDeps) -> Any:
    """The email channel of the configured provider (`email_provider`, SMTP by default)."""
    settings = deps.settings
    provider = str(getattr(settings, "email_provider", "smtp") or "smtp")
    if provider not in PROVIDERS:
        raise ConfigError("CADENZA_EMAIL_PROVIDER",
                          f"{provider!r} is not an email provider; one of {', '.join(PROVIDERS)}")
    ttl_ms = int(float(getattr(settings, "email_sender_cache_s", 30.0)) * 1000)
    senders = SenderBook(deps.store, deps.clock, ttl_ms)
    if provider != "smtp":
        from cadenza.channels import esp  # only when an ESP is configured

        return esp.create(provider, deps, senders)
    return EmailChannel(deps.smtp, senders=senders, dkim=DkimSigner.from_settings(settings),
                        clock=deps.clock)


SPEC = ChannelSpec("email", check_params, create)
