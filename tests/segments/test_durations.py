"""Durations as people write them, and the ones refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.errors import ValidationFailed
from cadenza.segments import MAX_DURATION_MS, format_duration, parse_duration

S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000


@pytest.mark.parametrize(("text", "ms"), [
    ("30s", 30 * S), ("15m", 15 * M), ("3h", 3 * H), ("2d", 2 * D), ("1w", 7 * D),
    ("500ms", 500), ("1d12h", D + 12 * H), ("1h30m15s", H + 30 * M + 15 * S),
    (" 1D 12H ", D + 12 * H), ("0s", 0), (1500, 1500), (0, 0), ("3650d", MAX_DURATION_MS),
])
def test_durations_people_write(text: Any, ms: int) -> None:
    assert parse_duration(text, "wait") == ms


@pytest.mark.parametrize(("value", "reason"), [
    ("-1d", "negative"), (-5, "negative"), ("", "empty"), ("   ", "empty"),
    ("soon", "not a duration"), ("1d-2h", "not a duration"), ("2y", "not a duration"),
    ("d", "not a duration"), ("15", "no unit"), ("3651d", "longer than 10 years"),
    ("99999999999999999999d", "longer than 10 years"), (MAX_DURATION_MS + 1, "10 years"),
    (1.5, "whole milliseconds"), (True, "true/false"), (None, "NoneType"), ([1], "list"),
    ("1d" * 40, "too long"),
])
def test_bad_durations_are_refused_with_a_reason(value: Any, reason: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_duration(value, "steps.settle.wait")
    assert caught.value.field == "steps.settle.wait"
    assert reason in caught.value.reason


@given(st.integers(0, MAX_DURATION_MS))
def test_format_reads_back(ms: int) -> None:
    assert parse_duration(format_duration(ms), "d") == ms


def test_format_prefers_days() -> None:
    assert format_duration(30 * D) == "30d"
    assert format_duration(D + 12 * H) == "1d12h"
    assert format_duration(1500) == "1s500ms"
