"""DKIM signing of SMTP mail (dkimpy): the sending domain vouches for each message.

Signed with relaxed/relaxed canonicalisation over the headers a receiver judges a message
by, `List-Unsubscribe` and `List-Unsubscribe-Post` included (RFC 8058 asks for both to be
covered, so that nobody can graft an unsubscribe target onto a signed message). Headers
that a message does not carry are signed as absent, so they cannot be added later either.
ESPs sign with their own keys; this is for SMTP only.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim as dkimpy

from cadenza.errors import ConfigError

SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"reply-to",
                  b"list-id", b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version",
                  b"content-type", b"content-transfer-encoding")
"""Headers covered by the signature."""


@dataclass(frozen=True)
class DkimSigner:
    """Signs messages for `domain` with the key published at `selector._domainkey.domain`."""

    domain: str
    """The signing domain (d=): the From domain or its organisational parent."""
    selector: str
    """The selector (s=): names the DNS record holding the public key."""
    private_key: bytes
    """The PEM private key (RSA, 1024 bits at least; 2048 recommended)."""

    def __post_init__(self) -> None:
        if not self.domain or "@" in self.domain or "." not in self.domain:
            raise ValueError(f"the DKIM domain must be a host name such as example.com, got "
                             f"{self.domain!r}")
        if not self.selector or not all(c.isalnum() or c in "-_." for c in self.selector):
            raise ValueError(f"the DKIM selector must be letters, digits, '-', '_' or '.', "
                             f"got {self.selector!r}")
        try:  # a key that cannot sign must fail at start-up, not on every message
            self.sign(b"From: a@example.com\r\nSubject: check\r\n\r\nbody\r\n")
        except dkimpy.DKIMException as exc:
            raise ValueError(f"the DKIM private key cannot sign: {exc}") from None

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header in front."""
        signature = dkimpy.sign(message, self.selector.encode(), self.domain.encode(),
                                self.private_key, canonicalize=(b"relaxed", b"relaxed"),
                                include_headers=list(SIGNED_HEADERS))
        return bytes(signature) + message

    @classmethod
    def from_settings(cls, settings: Any) -> DkimSigner | None:
        """The signer configured by `dkim_domain`, `dkim_selector` and
        `dkim_private_key_file`; None when DKIM is not configured."""
        domain = getattr(settings, "dkim_domain", None)
        selector = getattr(settings, "dkim_selector", None)
        key_file = getattr(settings, "dkim_private_key_file", None)
        if not (domain or selector or key_file):
            return None
        if not (domain and selector and key_file):
            raise ConfigError("CADENZA_DKIM_*", "DKIM needs a domain, a selector and a "
                              "private key file (CADENZA_DKIM_DOMAIN, CADENZA_DKIM_SELECTOR, "
                              "CADENZA_DKIM_PRIVATE_KEY_FILE); set all three or none")
        try:
            key = Path(key_file).read_bytes()
        except OSError as exc:
            raise ConfigError("CADENZA_DKIM_PRIVATE_KEY_FILE",
                              f"cannot read {key_file}: {exc.strerror}") from None
        try:
            return cls(domain, selector, key)
        except ValueError as exc:
            raise ConfigError("CADENZA_DKIM_PRIVATE_KEY_FILE", str(exc)) from None


def dns_record(public_key_der: bytes) -> str:
    """The TXT record to publish at `<selector>._domainkey.<domain>` for an RSA public key
    in DER (SubjectPublicKeyInfo) form."""
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(public_key_der).decode("ascii")
