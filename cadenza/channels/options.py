"""Provider options: frozen, documented, validated (a bad value raises with a sentence)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SmtpOptions:
    """Where and how the email channel submits mail, and what every email carries.

    The header options (`from_address`, `message_id_domain`, `list_id`,
    `unsubscribe_mailto`) and the rate options apply to the ESP providers as well."""

    host: str = "localhost"
    """SMTP server host name or address."""
    port: int = 25
    """SMTP server port (25, 587 with STARTTLS, 465 with implicit TLS)."""
    starttls: bool = False
    """Upgrade the connection with STARTTLS before sending (required when true)."""
    implicit_tls: bool = False
    """Connect with TLS from the first byte (port 465)."""
    username: str | None = None
    """Log in with this user name (and `password`) when given."""
    password: str | None = None
    """Password for `username`."""
    from_address: str = "Cadenza <noreply@cadenza.local>"
    """The From header of every message without a sender identity of its own."""
    timeout_s: float = 30.0
    """Seconds to wait for the server at each step before the attempt counts as failed."""
    message_id_domain: str = "cadenza.local"
    """Right-hand side of the deterministic Message-ID."""
    pool_size: int = 4
    """SMTP connections kept open and used in parallel, reused from batch to batch."""
    idle_timeout_s: float = 60.0
    """A pooled connection unused this long is closed (servers drop idle clients anyway)."""
    ca_file: str | None = None
    """PEM file of the certificate authorities to trust for TLS (an internal relay's own
    CA); the system's store when None."""
    rate_per_s: float = 0.0
    """Messages per second this process may submit (token bucket); 0 is unlimited."""
    burst_s: float = 0.1
    """Seconds of sending the bucket may save up while idle (its size: rate x burst_s,
    at least one message)."""
    max_wait_s: float = 20.0
    """A message that would wait longer than this for the rate limit is deferred (not
    attempted, not counted) until the bucket has room; keep it well under the claim lease."""
    throttle_pause_ms: int = 1000
    """After an SMTP 421 (the server closes the connection to shed load) without a stated
    time, every send of this provider pauses this long."""
    list_id: str | None = None
    """`List-Id` of marketing mail without a sender identity's own (e.g. `News
    <news.example.com>`)."""
    unsubscribe_mailto: str | None = None
    """An address for `mailto:` unsubscribes, added to `List-Unsubscribe` after the
    one-click URL."""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"SMTP port must be between 1 and 65535, got {self.port}")
        if self.starttls and self.implicit_tls:
            raise ValueError("choose STARTTLS or implicit TLS for SMTP, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("SMTP authentication needs both a user name and a password")
        if self.timeout_s <= 0:
            raise ValueError(f"SMTP timeout must be positive, got {self.timeout_s}")
        if not self.message_id_domain or "@" in self.message_id_domain:
            raise ValueError("the Message-ID domain must be a host name such as example.com")
        if not 1 <= self.pool_size <= 256:
            raise ValueError(f"the SMTP pool size must be between 1 and 256, got "
                             f"{self.pool_size}")
        if self.idle_timeout_s <= 0:
            raise ValueError(f"the SMTP idle timeout must be positive, got "
                             f"{self.idle_timeout_s}")
        if self.rate_per_s < 0:
            raise ValueError(f"the email rate limit cannot be negative (0 is unlimited), got "
                             f"{self.rate_per_s}")
        if self.burst_s <= 0 or self.max_wait_s <= 0:
            raise ValueError("the rate limit's burst and maximum wait must be positive "
                             "numbers of seconds")
        if self.throttle_pause_ms < 0:
            raise ValueError(f"the SMTP throttle pause cannot be negative, got "
                             f"{self.throttle_pause_ms}")
        mailto = self.unsubscribe_mailto
        if mailto is not None and (mailto.count("@") != 1 or any(
                c in mailto for c in "<>, \t\r\n")):
            raise ValueError(f"the unsubscribe mailto must be a bare address such as "
                             f"unsubscribe@example.com, got {mailto!r}")

    @classmethod
    def from_settings(cls, settings: Any) -> SmtpOptions:
        """Options from `Settings` fields named `smtp_*` and `email_*` (defaults where a
        field is absent)."""
        values = {name: getattr(settings, setting) for name, setting in _SMTP_FIELDS.items()
                  if getattr(settings, setting, None) is not None}
        return cls(**values)


_SMTP_FIELDS = {name: f"smtp_{name}" for name in (
    "host", "port", "starttls", "implicit_tls", "username", "password", "from_address",
    "timeout_s", "message_id_domain", "pool_size", "idle_timeout_s", "ca_file", "rate_per_s",
    "throttle_pause_ms")} | {
    "burst_s": "email_burst_s", "max_wait_s": "email_max_wait_s",
    "list_id": "email_list_id", "unsubscribe_mailto": "email_unsubscribe_mailto"}


@dataclass(frozen=True)
class WebhookOptions:
    """How the webhook channel calls its endpoints."""

    timeout_s: float = 10.0
    """Seconds for connecting, and for each read and write; a timeout is retried."""
    max_response_bytes: int = 64 * 1024
    """Read at most this much of a response body; the rest is discarded unread."""
    user_agent: str = "Cadenza-Webhook/1"
    """The User-Agent header."""
    allow_networks: tuple[str, ...] = ()
    """CIDR networks the SSRF guard lets through although they are private (e.g. 10.20.0.0/16
    for an internal service); everything else non-public stays refused."""
    signing_secret: str | None = None
    """Standard Webhooks secret (`whsec_...`) that signs requests to inline `url`s; saved
    endpoints have their own."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"webhook timeout must be positive, got {self.timeout_s}")
        if self.max_response_bytes < 0:
            raise ValueError("the webhook response cap cannot be negative")
        for network in self.allow_networks:
            try:
                ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                raise ValueError(f"webhook allow-list: {network!r} is not a network; write "
                                 "CIDR such as 10.20.0.0/16 or fd12:3456::/48") from None
        if self.signing_secret is not None and not self.signing_secret.startswith("whsec_"):
            raise ValueError("the webhook signing secret must start with 'whsec_' (generate "
                             "one with `cadenza webhooks secret`)")

    @classmethod
    def from_settings(cls, settings: Any) -> WebhookOptions:
        """Options from the `webhook_*` settings (defaults where a field is absent)."""
        networks = getattr(settings, "webhook_allow_networks", "") or ""
        values: dict[str, Any] = {
            "allow_networks": tuple(n.strip() for n in str(networks).split(",") if n.strip()),
            "signing_secret": getattr(settings, "webhook_signing_secret", None) or None}
        for name in ("timeout_s", "max_response_bytes"):
            value = getattr(settings, f"webhook_{name}", None)
            if value is not None:
                values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class SmsOptions:
    """Where and how the SMS channel reaches a Twilio-compatible REST API."""

    account_sid: str | None = None
    """The account SID (AC...): part of every URL and the Basic-auth user name."""
    auth_token: str | None = None
    """The auth token: the Basic-auth password, and the key of `X-Twilio-Signature`."""
    from_number: str | None = None
    """Sender: an E.164 number or an alphanumeric sender id."""
    messaging_service_sid: str | None = None
    """A Messaging Service (MG...) instead of `from_number` (Twilio picks the sender)."""
    base_url: str = "https://api.twilio.com"
    """API root; tests and Twilio-compatible providers point it elsewhere."""
    status_callback: str | None = None
    """Full URL Twilio posts delivery statuses to (`<public url>/hooks/twilio/status`)."""
    timeout_s: float = 10.0
    """Seconds for connecting and each read; a timeout is retried."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"SMS timeout must be positive, got {self.timeout_s}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"the Twilio base URL must start with https://, got "
                             f"{self.base_url!r}")
        if self.from_number and self.messaging_service_sid:
            raise ValueError("set a Twilio sender number or a messaging service SID, not both")

    @property
    def configured(self) -> bool:
        """True when credentials and a sender are set."""
        return bool(self.account_sid and self.auth_token
                    and (self.from_number or self.messaging_service_sid))

    @classmethod
    def from_settings(cls, settings: Any) -> SmsOptions:
        """Options from the `twilio_*` settings; the status callback from `public_url`."""
        public = getattr(settings, "public_url", None)
        callbacks = getattr(settings, "twilio_status_callbacks", True)
        return cls(
            account_sid=getattr(settings, "twilio_account_sid", None) or None,
            auth_token=getattr(settings, "twilio_auth_token", None) or None,
            from_number=getattr(settings, "twilio_from", None) or None,
            messaging_service_sid=getattr(settings, "twilio_messaging_service_sid", None)
            or None,
            base_url=getattr(settings, "twilio_base_url", None) or "https://api.twilio.com",
            status_callback=(f"{str(public).rstrip('/')}/hooks/twilio/status"
                             if public and callbacks else None),
            timeout_s=getattr(settings, "twilio_timeout_s", None) or 10.0)
