"""The retry policy: validation, exponential growth, the cap, and jitter bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.engine.retry import RetryPolicy, backoff_ms, next_delay


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, initial_ms=1000, multiplier=3, max_ms=20_000,
                         jitter=0)
    assert [backoff_ms(policy, n) for n in range(1, 6)] == [1000, 3000, 9000, 20_000, 20_000]
    assert backoff_ms(policy, 10_000) == 20_000  # no overflow
    assert next_delay(policy, 2, random.Random(1)) == 3000


def test_full_and_equal_jitter() -> None:
    rng = random.Random(3)
    full = RetryPolicy(initial_ms=1000, jitter=1)
    equal = RetryPolicy(initial_ms=1000, jitter=0.5)
    full_draws = [next_delay(full, 1, rng) for _ in range(500)]
    equal_draws = [next_delay(equal, 1, rng) for _ in range(500)]
    assert min(full_draws) < 100
    assert max(full_draws) <= 1000
    assert min(equal_draws) >= 500
    assert max(equal_draws) <= 1000
    assert next_delay(full, 1, random.Random(9)) == next_delay(full, 1, random.Random(9))


@given(attempt=st.integers(1, 200), jitter=st.floats(0, 1), seed=st.integers(0, 2**32))
def test_delay_is_always_within_bounds(attempt: int, jitter: float, seed: int) -> None:
    policy = RetryPolicy(initial_ms=250, multiplier=2.5, max_ms=3_600_000, jitter=jitter)
    base = backoff_ms(policy, attempt)
    delay = next_delay(policy, attempt, random.Random(seed))
    assert base - base * jitter - 1 <= delay <= base


def test_exhausted() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ({"initial_ms": -1}, "initial_ms cannot be negative"),
    ({"multiplier": 0.5}, "multiplier must be at least 1"),
    ({"initial_ms": 10, "max_ms": 5}, "max_ms"),
    ({"jitter": 1.5}, "jitter is a fraction"),
])
def test_bad_policies_say_why(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counted from 1"):
        backoff_ms(RetryPolicy(), 0)
