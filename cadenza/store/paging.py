"""Opaque cursors for keyset pagination (stable under inserts, no OFFSET scans)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from cadenza.errors import ValidationFailed

MAX_LIMIT = 500


def encode_cursor(*values: int) -> str:
    """A URL-safe cursor holding integer sort keys."""
    text = ".".join(str(v) for v in values)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> tuple[int, ...]:
    """The sort keys in `cursor`; ValidationFailed naming `cursor` when it was tampered with."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = tuple(int(v) for v in base64.urlsafe_b64decode(padded).decode().split("."))
    except (ValueError, UnicodeDecodeError):
        values = ()
    if len(values) != parts or any(not -(2**63) <= v < 2**63 for v in values):
        raise ValidationFailed("cursor", "is not a cursor this API returned; start again "
                               "without it")
    return values


def check_limit(limit: int) -> int:
    """A page size between 1 and MAX_LIMIT."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


@dataclass
class Page:
    """One page of results and the cursor of the next one (None at the end)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"items": self.items, "next_cursor": self.next_cursor}
