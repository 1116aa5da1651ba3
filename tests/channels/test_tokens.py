"""Link tokens: round trips, key rotation, and forgeries of every kind refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.channels.tokens import (
    MAX_TOKEN_CHARS,
    TokenClaims,
    TokenInvalid,
    TokenKind,
    TokenSigner,
)
from cadenza.errors import ConfigError

SECRET = "token-test-secret-0123456789-0123456789"
OLD = "an-older-secret-that-was-rotated-0123456789"
SIGNER = TokenSigner(SECRET)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


def claims(kind: TokenKind = TokenKind.UNSUBSCRIBE, *, contact: int = 42,
           url: str | None = None) -> TokenClaims:
    return TokenClaims(kind, 7, contact, "email", "newsletter", False, url)


def test_round_trip_carries_every_claim() -> None:
    click = claims(TokenKind.CLICK, url="https://example.com/a?b=1&c=%20d#frag")
    assert SIGNER.verify(SIGNER.sign(click), TokenKind.CLICK) == click
    shadow = TokenClaims(TokenKind.OPEN, 9, 3, "email", "marketing", True)
    assert SIGNER.verify(SIGNER.sign(shadow), TokenKind.OPEN) == shadow


def test_tokens_are_url_safe_and_compact() -> None:
    token = SIGNER.sign(claims())
    assert set(token) <= set(ALPHABET)
    assert len(token) < 100


def test_a_token_of_one_kind_is_refused_as_another() -> None:
    token = SIGNER.sign(claims(TokenKind.OPEN))
    for other in (TokenKind.UNSUBSCRIBE, TokenKind.PREFERENCES, TokenKind.CLICK):
        with pytest.raises(TokenInvalid):
            SIGNER.verify(token, other)


def test_another_contacts_token_cannot_be_rewritten_for_this_contact() -> None:
    mine = SIGNER.sign(claims(contact=1))
    theirs = SIGNER.sign(claims(contact=2))
    kid, body_mine, sig_mine = mine.split(".")
    _, body_theirs, sig_theirs = theirs.split(".")
    for forged in (f"{kid}.{body_theirs}.{sig_mine}", f"{kid}.{body_mine}.{sig_theirs}"):
        with pytest.raises(TokenInvalid):
            SIGNER.verify(forged, TokenKind.UNSUBSCRIBE)
    # The claims re-encoded with another contact id and the old signature: refused.
    payload = base64.urlsafe_b64decode(body_mine + "=" * (-len(body_mine) % 4))
    changed = payload.replace(b",1,", b",2,")
    assert changed != payload
    body = base64.urlsafe_b64encode(changed).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        SIGNER.verify(f"{kid}.{body}.{sig_mine}", TokenKind.UNSUBSCRIBE)


def test_a_click_token_cannot_be_retargeted() -> None:
    token = SIGNER.sign(claims(TokenKind.CLICK, url="https://shop.example/"))
    kid, body, sig = token.split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    evil = payload.replace(b"shop.example", b"evil.example")
    forged = base64.urlsafe_b64encode(evil).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        SIGNER.verify(f"{kid}.{forged}.{sig}", TokenKind.CLICK)


def test_key_rotation_old_keys_verify_until_removed() -> None:
    old_signer = TokenSigner(OLD)
    token = old_signer.sign(claims())
    rotated = TokenSigner(SECRET, [OLD])
    assert rotated.verify(token, TokenKind.UNSUBSCRIBE) == claims()
    assert rotated.sign(claims()).split(".")[0] == SIGNER.key_id  # the new key signs
    with pytest.raises(TokenInvalid, match="not accepted"):
        SIGNER.verify(token, TokenKind.UNSUBSCRIBE)  # the old key was removed


def test_the_key_id_does_not_reveal_the_key() -> None:
    token = SIGNER.sign(claims())
    assert SECRET not in token
    assert SIGNER.key_id not in SECRET


@pytest.mark.parametrize("garbage", [
    "", ".", "..", "a.b.c", "a.b", "a.b.c.d", "%%%.%%%.%%%", "\x00\x01.\x02.\x03", "é.é.é",
    "A" * (MAX_TOKEN_CHARS + 1), "." * 5000, " " + SIGNER.sign(claims()),
    SIGNER.sign(claims()) + "=", SIGNER.sign(claims()) + " ",
])
def test_garbage_and_oversized_input_is_refused(garbage: str) -> None:
    with pytest.raises(TokenInvalid):
        SIGNER.verify(garbage, TokenKind.UNSUBSCRIBE)


@pytest.mark.parametrize("value", [None, 12, b"bytes", ["a", "b"]])
def test_non_text_is_refused(value: object) -> None:
    with pytest.raises(TokenInvalid):
        SIGNER.verify(value, TokenKind.UNSUBSCRIBE)


def test_every_truncation_and_every_single_bit_flip_is_refused() -> None:
    token = SIGNER.sign(claims(TokenKind.CLICK, url="https://example.com/x"))
    for end in range(len(token)):
        with pytest.raises(TokenInvalid):
            SIGNER.verify(token[:end], TokenKind.CLICK)
    raw = token.encode()
    for i in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            try:
                text = flipped.decode()
            except UnicodeDecodeError:
                continue
            with pytest.raises(TokenInvalid):
                SIGNER.verify(text, TokenKind.CLICK)


def test_non_canonical_base64_of_the_same_bytes_is_refused() -> None:
    # A last character whose unused low bits differ decodes to the same bytes.
    token = SIGNER.sign(claims())
    kid, body, sig = token.split(".")
    alphabet = ALPHABET[:-1]
    last = alphabet.index(sig[-1])
    for other in alphabet:
        if other == sig[-1]:
            continue
        variant = sig[:-1] + other
        same = (base64.urlsafe_b64decode(variant + "==")
                == base64.urlsafe_b64decode(sig + "=="))
        if same:
            assert alphabet.index(other) >> 4 == last >> 4
        with pytest.raises(TokenInvalid):
            SIGNER.verify(f"{kid}.{body}.{variant}", TokenKind.UNSUBSCRIBE)


def test_short_secrets_and_bad_urls_are_refused_when_signing() -> None:
    with pytest.raises(ConfigError):
        TokenSigner("short")
    with pytest.raises(ValueError, match="http"):
        SIGNER.sign(claims(TokenKind.CLICK, url="javascript:alert(1)"))
    with pytest.raises(ValueError, match="no url"):
        SIGNER.sign(claims(TokenKind.OPEN, url="https://example.com"))


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, str]:
    """A valid token and a different string made from it by edits."""
    kind = draw(st.sampled_from(list(TokenKind)))
    url = draw(st.just("https://example.com/p?q=1")) if kind is TokenKind.CLICK else None
    token = SIGNER.sign(TokenClaims(kind, draw(st.integers(1, 10**12)),
                                    draw(st.integers(1, 10**12)),
                                    draw(st.sampled_from(["email", "sms"])),
                                    draw(st.sampled_from(["marketing", "news"])),
                                    draw(st.booleans()), url))
    chars = list(token)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        if op == "replace" and chars:
            i = draw(st.integers(0, len(chars) - 1))
            chars[i] = draw(st.sampled_from(ALPHABET + "=+/ %"))
        elif op == "insert":
            i = draw(st.integers(0, len(chars)))
            chars.insert(i, draw(st.sampled_from(ALPHABET)))
        elif op == "delete" and chars:
            del chars[draw(st.integers(0, len(chars) - 1))]
        elif op == "swap" and len(chars) > 1:
            i = draw(st.integers(0, len(chars) - 2))
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return token, "".join(chars)


@settings(max_examples=400, deadline=None)
@given(mutations())
def test_any_mutation_of_a_valid_token_fails(pair: tuple[str, str]) -> None:
    token, mutated = pair
    if mutated == token:
        return
    for kind in TokenKind:
        with pytest.raises(TokenInvalid):
            SIGNER.verify(mutated, kind)
