"""Settings, built once from the environment (`CADENZA_` prefix) and passed explicitly."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cadenza.errors import ConfigError

DEFAULT_DB_FILE = "cadenza.db"
SECRET_FILE = ".cadenza-secret"  # noqa: S105 - a file name, not a secret


class Settings(BaseSettings):
    """Every setting Cadenza reads; one instance per process, passed to whoever needs it."""

    model_config = SettingsConfigDict(env_prefix="CADENZA_", frozen=True, extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_DB_FILE}",
        description="SQLAlchemy URL: sqlite:///path (default ./cadenza.db) or postgresql://...",
    )
    secret_key: str = Field(
        default="",
        description="Signs tokens and keys API-key hashes; at least 32 characters. When empty, "
        "one is generated once and kept in ./.cadenza-secret.",
    )
    host: str = Field(default="127.0.0.1", description="Address `cadenza serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `cadenza serve` binds.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_future_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=0,
        description="Events stamped further than this in the future (after clock-skew "
        "correction) are rejected.",
    )
    max_past_ms: int = Field(
        default=5 * 365 * 24 * 3600 * 1000,
        ge=0,
        description="Events stamped further than this in the past are rejected.",
    )
    key_cache_seconds: float = Field(
        default=2.0, ge=0, description="How long a checked API key is trusted before re-reading."
    )
    smtp_host: str = Field(default="localhost", description="SMTP server for email.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port.")
    smtp_starttls: bool = Field(default=False, description="Upgrade with STARTTLS.")
    smtp_implicit_tls: bool = Field(default=False, description="TLS from the start (465).")
    smtp_username: str | None = Field(default=None, description="SMTP login, if any.")
    smtp_password: str | None = Field(default=None, description="SMTP password, if any.")
    smtp_from_address: str = Field(default="Cadenza <noreply@cadenza.local>",
                                   description="From: of email without its own sender.")
    smtp_timeout_s: float = Field(default=30.0, gt=0, description="SMTP timeout, seconds.")
    smtp_message_id_domain: str = Field(default="cadenza.local",
                                        description="Domain part of generated Message-IDs.")
    # --- templates (render, preview, test sends) ---
    # --- email providers (SMTP pool, DKIM, ESPs, rate limits) ---
    # --- SMS and webhooks (Twilio, Standard Webhooks, SSRF) ---
    # --- feedback (links, tracking, unsubscribe, bounces) ---
    # --- send-time policies (consent, caps, quiet hours) ---
    engine: bool = Field(
        default=True,
        description="Run the journey engine and the outbox dispatcher inside `cadenza serve` "
        "(turn off for API-only processes when workers run elsewhere).",
    )

    @field_validator("database_url")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "sqlite+pysqlite:", "postgresql")):
            raise ValueError(
                "must start with sqlite:/// or postgresql:// "
                "(for example sqlite:///cadenza.db or postgresql://user@host/db)"
            )
        return value

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError(
                "must be at least 32 characters; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        return value

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Read the environment once; raise ConfigError naming the bad variable."""
        try:
            settings = cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            name = "CADENZA_" + str(first["loc"][0]).upper() if first["loc"] else "CADENZA_*"
            raise ConfigError(name, first["msg"].removeprefix("Value error, ")) from None
        if not settings.secret_key:
            settings = settings.model_copy(update={"secret_key": _local_secret()})
        return settings

    @property
    def is_sqlite(self) -> bool:
        """True when the store is an SQLite file."""
        return self.database_url.startswith("sqlite")


def _local_secret() -> str:
    """Generate a secret once for a development install and keep it beside the database."""
    path = Path(SECRET_FILE)
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value
