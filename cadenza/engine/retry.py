"""Retry policy: exponential backoff with jitter, drawn from an injected random generator."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, a failing side effect is tried again."""

    max_attempts: int = 8
    """Attempts in all, the first included; after the last failed one the row is dead."""
    initial_ms: int = 30_000
    """Delay after the first failed attempt, before jitter."""
    multiplier: float = 2.0
    """Each further delay is the previous one times this (1 keeps delays constant)."""
    max_ms: int = 6 * 3600 * 1000
    """No delay (before jitter) is longer than this."""
    jitter: float = 0.5
    """Fraction of each delay drawn at random: 0 none, 0.5 "equal jitter" (half fixed, half
    random), 1 "full jitter" (anywhere between 0 and the delay). Spreads retries of many rows
    that failed together, so a recovering receiver is not hit by all of them at once."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1 (the first attempt counts), "
                             f"got {self.max_attempts}")
        if self.initial_ms < 0:
            raise ValueError(f"initial_ms cannot be negative, got {self.initial_ms}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1 so that delays never shrink, "
                             f"got {self.multiplier}")
        if self.max_ms < self.initial_ms:
            raise ValueError(f"max_ms ({self.max_ms}) must be at least initial_ms "
                             f"({self.initial_ms})")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction between 0 and 1, got {self.jitter}")

    def exhausted(self, attempts: int) -> bool:
        """True when `attempts` attempts leave none to make."""
        return attempts >= self.max_attempts


def backoff_ms(policy: RetryPolicy, attempt: int) -> int:
    """The delay after failed attempt number `attempt` (1-based), before jitter."""
    if attempt < 1:
        raise ValueError(f"attempts are counted from 1, got {attempt}")
    try:
        grown = policy.initial_ms * policy.multiplier ** (attempt - 1)
    except OverflowError:
        return policy.max_ms
    return int(min(grown, policy.max_ms))


def next_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> int:
    """Milliseconds to wait after failed attempt number `attempt`, jitter included.

    A delay `d` becomes `d * (1 - jitter) + uniform(0, d * jitter)`.
    """
    base = backoff_ms(policy, attempt)
    spread = base * policy.jitter
    return int(base - spread + rng.uniform(0, spread))
