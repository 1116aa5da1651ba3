"""Credentials sealed at rest, with rotatable keys."""

from __future__ import annotations

import pytest

from cadenza.errors import ConfigError
from cadenza.governance.vault import PREFIX, Vault

SECRET = "whsec_canary-3f9a"


def test_a_sealed_value_hides_the_secret_and_opens_again() -> None:
    vault = Vault.from_keys([], "a-secret-key-long-enough-for-tests")
    sealed = vault.seal(SECRET)
    assert sealed.startswith(PREFIX)
    assert SECRET not in sealed
    assert vault.open(sealed) == SECRET
    assert vault.seal(SECRET) != sealed  # random IV: equal secrets look different


def test_keys_rotate_without_downtime() -> None:
    old, new = Vault.new_key(), Vault.new_key()
    sealed_old = Vault([old]).seal(SECRET)
    both = Vault([new, old])
    assert both.open(sealed_old) == SECRET
    resealed = both.rotate(sealed_old)
    assert Vault([new]).open(resealed) == SECRET
    with pytest.raises(ConfigError, match="rotate"):
        Vault([new]).open(sealed_old)


def test_legacy_clear_values_are_read_and_sealed_on_rotation() -> None:
    vault = Vault([Vault.new_key()])
    assert vault.open("plain-old-secret") == "plain-old-secret"
    assert vault.open(vault.rotate("plain-old-secret")) == "plain-old-secret"


def test_a_bad_key_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigError, match="not a Fernet key"):
        Vault(["not-a-key"])
    with pytest.raises(ConfigError):
        Vault([])


def test_a_derived_key_depends_on_the_secret_key() -> None:
    sealed = Vault.from_keys([], "secret-key-number-one-long").seal(SECRET)
    with pytest.raises(ConfigError):
        Vault.from_keys([], "secret-key-number-two-long").open(sealed)


def test_the_vault_of_the_settings_uses_the_configured_keys() -> None:
    from cadenza.settings import Settings

    key = Vault.new_key()
    sealed = Vault([key]).seal(SECRET)
    settings = Settings.load(secret_key="a-secret-key-long-enough-for-tests-0123",
                             encryption_keys=[Vault.new_key(), key])
    assert Vault.from_settings(settings).open(sealed) == SECRET
