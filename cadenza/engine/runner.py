"""The engine inside a process: a worker thread that wakes on ingestion.

`cadenza serve` starts one (unless `CADENZA_ENGINE=false`); `cadenza engine run` runs one on
its own. Ingestion commits call `wake()`, so an event reaches its journeys without a polling
interval; `on_outbox` is told when a pass wrote outbox rows (the dispatcher's wake-up).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from cadenza.clock import Clock
from cadenza.engine.listeners import Job, Listener, listeners_from_settings
from cadenza.engine.worker import Engine, PassReport
from cadenza.store import Store

log = logging.getLogger("cadenza.engine")


class EngineRunner:
    """One engine worker on a background thread."""

    def __init__(self, store: Store, clock: Clock, *,
                 on_outbox: Callable[[], None] | None = None, idle_ms: int = 1_000,
                 listeners: Sequence[Listener] = (), jobs: Sequence[Job] = ()) -> None:
        self._on_outbox = on_outbox
        self.engine = Engine(store, clock, after_commit=self._committed, listeners=listeners,
                             jobs=jobs)
        self.idle_ms = idle_ms
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def _committed(self, report: PassReport) -> None:
        if report.outbox and self._on_outbox is not None:
            self._on_outbox()

    def wake(self) -> None:
        """Something happened (events were stored): run a round now."""
        self._wake.set()

    def start(self) -> None:
        """Start the worker thread."""
        self.engine.start()
        self._thread = threading.Thread(target=self._run, name="cadenza-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.engine.run_forever(self._stop, self._wake, self.idle_ms)
        except Exception:  # the thread must say why it died, not vanish
            log.exception("the journey engine stopped")
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current pass and give the partitions back."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


async def run_worker(store: Store, clock: Clock, settings: Any, stop: asyncio.Event,
                     *, dispatch: bool = True,
                     started: Callable[[EngineRunner], None] | None = None) -> None:
    """The engine (on its thread) and the dispatcher (on this event loop) until `stop`:
    what `cadenza serve` runs beside the API and `cadenza worker` runs alone. The engine
    wakes the dispatcher whenever a pass writes outbox rows."""
    from cadenza.engine.dispatch import dispatcher_from_settings

    loop = asyncio.get_running_loop()
    wake_dispatch = asyncio.Event()

    def outbox_written() -> None:  # called on the engine's thread
        loop.call_soon_threadsafe(wake_dispatch.set)

    listeners, jobs = listeners_from_settings(settings)
    runner = EngineRunner(store, clock, on_outbox=outbox_written, listeners=listeners,
                          jobs=jobs)
    runner.start()
    if started is not None:
        started(runner)
    dispatcher = dispatcher_from_settings(store, clock, settings) if dispatch else None
    try:
        if dispatcher is not None:
            await dispatcher.run_forever(stop, wake_dispatch)
        else:
            await stop.wait()
    finally:
        if dispatcher is not None:
            await dispatcher.close()
        await asyncio.to_thread(runner.stop)
