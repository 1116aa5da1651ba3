"""Normalising addresses so that one person's email or phone always compares equal."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from cadenza.errors import ValidationFailed

MAX_EMAIL = 320


def normalize_email(value: object, field: str = "email") -> str:
    """Lower-cased, trimmed, syntax-checked email; raise naming `field` when invalid."""
    if not isinstance(value, str):
        raise ValidationFailed(field, f"must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValidationFailed(field, "must not be empty")
    if len(text) > MAX_EMAIL:
        raise ValidationFailed(field, f"is {len(text)} characters long; at most {MAX_EMAIL}")
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed(field, f"{text!r} is not a valid email address: {exc}") from None
    return checked.normalized.lower()


def normalize_phone(value: object, field: str = "phone", region: str | None = None) -> str:
    """E.164 phone number; raise naming `field` when it cannot be a real number."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValidationFailed(field, f"must be a string, got {type(value).__name__}")
    text = value.strip()
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ValidationFailed(
            field, f"{text!r} is not a phone number; use the international form, e.g. +14155550100"
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationFailed(
            field, f"{text!r} is not a valid phone number for its country code"
        )
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
