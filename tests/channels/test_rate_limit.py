"""The token bucket on a virtual clock: the rate holds over every window, refused attempts
give their token back, a pause stops every send and leaves no burst behind, and a message
that would wait too long is told when to come back instead."""

from __future__ import annotations

import asyncio
import email.utils

from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.channels.ratelimit import (
    TokenBucket,
    reset_after_s,
    retry_after_s,
    stated_delay_s,
)


class Virtual:
    """Monotonic time that moves only when a waiter sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def bucket(rate: float, capacity: float | None = None) -> tuple[TokenBucket, Virtual]:
    clock = Virtual()
    return TokenBucket(rate, capacity, monotonic=clock, sleep=clock.sleep), clock


def grant_times(limiter: TokenBucket, clock: Virtual, gaps: list[float],
                refuse: list[bool] | None = None) -> list[float]:
    """Acquire once after each gap; the times of the grants that were not refunded."""
    async def go() -> list[float]:
        times = []
        for i, gap in enumerate(gaps):
            clock.now += gap
            assert await limiter.acquire() is None
            if refuse and refuse[i % len(refuse)]:
                limiter.refund()
            else:
                times.append(clock.now)
        return times

    return asyncio.run(go())


def assert_within_rate(times: list[float], rate: float, capacity: float) -> None:
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= rate * (times[j] - times[i]) + capacity + 1e-6, (i, j)


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(1, 2000), capacity=st.integers(1, 40),
       gaps=st.lists(st.floats(0, 0.05), min_size=1, max_size=120))
def test_no_window_gets_more_than_rate_times_length_plus_the_bucket(
        rate: float, capacity: int, gaps: list[float]) -> None:
    limiter, clock = bucket(rate, capacity)
    assert_within_rate(grant_times(limiter, clock, gaps), rate, capacity)


@settings(max_examples=40, deadline=None)
@given(rate=st.floats(5, 500), refuse=st.lists(st.booleans(), min_size=1, max_size=8),
       count=st.integers(10, 150))
def test_refused_attempts_do_not_use_up_the_rate(rate: float, refuse: list[bool],
                                                 count: int) -> None:
    limiter, clock = bucket(rate, 1)
    accepted = grant_times(limiter, clock, [0.0] * count, refuse)
    assert_within_rate(accepted, rate, 1)
    if accepted:
        # Back to back: the accepted ones alone are spaced at the rate, whatever was refused.
        elapsed = clock.now - 1000.0
        assert elapsed <= len(accepted) / rate + 1e-6
    assert limiter.granted == len(accepted)


def test_a_pause_holds_every_waiter_and_leaves_no_burst() -> None:
    limiter, clock = bucket(100, 20)

    async def go() -> list[float]:
        clock.now += 10  # idle: the bucket is full (20 tokens)
        limiter.pause(2.0)
        start = clock.now
        times = []
        for _ in range(5):
            await limiter.acquire()
            times.append(clock.now - start)
        return times

    times = asyncio.run(go())
    assert times[0] >= 2.0
    # One token at most was kept across the pause; the rest come at the rate.
    assert times[-1] >= 2.0 + 3 / 100 - 1e-9


def test_unlimited_buckets_still_honour_pauses() -> None:
    limiter, clock = bucket(0)
    assert asyncio.run(limiter.acquire()) is None
    limiter.pause(1.5)
    assert limiter.paused_for() == 1.5
    before = clock.now
    assert asyncio.run(limiter.acquire()) is None
    assert clock.now - before >= 1.5


def test_a_wait_longer_than_allowed_is_refused_with_the_time_to_come_back() -> None:
    limiter, _ = bucket(10, 1)

    async def go() -> tuple[float | None, float | None, float | None]:
        first = await limiter.acquire(max_wait_s=0.5)
        second = await limiter.acquire(max_wait_s=0.5)  # 0.1 s: fine
        limiter.pause(30)
        third = await limiter.acquire(max_wait_s=0.5)
        return first, second, third

    first, second, third = asyncio.run(go())
    assert first is None
    assert second is None
    assert third is not None
    assert 30 <= third <= 30.2
    assert limiter.granted == 2


def test_retry_after_values() -> None:
    now_ms = 1_767_225_600_000
    assert retry_after_s("7", now_ms) == 7
    assert retry_after_s(None, now_ms) is None
    assert retry_after_s("soon", now_ms) is None
    date = email.utils.formatdate(now_ms / 1000 + 90, usegmt=True)
    assert retry_after_s(date, now_ms) == 90
    past = email.utils.formatdate(now_ms / 1000 - 90, usegmt=True)
    assert retry_after_s(past, now_ms) == 0
    assert reset_after_s(str(now_ms // 1000 + 12), now_ms) == 12
    assert reset_after_s("3", now_ms) == 3
    assert reset_after_s("x", now_ms) is None
    assert stated_delay_s("4.7.0 Try again in 30 seconds") == 30
    assert stated_delay_s("please wait 2 minutes") == 120
    assert stated_delay_s("4.7.0 Temporary failure, try again later") is None


@given(st.integers(0, 10**9))
def test_any_delta_seconds_is_read_back(seconds: int) -> None:
    assert retry_after_s(str(seconds), 0) == seconds
