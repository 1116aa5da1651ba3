"""Signed tokens for the links in a message: unsubscribe, preferences, click and open.

A token is the only credential a recipient presents, so it carries everything it authorises
and nothing can be changed without the key:

    <key id> "." <claims> "." <signature>

`claims` is the base64url (no padding) of a compact JSON array (kind, outbox id, contact id,
channel, purpose, flags and, for a click, the target URL); `signature` is the first 16 bytes
of HMAC-SHA256 over `<key id>.<claims>`. The key is derived from the secret key (never the
secret itself), and its id is a hash of the derived key, so a token names the key that signed
it without revealing it.

Key rotation: the current secret signs; secrets listed as old keys still verify, until they
are removed from that list. A token whose key id is unknown is refused.

Verification is strict on purpose: the text must be canonical base64url (a flipped unused bit
in the last character decodes to the same bytes; it is refused rather than accepted), the
size is capped before anything is decoded, and the kind is checked, so an open token cannot
serve as an unsubscribe token or a click token for another URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from cadenza.errors import CadenzaError, ConfigError

MAX_TOKEN_CHARS = 4096
"""Longer input is refused before it is decoded (a click token with a 2,000-character URL
is about 2,800)."""
MAX_URL_CHARS = 2048
_SIGNATURE_BYTES = 16
_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_DERIVE = b"cadenza.tokens.v1"
_SHADOW = 1


class TokenKind(StrEnum):
    """What a token authorises."""

    UNSUBSCRIBE = "u"
    PREFERENCES = "p"
    CLICK = "c"
    OPEN = "o"


class TokenInvalid(CadenzaError):
    """A token was not issued by this installation (or its key was rotated out), was changed,
    or is of another kind than the route needs. The reason is for logs, never for the page:
    telling a forger which check failed would help them."""

    code = "token.invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(f"the link is not valid: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    kind: TokenKind
    outbox_id: int
    contact_id: int
    channel: str
    purpose: str
    shadow: bool = False
    url: str | None = None
    """The click target: the redirect goes here and nowhere else."""

    def _encode(self) -> bytes:
        fields: list[Any] = [self.kind.value, self.outbox_id, self.contact_id, self.channel,
                             self.purpose, _SHADOW if self.shadow else 0]
        if self.url is not None:
            fields.append(self.url)
        return orjson.dumps(fields)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode(
        "ascii")


def _unb64(text: str) -> bytes:
    """Decode canonical base64url without padding; anything else raises TokenInvalid."""
    if not _PART.match(text) or len(text) % 4 == 1:
        raise TokenInvalid("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid("not base64url") from None
    if _b64(data) != text:  # unused low bits set: another spelling of the same bytes
        raise TokenInvalid("not canonical base64url")
    return data


def _derive(secret: str) -> bytes:
    return hmac.new(secret.encode(), _DERIVE, hashlib.sha256).digest()


def _key_id(key: bytes) -> str:
    return _b64(hashlib.sha256(b"kid" + key).digest()[:6])


class TokenSigner:
    """Signs claims with the current key; verifies with the current and the old keys."""

    def __init__(self, secret: str, old_secrets: Iterable[str] = ()) -> None:
        if len(secret) < 32:
            raise ConfigError("CADENZA_SECRET_KEY", "tokens need a secret of at least 32 "
                              "characters")
        key = _derive(secret)
        self.key_id = _key_id(key)
        self._macs: dict[str, hmac.HMAC] = {self.key_id: hmac.new(key, digestmod="sha256")}
        for old in old_secrets:
            if not old:
                continue
            old_key = _derive(old)
            self._macs.setdefault(_key_id(old_key), hmac.new(old_key, digestmod="sha256"))

    @classmethod
    def from_settings(cls, settings: Any) -> TokenSigner:
        """The signer of `settings.secret_key` with `settings.token_old_keys`."""
        return cls(settings.secret_key, getattr(settings, "token_old_keys", ()) or ())

    def _signature(self, key_id: str, signed: str) -> bytes:
        mac = self._macs[key_id].copy()
        mac.update(signed.encode("ascii"))
        return mac.digest()[:_SIGNATURE_BYTES]

    def sign(self, claims: TokenClaims) -> str:
        """The token for `claims`, signed with the current key."""
        if claims.kind is TokenKind.CLICK:
            if not claims.url or not claims.url.startswith(("http://", "https://")):
                raise ValueError("a click token needs an http(s) url")
            if len(claims.url) > MAX_URL_CHARS:
                raise ValueError(f"a click url may have at most {MAX_URL_CHARS} characters")
        elif claims.url is not None:
            raise ValueError(f"a {claims.kind.name.lower()} token carries no url")
        signed = f"{self.key_id}.{_b64(claims._encode())}"
        return f"{signed}.{_b64(self._signature(self.key_id, signed))}"

    def verify(self, token: object, kind: TokenKind) -> TokenClaims:
        """The claims of `token` when it is genuine, signed by an accepted key and of `kind`;
        TokenInvalid otherwise."""
        if not isinstance(token, str) or not token:
            raise TokenInvalid("empty")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalid("too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenInvalid("malformed")
        key_id, body, signature = parts
        if key_id not in self._macs:
            raise TokenInvalid("signed by a key that is not accepted (rotated out?)")
        given = _unb64(signature)
        payload = _unb64(body)
        expected = self._signature(key_id, f"{key_id}.{body}")
        if not hmac.compare_digest(given, expected):
            raise TokenInvalid("bad signature")
        claims = _decode_claims(payload)
        if claims.kind is not kind:
            raise TokenInvalid(f"a {claims.kind.name.lower()} token, not {kind.name.lower()}")
        return claims


def _decode_claims(payload: bytes) -> TokenClaims:
    # Only reached with a valid signature: a shape error here means a bug, not a forgery,
    # but it is still refused cleanly.
    try:
        fields = orjson.loads(payload)
        kind = TokenKind(fields[0])
        outbox_id, contact_id, channel, purpose, flags = fields[1:6]
        url = fields[6] if len(fields) > 6 else None
    except (orjson.JSONDecodeError, ValueError, TypeError, IndexError, KeyError):
        raise TokenInvalid("unreadable claims") from None
    if not (isinstance(outbox_id, int) and isinstance(contact_id, int)
            and isinstance(channel, str) and isinstance(purpose, str)
            and isinstance(flags, int) and (url is None or isinstance(url, str))):
        raise TokenInvalid("unreadable claims")
    if (kind is TokenKind.CLICK) != (url is not None):
        raise TokenInvalid("unreadable claims")
    return TokenClaims(kind, outbox_id, contact_id, channel, purpose,
                       bool(flags & _SHADOW), url)
