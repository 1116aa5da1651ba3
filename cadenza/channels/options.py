"""Provider options: frozen, documented, validated (a bad value raises with a sentence)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SmtpOptions:
    """Where and how the email channel submits mail."""

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
    """The From header of every message."""
    timeout_s: float = 30.0
    """Seconds to wait for the server at each step before the attempt counts as failed."""
    message_id_domain: str = "cadenza.local"
    """Right-hand side of the deterministic Message-ID."""

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

    @classmethod
    def from_settings(cls, settings: Any) -> SmtpOptions:
        """Options from `Settings` fields named `smtp_*` (defaults where a field is absent)."""
        values = {name: getattr(settings, f"smtp_{name}") for name in _SMTP_FIELDS
                  if getattr(settings, f"smtp_{name}", None) is not None}
        return cls(**values)


_SMTP_FIELDS = ("host", "port", "starttls", "implicit_tls", "username", "password",
                "from_address", "timeout_s", "message_id_domain")


@dataclass(frozen=True)
class WebhookOptions:
    """How the webhook channel calls its endpoints."""

    timeout_s: float = 10.0
    """Seconds for connecting, and for each read and write; a timeout is retried."""
    max_response_bytes: int = 64 * 1024
    """Read at most this much of a response body; the rest is discarded unread."""
    user_agent: str = "Cadenza-Webhook/1"
    """The User-Agent header."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"webhook timeout must be positive, got {self.timeout_s}")
        if self.max_response_bytes < 0:
            raise ValueError("the webhook response cap cannot be negative")
