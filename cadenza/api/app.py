"""`create_app(settings)`: the HTTP API (Segment-compatible ingestion, admin API, docs)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from cadenza import __version__
from cadenza.api import (
    admin,
    content,
    errors,
    feedback,
    imports,
    ingest,
    journeys,
    leads,
    messaging,
    models,
    outbox,
    policies,
    runs,
    scoring,
    segments,
    sends,
)
from cadenza.api.context import AppContext
from cadenza.api.responses import JSON
from cadenza.clock import Clock, SystemClock
from cadenza.contacts import ContactService
from cadenza.engine import EngineRunner, run_worker
from cadenza.errors import CadenzaError
from cadenza.events import BatchingWriter, EventService, IngestLimits
from cadenza.governance import KeyChecker
from cadenza.journeys import JourneyService
from cadenza.settings import Settings
from cadenza.store import Store


def build_context(settings: Settings, store: Store | None = None,
                  clock: Clock | None = None) -> AppContext:
    """Services wired from the settings (the store and clock may be given by tests)."""
    store = store or Store.create(settings.database_url)
    clock = clock or SystemClock()
    limits = IngestLimits(max_future_ms=settings.max_future_ms, max_past_ms=settings.max_past_ms)
    events = EventService(store, clock, limits)
    return AppContext(
        settings=settings,
        store=store,
        clock=clock,
        events=events,
        contacts=ContactService(store, clock),
        keys=KeyChecker(store, settings.secret_key, settings.key_cache_seconds),
        writer=BatchingWriter(events),
        journeys=JourneyService(store, clock,
                                publish_sample_contacts=settings.publish_sample_contacts),
    )


async def _checkpoint_forever(store: Store, every: float = 1.0) -> None:
    """Keep SQLite's write-ahead log short from a background thread, off the commit path."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(store.checkpoint)
        except CadenzaError:
            continue  # busy now; the next round will do it


Alongside = Callable[[AppContext], AbstractAsyncContextManager[object]]
"""Something to run for as long as the server serves (e.g. the demo's live events)."""


def create_app(settings: Settings, store: Store | None = None,
               clock: Clock | None = None, *, alongside: Alongside | None = None) -> FastAPI:
    """The ASGI app; `alongside(ctx)` is entered once the services run (engine, writer) and
    exited before they stop."""
    ctx = build_context(settings, store, clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        working: asyncio.Task[None] | None = None
        stop_working = asyncio.Event()
        if ctx.settings.engine:
            ready = asyncio.Event()

            def started(runner: EngineRunner) -> None:
                ctx.runner = runner
                ctx.events.after_commit.append(runner.wake)
                ready.set()

            working = asyncio.create_task(run_worker(ctx.store, ctx.clock, ctx.settings,
                                                     stop_working, started=started))
            waiting = asyncio.create_task(ready.wait())
            await asyncio.wait({working, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if working.done():  # the engine could not start: say why, do not serve
                waiting.cancel()
                working.result()
        await ctx.writer.start()
        checkpointer = asyncio.create_task(_checkpoint_forever(ctx.store))
        # Everything built so far lives as long as the process: keep the garbage collector
        # from walking it again and again (shorter pauses on the request path).
        gc.freeze()
        try:
            async with alongside(ctx) if alongside else contextlib.nullcontext():
                yield
        finally:
            checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpointer
            await ctx.writer.stop()
            if working is not None:
                stop_working.set()
                await working

    app = FastAPI(
        title="Cadenza",
        version=__version__,
        summary="Marketing automation and customer-journey orchestration",
        description=(
            "Ingestion under `/v1/` speaks the Segment HTTP Tracking API: point a Segment or "
            "RudderStack client at this server with a **write key**. The admin API under "
            "`/api/` takes an **admin key** as `Authorization: Bearer <key>`."
        ),
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.state.cadenza = ctx
    errors.install(app)
    app.include_router(ingest.router)
    app.include_router(admin.router)
    app.include_router(imports.router)
    app.include_router(outbox.router)
    app.include_router(journeys.router)
    app.include_router(runs.router)
    app.include_router(content.router)
    app.include_router(messaging.router)
    app.include_router(feedback.router)
    app.include_router(policies.router)
    app.include_router(segments.router)
    app.include_router(scoring.router)
    app.include_router(models.router)
    app.include_router(leads.router)
    app.include_router(sends.router)

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, object]:
        """Liveness and the store's dialect."""
        return {"status": "ok", "version": __version__, "store": ctx.store.dialect}

    return app


def app_from_environment() -> FastAPI:
    """The app built from `Settings.load()` (for uvicorn's worker processes)."""
    return create_app(Settings.load())
