"""Credentials at rest: sealed with rotatable keys, never stored in clear.

Connector and provider credentials and webhook signing secrets are sealed with Fernet
(AES-128-CBC + HMAC-SHA256, from `cryptography`) under a list of keys: the first seals, all
of them open (`MultiFernet`), so keys rotate without downtime — add a new key in front,
`rotate` re-seals stored values, then drop the old key. The keys come from
`CADENZA_ENCRYPTION_KEYS` (a JSON list of Fernet keys); without it one key is derived from
the secret key (HKDF), so a fresh install is encrypted from the start.

A sealed value reads `fernet:<token>`; values without the prefix were written before sealing
existed and are read as they are (and sealed on their next write or rotation).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cadenza.errors import ConfigError

PREFIX = "fernet:"


def derived_key(secret_key: str) -> str:
    """A Fernet key derived from the secret key (HKDF-SHA256, its own label)."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"cadenza credentials v1").derive(secret_key.encode())
    return base64.urlsafe_b64encode(raw).decode()


class Vault:
    """Seals and opens credentials."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("encryption_keys", "give at least one key")
        fernets = []
        for i, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.strip().encode()))
            except ValueError:
                raise ConfigError("encryption_keys", f"key {i + 1} is not a Fernet key (32 "
                                  "url-safe base64 bytes); make one with `cadenza keys "
                                  "new-encryption-key`") from None
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_keys(cls, configured: Sequence[str], secret_key: str) -> Vault:
        """The configured keys, or one derived from the secret key when none are set."""
        keys = [k for k in configured if k.strip()]
        return cls(keys or [derived_key(secret_key)])

    def seal(self, plaintext: str) -> str:
        """The stored form of `plaintext`."""
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, stored: str) -> str:
        """The plaintext of a stored value (legacy clear values are returned as they are)."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise ConfigError("encryption_keys", "a stored credential does not open with "
                              "any configured key; was a key removed before `rotate` ran?"
                              ) from None

    def rotate(self, stored: str) -> str:
        """`stored` sealed under the current (first) key."""
        if not stored.startswith(PREFIX):
            return self.seal(stored)
        return PREFIX + self._fernet.rotate(stored[len(PREFIX):].encode()).decode()

    @classmethod
    def from_settings(cls, settings: Any) -> Vault:
        """The vault of `CADENZA_ENCRYPTION_KEYS` (or of the secret key)."""
        return cls.from_keys(settings.encryption_keys, settings.secret_key)

    @staticmethod
    def new_key() -> str:
        """A fresh random key to put in CADENZA_ENCRYPTION_KEYS."""
        return Fernet.generate_key().decode()
