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
    template_render_timeout_ms: int = Field(
        default=1000, ge=10, le=60_000,
        description="How long rendering one message may take before it fails (the sandbox "
        "checks the deadline on every call, loop iteration and output chunk).")
    publish_sample_contacts: int = Field(
        default=20, ge=0, le=1000,
        description="Recent contacts every reachable template is rendered for when a "
        "journey is published (0 turns the check off).")
    test_send_domains: str = Field(
        default="",
        description="Comma-separated domains test-send addresses may be at (e.g. "
        "example.com); empty: no test sends.")
    # --- email providers (SMTP pool, DKIM, ESPs, rate limits) ---
    email_provider: Literal["smtp", "sendgrid", "postmark"] = Field(
        default="smtp", description="Who submits email: an SMTP server, SendGrid or Postmark.")
    smtp_pool_size: int = Field(default=4, ge=1, le=256,
                                description="SMTP connections used in parallel and reused.")
    smtp_idle_timeout_s: float = Field(default=60.0, gt=0,
                                       description="Close a pooled SMTP connection idle this "
                                       "long, s.")
    smtp_ca_file: str | None = Field(default=None, description="PEM file of CAs to trust for "
                                     "the SMTP server's TLS certificate (system store if unset).")
    smtp_rate_per_s: float = Field(default=0.0, ge=0, description="SMTP messages per second "
                                   "per process (0: unlimited).")
    smtp_throttle_pause_ms: int = Field(
        default=1000, ge=0, description="Pause of every SMTP send after a 421 that states no "
        "time, ms.")
    email_burst_s: float = Field(default=0.1, gt=0, description="Seconds of sending a rate "
                                 "limit may save up while idle.")
    email_max_wait_s: float = Field(
        default=20.0, gt=0, description="A message that would wait longer for the rate limit "
        "is deferred instead (keep it under the dispatcher's claim lease).")
    email_list_id: str | None = Field(default=None, description="List-Id of marketing mail "
                                      "without a sender identity's own, e.g. "
                                      "'News <news.example.com>'.")
    email_unsubscribe_mailto: str | None = Field(
        default=None, description="Address for mailto: unsubscribes in List-Unsubscribe.")
    email_sender_cache_s: float = Field(default=30.0, ge=0, description="How long sender "
                                        "identities are cached, s.")
    dkim_domain: str | None = Field(default=None, description="DKIM signing domain (d=).")
    dkim_selector: str | None = Field(default=None, description="DKIM selector (s=).")
    dkim_private_key_file: str | None = Field(default=None,
                                              description="PEM file of the DKIM private key.")
    sendgrid_api_key: str | None = Field(default=None, description="SendGrid API key with "
                                         "Mail Send permission.")
    sendgrid_base_url: str = Field(default="https://api.sendgrid.com",
                                   description="SendGrid API root.")
    sendgrid_rate_per_s: float = Field(default=0.0, ge=0, description="SendGrid messages per "
                                       "second per process (0: unlimited).")
    postmark_server_token: str | None = Field(default=None, description="Postmark server "
                                              "API token.")
    postmark_base_url: str = Field(default="https://api.postmarkapp.com",
                                   description="Postmark API root.")
    postmark_rate_per_s: float = Field(default=0.0, ge=0, description="Postmark messages per "
                                       "second per process (0: unlimited).")
    postmark_broadcast_stream: str = Field(default="broadcast", description="Postmark message "
                                           "stream of marketing mail.")
    postmark_transactional_stream: str = Field(default="outbound", description="Postmark "
                                               "message stream of transactional mail.")
    esp_timeout_s: float = Field(default=30.0, gt=0, description="ESP API timeout, s.")
    # --- SMS and webhooks (Twilio, Standard Webhooks, SSRF) ---
    twilio_account_sid: str | None = Field(
        default=None, description="Twilio account SID (AC...); SMS is off until it is set.")
    twilio_auth_token: str | None = Field(
        default=None, description="Twilio auth token: API password and the key that signs "
        "status callbacks and inbound messages (X-Twilio-Signature).")
    twilio_from: str | None = Field(
        default=None, description="Sender number (E.164) or alphanumeric sender id.")
    twilio_messaging_service_sid: str | None = Field(
        default=None, description="Messaging Service SID (MG...) instead of twilio_from.")
    twilio_base_url: str = Field(
        default="https://api.twilio.com",
        description="API root (a Twilio-compatible provider or a test server).")
    twilio_timeout_s: float = Field(default=10.0, gt=0, description="Twilio API timeout, s.")
    twilio_status_callbacks: bool = Field(
        default=True, description="Ask Twilio to post delivery statuses to "
        "<public_url>/hooks/twilio/status.")
    sms_help_text: str = Field(
        default="Reply STOP to unsubscribe, START to subscribe again.", max_length=1600,
        description="Reply to an inbound HELP or INFO.")
    sms_stop_text: str = Field(
        default="", max_length=1600,
        description="Reply to STOP (empty: none; Twilio's own opt-out reply is sent anyway).")
    sms_start_text: str = Field(default="", max_length=1600,
                                description="Reply to START (empty: none).")
    webhook_signing_secret: str | None = Field(
        default=None, description="Standard Webhooks secret (whsec_...) that signs webhooks "
        "sent to inline URLs; saved endpoints have their own.")
    webhook_allow_networks: str = Field(
        default="", description="Comma-separated CIDR networks webhooks may reach although "
        "they are private (the SSRF guard refuses every other non-public address).")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Webhook timeout, s.")
    webhook_max_response_bytes: int = Field(
        default=64 * 1024, ge=0, description="Read at most this much of a webhook response.")
    # --- feedback (links, tracking, unsubscribe, bounces) ---
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL recipients reach this server at: unsubscribe, preference and "
        "tracking links point here (https://... in production).",
    )
    token_old_keys: list[str] = Field(
        default_factory=list,
        description="Former secret keys whose link tokens still verify (JSON list); remove a "
        "key to refuse every token it signed.",
    )
    track_opens: bool = Field(default=True, description="Add an open pixel to HTML email.")
    track_clicks: bool = Field(default=True,
                               description="Rewrite links in HTML email to signed redirects.")
    track_text_clicks: bool = Field(default=False,
                                    description="Also rewrite links in plain-text parts.")
    bot_click_seconds: int = Field(
        default=5, ge=0, le=3600,
        description="Clicks and opens this soon after sending are flagged as machine/bot.",
    )
    soft_bounce_limit: int = Field(
        default=3, ge=1, le=1000,
        description="Soft bounces in a row (no delivery between) that suppress an address.",
    )
    sendgrid_webhook_public_key: str | None = Field(
        default=None,
        description="SendGrid Event Webhook verification key (base64 DER, as SendGrid shows "
        "it); /hooks/sendgrid refuses everything until it is set.",
    )
    postmark_webhook_username: str | None = Field(
        default=None, description="HTTP Basic user name Postmark's webhooks must present.")
    postmark_webhook_password: str | None = Field(
        default=None, description="HTTP Basic password Postmark's webhooks must present.")
    webhook_max_age_s: int = Field(
        default=600, ge=10, le=86_400,
        description="Signed provider webhooks with a timestamp further off than this are "
        "refused (replays).",
    )
    dsn_secret: str | None = Field(
        default=None,
        description="Shared secret for POST /hooks/dsn (Bearer); the admin key works too.",
    )
    # --- send-time policies (consent, caps, quiet hours) ---
    engine: bool = Field(
        default=True,
        description="Run the journey engine and the outbox dispatcher inside `cadenza serve` "
        "(turn off for API-only processes when workers run elsewhere).",
    )

    # --- segments ---
    segment_recompute_interval_s: int = Field(
        default=3600, ge=0,
        description="Seconds between full recomputes of every dynamic segment (drift report); "
        "0 turns them off.")
    segment_window_scan_s: int = Field(
        default=60, ge=1, le=86_400,
        description="Seconds between scans for contacts whose counted events just left a "
        "segment's `within` window (they may leave or enter it).")
    # --- lead scoring ---
    score_refresh_interval_s: int = Field(
        default=3600, ge=0,
        description="Seconds between rescoring rounds of every rule model (decay); 0 turns "
        "them off.")
    # --- predictive models ---
    model_retrain_check_s: int = Field(
        default=3600, ge=0,
        description="Seconds between checks for predictive models due for retraining; 0 "
        "turns scheduled retraining off.")
    model_auc_tolerance: float = Field(
        default=0.005, ge=0, le=0.1,
        description="How much lower a candidate's holdout AUC may be than the live "
        "version's before promotion is refused (without --force).")
    # --- lifecycle and routing ---
    routing_sla_check_s: int = Field(
        default=60, ge=0,
        description="Seconds between checks of first-touch SLAs (escalation, reassignment); "
        "0 turns them off.")
    routing_fallback_queue: str = Field(
        default="sales-unassigned", min_length=1, max_length=128,
        description="Task queue that receives leads no routing rule or rep could take "
        "(recorded as 'unassigned' with the reason).")
    routing_due_soon_s: int = Field(
        default=3600, ge=0, le=30 * 86_400,
        description="An open assignment whose first-touch SLA ends within this many seconds "
        "is shown as 'due soon'.")

    # --- governance ---
    encryption_keys: list[str] = Field(
        default_factory=list,
        description="Fernet keys that seal stored credentials (JSON list; the first seals, "
        "all open). Empty: one key derived from the secret key.")

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
