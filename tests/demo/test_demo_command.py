"""`cadenza demo`: builds the workspace and its journeys once, says how to watch them, and
leaves databases it did not make alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.clock import FakeClock
from cadenza.events import EventService
from cadenza.journeys import JourneyService
from cadenza.store import Store

SECRET = "demo-cli-secret-0123456789-0123456789-abcdef"


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI pointed at the test store."""
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)


def demo(*args: str) -> str:
    result = CliRunner().invoke(app, ["demo", "--no-serve", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_publishes_its_journeys_once(env: None, store: Store, clock: FakeClock) -> None:
    first = demo("--contacts", "100", "--days", "7")
    assert "Demo workspace ready" in first
    for key in ("trial-onboarding", "lead-nurture", "abandoned-cart", "win-back"):
        assert key in first
    assert "/api/journeys/abandoned-cart/stats" in first
    assert "cadenza journeys list" in first
    second = demo()
    assert "Demo data already present" in second
    assert "trial-onboarding" in second
    versions = {j.key: (j.live_version, j.draft_version) for j in
                JourneyService(store, clock).list()}
    assert set(versions.values()) == {(1, None)}


def test_demo_leaves_other_databases_alone(env: None, store: Store, clock: FakeClock) -> None:
    EventService(store, clock).ingest([{"type": "track", "userId": "real-1",
                                        "event": "Signed Up", "messageId": "m-1"}])
    output = demo()
    assert "not made by `cadenza demo`" in output
    assert JourneyService(store, clock).list() == []
