"""API keys: write keys for ingestion, admin keys for everything else.

A key is shown once, when created; only an HMAC-SHA256 of it (keyed with the secret key) is
stored, so a stolen database does not yield usable keys. Keys are long random tokens, so a fast
keyed hash is enough (no password-style stretching) and lets a key be looked up by its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import AuthError, KeyRevoked, NotFound, ValidationFailed
from cadenza.store import Store, schema

k = schema.api_keys


class KeyKind(StrEnum):
    """What a key may do."""

    WRITE = "write"
    """Send events to /v1/* (safe to embed in a website or app)."""
    ADMIN = "admin"
    """Everything under /api."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: int
    kind: KeyKind
    name: str
    prefix: str
    created_at: int
    revoked_at: int | None
    last_used_at: int | None


def hash_key(secret_key: str, plaintext: str) -> str:
    """The stored form of a key."""
    return hmac.new(secret_key.encode(), plaintext.encode(), hashlib.sha256).hexdigest()


def _row_to_key(row: sa.RowMapping) -> ApiKey:
    return ApiKey(row["id"], KeyKind(row["kind"]), row["name"], row["prefix"],
                  row["created_at"], row["revoked_at"], row["last_used_at"])


def create_key(conn: Connection, secret_key: str, kind: KeyKind | str, name: str,
               now_ms: int) -> tuple[ApiKey, str]:
    """A new key and its plaintext (shown once, never stored)."""
    try:
        kind = KeyKind(kind)
    except ValueError:
        raise ValidationFailed("kind", f"{kind!r} must be 'write' or 'admin'") from None
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise ValidationFailed("name", "must be 1 to 128 characters")
    plaintext = f"cdz_{kind.value[0]}_{secrets.token_urlsafe(32)}"
    prefix = plaintext[:12]
    key_id = conn.execute(
        sa.insert(k).values(kind=kind.value, name=name, prefix=prefix,
                            key_hash=hash_key(secret_key, plaintext), created_at=now_ms)
        .returning(k.c.id)
    ).scalar_one()
    return ApiKey(key_id, kind, name, prefix, now_ms, None, None), plaintext


def list_keys(conn: Connection) -> list[ApiKey]:
    """Every key, newest first, revoked ones included."""
    return [_row_to_key(r) for r in conn.execute(sa.select(k).order_by(k.c.id.desc()))
            .mappings()]


def revoke_key(conn: Connection, key_id: int, now_ms: int) -> ApiKey:
    """Revoke a key (idempotent); it stops working at once in this process."""
    row = conn.execute(sa.select(k).where(k.c.id == key_id)).mappings().first()
    if row is None:
        raise NotFound("api key", key_id)
    if row["revoked_at"] is None:
        conn.execute(sa.update(k).where(k.c.id == key_id).values(revoked_at=now_ms))
    return _row_to_key(conn.execute(sa.select(k).where(k.c.id == key_id)).mappings().one())


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class KeyChecker:
    """Checks presented keys, trusting a positive answer for `ttl` seconds.

    Revocation through `revoke` clears the cache of this process at once; another process
    notices within `ttl` seconds.
    """

    def __init__(self, store: Store, secret_key: str, ttl: float = 2.0) -> None:
        self.store = store
        self.secret_key = secret_key
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def is_cached(self, plaintext: str) -> bool:
        """True when `check` can answer for this key without reading the store."""
        cached = self._cache.get(hash_key(self.secret_key, plaintext)) if plaintext else None
        return cached is not None and cached[0] > time.monotonic()

    def check(self, plaintext: str, kinds: tuple[KeyKind, ...], now_ms: int) -> ApiKey:
        """The key, if valid and of one of `kinds`; AuthError otherwise."""
        if not plaintext:
            raise AuthError("no API key was sent; send it as HTTP Basic username (write keys) "
                            "or as 'Authorization: Bearer <key>'")
        digest = hash_key(self.secret_key, plaintext)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            key = cached[1]
        else:
            key = self._load(digest, now_ms)
        if key.kind not in kinds:
            wanted = " or ".join(k.value for k in kinds)
            raise AuthError(
                f"this is {_article(key.kind.value)} {key.kind.value} key; this endpoint needs "
                f"{_article(wanted)} {wanted} key")
        return key

    def _load(self, digest: str, now_ms: int) -> ApiKey:
        with self.store.read() as conn:
            row = conn.execute(sa.select(k).where(k.c.key_hash == digest)).mappings().first()
        if row is None:
            raise AuthError("unknown API key; create one with `cadenza keys create`")
        key = _row_to_key(row)
        if key.revoked_at is not None:
            raise KeyRevoked(f"API key {key.prefix}… ({key.name}) was revoked")
        # Touch last_used_at at most once per cache period, not on every request.
        with self.store.begin() as conn:
            conn.execute(sa.update(k).where(k.c.id == key.id).values(last_used_at=now_ms))
        with self._lock:
            self._cache[digest] = (time.monotonic() + self.ttl, key)
        return key

    def forget(self) -> None:
        """Drop every cached answer (after a revocation)."""
        with self._lock:
            self._cache.clear()
