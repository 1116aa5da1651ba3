"""Rate limits per provider: a token bucket shared by every concurrent send of a provider.

A send takes a token before it talks to the provider. Tokens come back at `rate` per second
into a bucket of `capacity` (the burst a quiet provider may save up). Three rules keep a
throttling provider from being hammered (no retry storm):

- A refused attempt gives its token back (`refund`): providers count what they accept
  against a cap, so a refusal must not cost one of the next messages its place either.
- When a provider says "not before T" (HTTP 429 with `Retry-After`, an SMTP 421), the whole
  bucket pauses until T (`pause`): the sends waiting for a token wait there instead of each
  going out to fail. A refusal that names no time (an SMTP 454) holds the bucket for one
  token's interval (`hold`): refused attempts are paced at the rate too.
- A message that would wait longer than `max_wait_s` is not sent at all: `RateLimited` says
  when the bucket will have room, and the dispatcher defers the row to then without
  counting an attempt (a claim must not expire while its message waits).

The bucket reads a monotonic clock and sleeps through injected functions, so tests drive it
without real time.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Awaitable, Callable

from cadenza.channels.errors import ChannelError

_EPSILON = 1e-9


class RateLimited(ChannelError):
    """The provider's rate limit has no room for this message in time: not attempted, and
    not to be tried before `retry_after_ms` (the dispatcher defers the row)."""

    code = "channel.rate_limited"

    def __init__(self, channel: str, reason: str, retry_after_ms: int) -> None:
        super().__init__(channel, reason, retryable=True, retry_after_ms=retry_after_ms)


class TokenBucket:
    """Tokens at `rate_per_s` into a bucket of `capacity`; 0 means no limit (pauses still
    apply). Waiters are served in arrival order."""

    def __init__(self, rate_per_s: float, capacity: float | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        if rate_per_s < 0:
            raise ValueError(f"a rate cannot be negative (0 is unlimited), got {rate_per_s}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"a bucket holds at least one token, got {capacity}")
        self.rate = float(rate_per_s)
        self.capacity = float(capacity if capacity is not None else max(1.0, rate_per_s / 10))
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = monotonic()
        self._paused_until = 0.0
        self._waiting = 0
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.granted = 0
        """Tokens handed out (refunds subtracted): messages the provider accepted."""

    @property
    def limited(self) -> bool:
        """False when the bucket has no rate (it only honours pauses)."""
        return self.rate > 0

    def _refill(self, now: float) -> None:
        if self.rate > 0 and now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = max(self._updated, now)

    def expected_wait(self) -> float:
        """Seconds a message arriving now would wait for its token behind those waiting."""
        now = self._monotonic()
        self._refill(now)
        paused = max(0.0, self._paused_until - now)
        if self.rate <= 0:
            return paused
        # Nothing accrues during a pause (see `pause`).
        return paused + max(0.0, self._waiting + 1 - self._tokens) / self.rate

    async def acquire(self, max_wait_s: float | None = None) -> float | None:
        """Take a token, waiting in turn; return None when taken, or, when the wait would
        be longer than `max_wait_s`, the seconds until there would be room (nothing taken)."""
        if self.rate <= 0 and self._paused_until <= self._monotonic():
            self.granted += 1
            return None
        expected = self.expected_wait()
        if max_wait_s is not None and expected > max_wait_s:
            return expected
        self._waiting += 1
        try:
            async with self._turn():
                while True:
                    now = self._monotonic()
                    self._refill(now)
                    wait = self._paused_until - now
                    if wait <= 0:
                        if self.rate <= 0:
                            break
                        if self._tokens >= 1 - _EPSILON:  # float sums fall just short of 1
                            self._tokens = max(0.0, self._tokens - 1)
                            break
                        wait = max((1 - self._tokens) / self.rate, _EPSILON)
                    await self._sleep(wait)
        finally:
            self._waiting -= 1
        self.granted += 1
        return None

    def refund(self) -> None:
        """Give back the token of an attempt the provider refused."""
        self.granted -= 1
        if self.rate > 0:
            self._refill(self._monotonic())
            self._tokens = min(self.capacity, self._tokens + 1)

    def hold(self) -> None:
        """After a refusal that states no time: the next token waits one interval (tokens
        keep accruing meanwhile), so a provider that keeps refusing sees at most `rate`
        attempts a second, never a storm, while one that refuses now and then loses
        nothing."""
        if self.rate > 0:
            now = self._monotonic()
            self._refill(now)
            self._paused_until = max(self._paused_until, now + 1 / self.rate)

    def pause(self, seconds: float) -> None:
        """Hand out no token for `seconds` from now (a longer pause already set stays)."""
        if seconds > 0:
            now = self._monotonic()
            self._refill(now)
            self._paused_until = max(self._paused_until, now + seconds)
            if self.rate > 0:
                # Neither what was saved up before the provider said stop nor what would
                # accrue during the pause is spent in one burst the moment it ends.
                self._tokens = min(self._tokens, 1.0)
                self._updated = self._paused_until

    def paused_for(self) -> float:
        """Seconds the bucket stays paused (0 when it is not)."""
        return max(0.0, self._paused_until - self._monotonic())

    def _turn(self) -> asyncio.Lock:
        # asyncio primitives belong to the loop that first used them; a channel may serve
        # one loop after another (tests, CLI commands), so the lock follows the running loop.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock = asyncio.Lock()
            self._loop = loop
        return self._lock


_STATED = re.compile(r"(?:in|after|wait)\s+(\d{1,5})\s*(s|sec|secs|seconds?|m|min|mins|"
                     r"minutes?)\b", re.IGNORECASE)


def stated_delay_s(text: str) -> float | None:
    """Seconds a server reply asks to wait ("try again in 30 seconds"), None if it does not."""
    found = _STATED.search(text)
    if found is None:
        return None
    amount = float(found.group(1))
    return amount * 60 if found.group(2).lower().startswith("m") else amount


def retry_after_s(value: str | None, now_ms: int) -> float | None:
    """Seconds an HTTP `Retry-After` value asks for: delta seconds or an HTTP date; None
    when absent or unreadable. Never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_ms / 1000)


def reset_after_s(value: str | None, now_ms: int) -> float | None:
    """Seconds until an `X-RateLimit-Reset` epoch (seconds) or, for small values, a delay;
    None when absent or unreadable."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number < 0:
        return None
    if number > 1_000_000_000:  # an epoch second
        return max(0.0, number - now_ms / 1000)
    return number
