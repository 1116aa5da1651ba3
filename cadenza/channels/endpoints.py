"""Saved webhook endpoints: a key, a URL, a Standard Webhooks signing secret, extra headers.

A journey's send step names an endpoint (`params: {endpoint: crm-sync}`) instead of carrying a
URL and a secret in its definition. The URL passes the SSRF guard, with DNS resolution, when it
is saved, and again (resolved afresh and pinned) on every send. The secret is write-only: it is
shown once, when it is generated or rotated, and never listed.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.signing import check_secret, new_secret
from cadenza.channels.ssrf import ResolutionFailed, SsrfGuard, UrlRefused
from cadenza.clock import Clock
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Store, dialect_insert, schema

KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
RESERVED_HEADERS = frozenset({"idempotency-key", "content-type", "content-length", "host",
                              "transfer-encoding", "connection", "webhook-id",
                              "webhook-timestamp", "webhook-signature"})
MAX_URL = 2048
MAX_HEADERS = 32
_t = schema.webhook_endpoints


def check_key(key: object, field: str = "key") -> str:
    """An endpoint key is a lower-case slug (crm-sync, billing.events)."""
    if not isinstance(key, str) or not KEY.match(key):
        raise ValidationFailed(field, f"{str(key)[:80]!r} must be a lower-case slug of at most "
                               "64 characters: letters, digits, '-', '_' and '.'")
    return key


def check_headers(headers: object, field: str = "headers") -> dict[str, str]:
    """Extra request headers: names are HTTP tokens, values one line, none Cadenza sets."""
    if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValidationFailed(field, "must map header names to text")
    if len(headers) > MAX_HEADERS:
        raise ValidationFailed(field, f"has {len(headers)} headers; at most {MAX_HEADERS}")
    for name, value in headers.items():
        where = f"{field}.{name}"
        if not HEADER_NAME.match(name):
            raise ValidationFailed(where, "is not a valid header name (letters, digits, '-')")
        if name.lower() in RESERVED_HEADERS:
            raise ValidationFailed(where, "is set by Cadenza and cannot be overridden")
        if "\r" in value or "\n" in value or len(value) > 8192:
            raise ValidationFailed(where, "must be one line of at most 8192 characters")
    return dict(headers)


@dataclass(frozen=True)
class WebhookEndpoint:
    """A saved endpoint. `secret` is for signing only; `to_dict` leaves it out."""

    key: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0
    secret: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, without the secret (write-only)."""
        return {"key": self.key, "url": self.url, "headers": dict(self.headers),
                "signed": bool(self.secret), "created_at": self.created_at,
                "updated_at": self.updated_at}


@dataclass(frozen=True)
class SavedEndpoint:
    """The result of a save or rotation: the endpoint, and the secret when it is new (shown
    this once)."""

    endpoint: WebhookEndpoint
    created: bool
    secret: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the endpoint, plus `secret` when it was just set."""
        body = self.endpoint.to_dict()
        if self.secret is not None:
            body["secret"] = self.secret
        return body


def load_endpoints(conn: Connection, keys: Iterable[str]) -> dict[str, WebhookEndpoint]:
    """Endpoints (with their secrets) by key, in one statement."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(_t.c.key, _t.c.url, _t.c.headers, _t.c.created_at,
                                  _t.c.updated_at, _t.c.secret)
                        .where(_t.c.key.in_(wanted))).all()
    return {row[0]: WebhookEndpoint(row[0], row[1], dict(row[2] or {}), int(row[3]),
                                    int(row[4]), row[5] or "") for row in rows}


class EndpointService:
    """Save (checked against SSRF, with resolution), list, rotate and remove endpoints."""

    def __init__(self, store: Store, clock: Clock, guard: SsrfGuard | None = None,
                 token: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.store = store
        self.clock = clock
        self.guard = guard or SsrfGuard()
        self._token = token

    async def check_url(self, url: object, field: str = "url") -> str:
        """`url` if the guard lets it through now (resolved); ValidationFailed otherwise."""
        if not isinstance(url, str) or not url.strip():
            raise ValidationFailed(field, "is required: the http(s) address to POST to")
        if len(url) > MAX_URL:
            raise ValidationFailed(field, f"is {len(url)} characters; at most {MAX_URL}")
        try:
            await self.guard.check(url.strip())
        except UrlRefused as exc:
            raise ValidationFailed(field, exc.why) from None
        except ResolutionFailed as exc:
            raise ValidationFailed(field, f"{exc.reason}; check the host name") from None
        return url.strip()

    async def save(self, key: str, url: str, headers: Mapping[str, str] | None = None,
                   secret: str | None = None) -> SavedEndpoint:
        """Create or update `key`. A new endpoint gets a generated secret unless one is given;
        an update keeps its secret unless one is given."""
        check_key(key)
        checked_url = await self.check_url(url)
        extra = check_headers(headers or {})
        if secret is not None:
            check_secret(secret)
        return await asyncio.to_thread(self._write, key, checked_url, extra, secret)

    def _write(self, key: str, url: str, headers: dict[str, str],
               secret: str | None) -> SavedEndpoint:
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            existing = load_endpoints(conn, [key]).get(key)
            shown = secret if secret is not None or existing else new_secret(self._token)
            stored = shown if shown is not None else existing.secret if existing else ""
            insert = dialect_insert(conn, _t)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["key"],
                set_={"url": insert.excluded.url, "headers": insert.excluded.headers,
                      "secret": insert.excluded.secret,
                      "updated_at": insert.excluded.updated_at},
            ), {"key": key, "url": url, "headers": headers, "secret": stored,
                "created_at": now, "updated_at": now})
        created_at = existing.created_at if existing else now
        endpoint = WebhookEndpoint(key, url, headers, created_at, now, stored)
        return SavedEndpoint(endpoint, existing is None, shown)

    def get(self, key: str) -> WebhookEndpoint:
        """The endpoint `key` (NotFound when there is none)."""
        with self.store.read() as conn:
            found = load_endpoints(conn, [check_key(key)])
        if key not in found:
            raise NotFound("webhook endpoint", key)
        return found[key]

    def all(self) -> list[WebhookEndpoint]:
        """Every endpoint, by key."""
        with self.store.read() as conn:
            keys = conn.execute(sa.select(_t.c.key).order_by(_t.c.key)).scalars().all()
            found = load_endpoints(conn, keys)
        return [found[k] for k in keys]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys among `keys` that name no saved endpoint (for publish-time checks)."""
        wanted = set(keys)
        with self.store.read() as conn:
            found = load_endpoints(conn, wanted)
        return sorted(wanted - set(found))

    def rotate(self, key: str, secret: str | None = None) -> SavedEndpoint:
        """Replace the endpoint's secret (generated unless given); the new one is shown once.
        Requests signed from now on use it; update the receiver at the same time."""
        check_key(key)
        fresh = check_secret(secret) if secret is not None else new_secret(self._token)
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            done = conn.execute(sa.update(_t).where(_t.c.key == key)
                                .values(secret=fresh, updated_at=now))
            if not done.rowcount:
                raise NotFound("webhook endpoint", key)
            endpoint = load_endpoints(conn, [key])[key]
        return SavedEndpoint(endpoint, False, fresh)

    def remove(self, key: str) -> None:
        """Delete the endpoint; steps that name it fail (not retried) until it is saved
        again."""
        check_key(key)
        with self.store.begin() as conn:
            if not conn.execute(sa.delete(_t).where(_t.c.key == key)).rowcount:
                raise NotFound("webhook endpoint", key)
