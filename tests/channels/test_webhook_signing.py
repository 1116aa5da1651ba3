"""Standard Webhooks signatures: what Cadenza signs, a receiver verifies with the reference
library; any change to id, time, body or secret fails verification."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from cadenza.channels.signing import check_secret, new_secret, signature_headers, verify
from cadenza.errors import ValidationFailed

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()


def now_ms() -> int:
    # The reference verifier compares the timestamp with the real clock (5 minutes' leeway).
    return int(time.time() * 1000)


def test_headers_follow_the_spec() -> None:
    at = now_ms()
    headers = signature_headers(SECRET, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", at, b'{"a":1}')
    assert headers["webhook-id"] == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert headers["webhook-timestamp"] == str(at // 1000)
    version, signature = headers["webhook-signature"].split(",")
    assert version == "v1"
    assert len(base64.b64decode(signature)) == 32
    assert Webhook(SECRET).verify(b'{"a":1}', headers) == {"a": 1}


def test_the_spec_example_vector() -> None:
    # The example in the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = signature_headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330_000, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@given(st.binary(max_size=2000).map(lambda b: b.hex().encode()),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:_-", min_size=1, max_size=80))
def test_any_body_and_id_verify_and_any_change_is_caught(body: bytes, message_id: str) -> None:
    at = now_ms()
    headers = signature_headers(SECRET, message_id, at, body)
    verify(SECRET, body, headers)
    with pytest.raises(WebhookVerificationError):
        verify(OTHER, body, headers)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, body, {**headers, "webhook-id": message_id + "x"})
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, body, {**headers, "webhook-timestamp": str(at // 1000 + 1)})


@given(st.integers(min_value=0, max_value=255), st.integers(min_value=0, max_value=7))
def test_a_flipped_signature_bit_fails(index: int, bit: int) -> None:
    headers = signature_headers(SECRET, "m1", now_ms(), b"{}")
    raw = bytearray(base64.b64decode(headers["webhook-signature"].split(",")[1]))
    raw[index % len(raw)] ^= 1 << bit
    forged = {**headers, "webhook-signature": "v1," + base64.b64encode(bytes(raw)).decode()}
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, b"{}", forged)


def test_an_old_signature_is_refused_by_receivers() -> None:
    headers = signature_headers(SECRET, "m1", now_ms() - 3600_000, b"{}")
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(SECRET, b"{}", headers)


def test_generated_secrets_are_valid_and_distinct() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert check_secret(first) == first
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


@pytest.mark.parametrize("secret", ["", "secret", "whsec_", "whsec_!!!", "whsec_" + "A" * 8,
                                    "whsec_" + base64.b64encode(b"x" * 100).decode()])
def test_bad_secrets_are_refused_with_a_reason(secret: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_secret(secret, "secret")
    assert caught.value.field == "secret"
