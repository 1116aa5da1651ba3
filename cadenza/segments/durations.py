"""Durations as people write them ("2d", "1d12h", "90m") and as the engine keeps them (ms)."""

from __future__ import annotations

import re
from typing import Any

from cadenza.errors import ValidationFailed

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
MAX_DURATION_MS = 3650 * DAY
"""Ten years: anything longer is a typo, not a plan."""

_UNITS = {"w": WEEK, "d": DAY, "h": HOUR, "m": MINUTE, "s": SECOND, "ms": 1}
# Longest unit spelling first, so that "ms" is not read as "m" followed by garbage.
_PART = re.compile(r"\s*(\d{1,30})\s*(ms|w|d|h|m|s)")
_MAX_TEXT = 64
_EXAMPLES = "such as '30s', '15m', '12h', '2d', '1w', '1d12h' or '500ms'"


def parse_duration(value: Any, where: str) -> int:
    """Milliseconds for a duration: a string of number+unit parts or an integer of ms."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        kind = "true/false" if isinstance(value, bool) else type(value).__name__
        raise ValidationFailed(where, f"must be a duration {_EXAMPLES}, or whole "
                                      f"milliseconds; got {kind}")
    if isinstance(value, int):
        return _checked(value, where, str(value))
    text = value.strip().lower()
    if not text:
        raise ValidationFailed(where, f"is empty; give a duration {_EXAMPLES}")
    if len(text) > _MAX_TEXT:
        raise ValidationFailed(where, f"is too long for a duration; write one {_EXAMPLES}")
    if text.startswith("-"):
        raise ValidationFailed(where, f"{value!r} is negative; durations run forward")
    if text.isdigit():
        raise ValidationFailed(where, f"{value!r} has no unit; add one (ms, s, m, h, d or w), "
                                      f"or give milliseconds as a number")
    total = 0
    position = 0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise ValidationFailed(where, f"{value!r} is not a duration; write one {_EXAMPLES}")
    return _checked(total, where, repr(value))


def _checked(ms: int, where: str, shown: str) -> int:
    if ms < 0:
        raise ValidationFailed(where, f"{shown} is negative; durations run forward")
    if ms > MAX_DURATION_MS:
        raise ValidationFailed(where, f"{shown} is longer than 10 years (3650d); "
                                      "use a shorter duration")
    return ms


def format_duration(ms: int) -> str:
    """The shortest text `parse_duration` reads back as `ms` ("30d", "1d12h", "500ms")."""
    if ms <= 0:
        return "0s"
    parts = []
    rest = ms
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND), ("ms", 1)):
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
