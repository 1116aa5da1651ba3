"""The live demo: events that keep arriving while the demo server runs.

`DemoStream` starts scenarios (`scenarios.Scenarios`) at random moments, a Poisson process
whose rate gives about `events_per_second` events, and hands out the messages that are due
as ingestion requests. It reads no clock and no global randomness: the caller says what time
it is, and the seed and start time decide everything, so tests drive it on a fake clock.
`streaming` runs one in the background of a server (through its batching writer, so every
commit wakes the journey engine at once) and stops it cleanly when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from cadenza.clock import Clock
from cadenza.demo.journeys import enrollment_counts
from cadenza.demo.scenarios import Cast, Scenarios, load_cast
from cadenza.errors import ValidationFailed
from cadenza.events import IngestRequest, IngestResult
from cadenza.store import Store

log = logging.getLogger("cadenza.demo")

SOURCES = ("web", "app")
"""Request order inside a round: identities are born on the web, then used by the app."""
EVENTS_PER_SCENARIO = 4.35
"""Messages a scenario sends on average (measured over many scenarios), to turn an event
rate into a scenario rate."""

MAX_RATE = 100
"""Events per second at most: a demo, not a load test (see bench/ for those)."""
CHUNK = 2_000
"""Messages per ingestion request at most (the warm-up can send thousands at once)."""

Submit = Callable[[IngestRequest], Awaitable[IngestResult]]
"""Store one request (e.g. `BatchingWriter.submit`)."""


@dataclass(frozen=True)
class StreamOptions:
    """How the live demo stream behaves."""

    events_per_second: float = 3.0
    """Events sent per second, on average; 0 turns the stream off."""
    seed: int = 7
    """With the start time, decides everything the stream does."""
    tick_s: float = 1.0
    """How often due events are sent, in seconds."""
    warm_up_s: float = 600.0
    """The stream starts as if it had been running this long: what would have happened
    meanwhile is sent at once, so the first minutes look like any others (a scenario spreads
    its events over minutes)."""
    max_catch_up_s: float = 60.0
    """After a longer pause (a suspended laptop), the activity missed is not made up."""

    def __post_init__(self) -> None:
        if not 0 <= self.events_per_second <= MAX_RATE:
            raise ValidationFailed("events_per_second", f"must be between 0 (off) and "
                                   f"{MAX_RATE}, got {self.events_per_second}")
        if not 0 < self.tick_s <= 60:
            raise ValidationFailed("tick_s", f"must be above 0 and at most 60, got "
                                   f"{self.tick_s}")
        for name in ("warm_up_s", "max_catch_up_s"):
            if not 0 <= getattr(self, name) <= 86_400:
                raise ValidationFailed(name, f"must be between 0 and 86400 seconds, got "
                                       f"{getattr(self, name)}")


@dataclass(frozen=True)
class StreamReport:
    """What the stream has done so far, for a progress line."""

    events: int
    """Events stored."""
    enrolled: dict[str, int]
    """Contacts entered so far, per demo journey."""


class DemoStream:
    """Scenarios started at random moments; their messages handed out when due."""

    def __init__(self, cast: Cast, options: StreamOptions, start_ms: int) -> None:
        self.options = options
        self.rng = random.Random(f"{options.seed}:{start_ms}")
        self.scenarios = Scenarios(self.rng, cast, self._schedule)
        self.played: Counter[str] = Counter()
        """Scenarios started, by name."""
        self.stored = 0
        """Messages stored so far (`run_stream` counts them)."""
        self._queue: list[tuple[int, int, str, dict[str, Any], Callable[[], None] | None]] = []
        self._seq = 0
        self._per_ms = options.events_per_second / EVENTS_PER_SCENARIO / 1000
        self._last = start_ms
        self._next = (start_ms - int(options.warm_up_s * 1000) + self._gap()
                      if self._per_ms else None)

    def advance(self, now_ms: int) -> list[IngestRequest]:
        """Start the scenarios due by `now_ms` and return every message due, as requests."""
        if self._next is not None:
            if now_ms - self._last > self.options.max_catch_up_s * 1000 and \
                    self._next < now_ms:
                self._next = now_ms + self._gap()  # a pause: skip the activity it missed
            self._last = max(self._last, now_ms)
            while self._next <= now_ms:
                self.played[self.scenarios.play(self._next)] += 1
                self._next += self._gap()
        due: dict[str, list[dict[str, Any]]] = {source: [] for source in SOURCES}
        while self._queue and self._queue[0][0] <= now_ms:
            _at, _seq, source, message, then = heapq.heappop(self._queue)
            due[source].append(message)
            if then is not None:
                then()
        return [IngestRequest(due[source][start : start + CHUNK], source=source)
                for source in SOURCES for start in range(0, len(due[source]), CHUNK)]

    @property
    def pending(self) -> int:
        """Messages scheduled for later."""
        return len(self._queue)

    def _schedule(self, at: int, source: str, message: dict[str, Any],
                  then: Callable[[], None] | None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, source, message, then))

    def _gap(self) -> int:
        return max(1, int(self.rng.expovariate(self._per_ms)))


async def run_stream(stream: DemoStream, submit: Submit, clock: Clock,
                     stop: asyncio.Event) -> None:
    """Send what is due every tick until `stop`; a failed round is logged, never raised."""
    while not stop.is_set():
        try:
            # Off the event loop: a warm-up can start thousands of scenarios at once.
            for request in await asyncio.to_thread(stream.advance, clock.now_ms()):
                result = await submit(request)
                if result.rejected:
                    log.warning("demo stream: %d of %d messages refused, e.g. %s",
                                len(result.rejected), len(request.messages),
                                result.rejected[0].to_dict())
                stream.stored += result.accepted
        except Exception:  # the demo must not take the server down: say it, carry on
            log.exception("demo stream: a round failed; carrying on")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), stream.options.tick_s)


@asynccontextmanager
async def streaming(store: Store, clock: Clock, submit: Submit, options: StreamOptions, *,
                    report: Callable[[StreamReport], None] | None = None,
                    report_every_s: float = 60.0) -> AsyncIterator[DemoStream | None]:
    """Run a demo stream in the background while the block runs (None when turned off);
    `report` hears every `report_every_s` how many events went in and who entered which
    journey."""
    if not options.events_per_second:
        yield None
        return
    try:
        cast = await asyncio.to_thread(load_cast, store)
    except Exception:  # no cast is no reason to stop: newcomers still arrive
        log.exception("demo stream: could not read the workspace's customers")
        cast = Cast([], set())
    stream = DemoStream(cast, options, clock.now_ms())
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_stream(stream, submit, clock, stop),
                                 name="cadenza-demo-stream")]
    if report is not None:
        tasks.append(asyncio.create_task(_report(store, stream, report, report_every_s, stop),
                                         name="cadenza-demo-report"))
    try:
        yield stream
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _report(store: Store, stream: DemoStream, report: Callable[[StreamReport], None],
                  every_s: float, stop: asyncio.Event) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        try:
            enrolled = await asyncio.to_thread(enrollment_counts, store)
            report(StreamReport(stream.stored, enrolled))
        except Exception:
            log.exception("demo stream: could not report progress")
