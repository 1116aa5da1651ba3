"""The live demo stream: contacts enter and move through every demo journey; same seed, same
stream; in the server it runs in the background, survives failures and stops cleanly."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from cadenza.api import create_app
from cadenza.api.context import AppContext
from cadenza.clock import FakeClock
from cadenza.demo import (
    DemoStream,
    StreamOptions,
    StreamReport,
    enrollment_counts,
    generate_demo,
    setup_journeys,
    streaming,
)
from cadenza.demo.journeys import JOURNEYS
from cadenza.demo.scenarios import Cast, Member, load_cast
from cadenza.engine import Engine, journey_stats
from cadenza.engine.dispatch import dispatcher_from_settings
from cadenza.errors import ValidationFailed
from cadenza.events import EventService, IngestRequest, IngestResult
from cadenza.settings import Settings
from cadenza.store import Store
from tests.api.support import serving_app

MINUTE = 60_000
SECRET = "demo-test-secret-0123456789-0123456789-abcdef"


@pytest.fixture
def workspace(store: Store, clock: FakeClock) -> Store:
    """A small demo workspace with its journeys published."""
    generate_demo(store, clock, contacts=150, days=10, seed=11)
    setup_journeys(store, clock)
    return store


def test_contacts_enter_and_move_through_every_journey(workspace: Store,
                                                       clock: FakeClock) -> None:
    store = workspace
    engine = Engine(store, clock)
    engine.start()  # journeys act on what happens from now on, as in the server
    options = StreamOptions(events_per_second=1, seed=5, max_catch_up_s=600)
    stream = DemoStream(load_cast(store), options, clock.now_ms())
    events = EventService(store, clock)
    for _ in range(16):  # 80 minutes: past the first waits (1 hour)
        clock.advance(5 * MINUTE)
        for result in events.ingest_many(stream.advance(clock.now_ms())):
            assert not result.rejected, result.rejected[0].to_dict()
        engine.run_once()
    entered = enrollment_counts(store)
    assert set(entered) == set(JOURNEYS)
    assert all(count > 0 for count in entered.values()), entered
    steps = {key: _steps(store, key) for key in JOURNEYS}
    assert steps["trial-onboarding"]["by-activity"]["left"] > 0  # after the hour's wait
    assert steps["abandoned-cart"]["reminder"]["entered"] > 0  # carts left for an hour
    paid = steps["abandoned-cart"]["wait-order"]["left"] - \
        steps["abandoned-cart"]["reminder"]["entered"]
    assert paid > 0  # their own order (the same order_id) ended the wait
    assert steps["lead-nurture"]["monday-1"]["here"] > 0
    assert steps["win-back"]["cool-off"]["here"] > 0
    report = asyncio.run(_dispatch_all(store, clock))
    assert report["sent"] > 0
    assert report["dead"] == report["retried"] == 0  # every template rendered


def test_same_seed_and_start_same_stream() -> None:
    def messages(seed: int) -> list[tuple[str, list[Any]]]:
        stream = DemoStream(_cast(), StreamOptions(events_per_second=20, seed=seed,
                                                   warm_up_s=60), 0)
        out = []
        for now in range(0, 120_000, 7_000):
            out.extend((r.source, list(r.messages)) for r in stream.advance(now))
        return out

    first = messages(1)
    assert first
    assert messages(1) == first
    assert messages(2) != first


def test_the_rate_is_about_what_was_asked() -> None:
    stream = DemoStream(_cast(), StreamOptions(events_per_second=5, seed=3), 0)
    stream.advance(0)  # the warm-up: ten minutes' worth at once
    sent = 0
    for now in range(1_000, 3_600_000 + 1, 1_000):
        sent += sum(len(r.messages) for r in stream.advance(now))
    rate = sent / 3_600
    assert 3.5 < rate < 6.0, rate


def test_a_long_pause_is_not_made_up() -> None:
    stream = DemoStream(_cast(), StreamOptions(events_per_second=5, seed=3, warm_up_s=0), 0)
    stream.advance(10_000)
    before = sum(stream.played.values())
    stream.advance(10_000 + 6 * 3_600_000)  # the laptop slept six hours
    assert sum(stream.played.values()) - before < 5


def test_options_are_checked() -> None:
    with pytest.raises(ValidationFailed, match="events_per_second"):
        StreamOptions(events_per_second=-1)
    with pytest.raises(ValidationFailed, match="tick_s"):
        StreamOptions(tick_s=0)
    with pytest.raises(ValidationFailed, match="warm_up_s"):
        StreamOptions(warm_up_s=-5)


def test_the_background_stream_survives_failures_and_stops(
        store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    got: list[IngestRequest] = []
    failures = [RuntimeError("the database is on fire")]
    reports: list[StreamReport] = []

    async def submit(request: IngestRequest) -> IngestResult:
        if failures:
            raise failures.pop()
        got.append(request)
        return IngestResult(accepted=len(request.messages))

    async def scenario() -> DemoStream | None:
        options = StreamOptions(events_per_second=50, seed=2, tick_s=0.01, warm_up_s=0)
        async with streaming(store, clock, submit, options, report=reports.append,
                             report_every_s=0.02) as stream:
            deadline = time.monotonic() + 10
            while (len(got) <= 5 or not reports) and time.monotonic() < deadline:
                clock.advance(5_000)
                await asyncio.sleep(0.01)
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "cadenza-demo-stream"]
        assert not tasks  # stopped and awaited
        return stream

    with caplog.at_level(logging.ERROR, logger="cadenza.demo"):
        stream = asyncio.run(scenario())
    assert stream is not None
    assert len(got) > 5  # carried on after the failure
    assert "a round failed" in caplog.text
    assert 0 < reports[-1].events <= stream.stored
    assert reports[-1].enrolled == {}  # no demo journeys in this store


def test_a_rate_of_zero_streams_nothing(store: Store, clock: FakeClock) -> None:
    async def scenario() -> DemoStream | None:
        async def submit(request: IngestRequest) -> IngestResult:
            raise AssertionError("nothing should be sent")

        async with streaming(store, clock, submit,
                             StreamOptions(events_per_second=0)) as stream:
            await asyncio.sleep(0.02)
        return stream

    assert asyncio.run(scenario()) is None


def test_the_demo_server_streams_events_into_the_journeys(
        workspace: Store, store_url: str, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.load(database_url=store_url, secret_key=SECRET)
    options = StreamOptions(events_per_second=3, seed=9, tick_s=0.05)

    def alongside(ctx: AppContext) -> AbstractAsyncContextManager[object]:
        return streaming(ctx.store, ctx.clock, ctx.writer.submit, options)

    app = create_app(settings, store=workspace, clock=clock, alongside=alongside)
    with serving_app(app):
        deadline = time.monotonic() + 20
        while True:  # the warm-up sends ten minutes of activity at once
            entered = enrollment_counts(workspace)
            if all(entered.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert all(count > 0 for count in entered.values()), entered
    # The server stopped (`serving_app` checks), and neither the stream nor the engine failed.
    assert not [r for r in caplog.records if r.name.startswith("cadenza")
                and r.levelno >= logging.WARNING], caplog.text


# --- helpers -----------------------------------------------------------------------------------


def _cast() -> Cast:
    plans = ("free", "free", "free", "starter", "pro", "enterprise")
    return Cast([Member(f"usr_{100_000 + i}", plans[i % len(plans)], f"p{i}@example.com",
                        f"acct_{i // 3:04d}", 1 + i % 4) for i in range(60)], set())


def _steps(store: Store, key: str) -> dict[str, dict[str, int]]:
    with store.read() as conn:
        versions = journey_stats(conn, key)["versions"]
    steps: dict[str, dict[str, int]] = versions[0]["steps"]
    return steps


async def _dispatch_all(store: Store, clock: FakeClock) -> dict[str, int]:
    dispatcher = dispatcher_from_settings(store, clock, Settings.load(secret_key=SECRET))
    total: dict[str, int] = {}
    try:
        while True:
            report = (await dispatcher.run_once(limit=500)).to_dict()
            for name, value in report.items():
                total[name] = total.get(name, 0) + value
            if not report["claimed"]:
                return total
    finally:
        await dispatcher.close()


