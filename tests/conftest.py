"""Shared fixtures: a fresh migrated store per test, a fake clock, services."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.clock import FakeClock
from cadenza.events.service import EventService
from cadenza.store import Store, upgrade


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; tests copy it (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def store_url(sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a fresh, migrated database for this test."""
    path = tmp_path / "cadenza.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A fresh, migrated store."""
    opened = Store.create(store_url)
    yield opened
    opened.dispose()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


@pytest.fixture
def events(store: Store, clock: FakeClock) -> EventService:
    """The ingestion service over the test store."""
    return EventService(store, clock)
