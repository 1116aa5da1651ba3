"""Standard Webhooks signatures (https://www.standardwebhooks.com) for webhook bodies.

Each signed request carries three headers:

    webhook-id          the message's idempotency key (the same on every retry)
    webhook-timestamp   seconds since the epoch when the attempt was made
    webhook-signature   v1,<base64 HMAC-SHA256 of "id.timestamp.body" keyed with the secret>

Secrets are `whsec_` followed by base64 of 24 to 64 random bytes. Receivers verify with any
Standard Webhooks library (`standardwebhooks.Webhook(secret).verify(body, headers)`); this
module signs with the same library, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import secrets
from collections.abc import Callable, Mapping

from standardwebhooks import Webhook

from cadenza.errors import ValidationFailed

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


def new_secret(token: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh signing secret (`whsec_` + base64 of 32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(token(32)).decode()


def check_secret(secret: str, field: str = "secret") -> str:
    """`secret` if it is a usable Standard Webhooks secret; ValidationFailed naming `field`."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValidationFailed(field, "must start with 'whsec_' followed by base64 (leave it "
                               "out to have one generated)")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(field, "the part after 'whsec_' is not base64") from None
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise ValidationFailed(field, f"decodes to {len(raw)} bytes; use {MIN_SECRET_BYTES} "
                               f"to {MAX_SECRET_BYTES} random bytes")
    return secret


def signature_headers(secret: str, message_id: str, at_ms: int,
                      body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at sending `body`."""
    seconds = at_ms // 1000
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    signature = Webhook(secret).sign(message_id, when, body.decode("utf-8"))
    return {"webhook-id": message_id, "webhook-timestamp": str(seconds),
            "webhook-signature": signature}


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Check a signed request as a receiver would (raises standardwebhooks'
    WebhookVerificationError); for tests and for `cadenza webhooks` diagnostics."""
    Webhook(secret).verify(body, dict(headers), json_parse=False)
