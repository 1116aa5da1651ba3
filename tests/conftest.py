"""Shared fixtures: a fresh migrated store per test, a fake clock, services.

The PostgreSQL switch: with `CADENZA_TEST_POSTGRES=1` in the environment (`make test` sets it),
every test that uses `store_url` (and so `store`, `events`, ...) runs twice, once per dialect,
with test ids `[sqlite]` and `[postgres]`. Without it, the suite runs on SQLite only. A test
marked `@pytest.mark.postgres` runs on PostgreSQL only, and is skipped while the switch is off.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.clock import FakeClock
from cadenza.events.service import EventService
from cadenza.store import Store, upgrade
from tests.pgcluster import PgCluster

POSTGRES_SWITCH = os.environ.get("CADENZA_TEST_POSTGRES", "") == "1"
DIALECTS = ("sqlite", "postgres") if POSTGRES_SWITCH else ("sqlite",)


def pytest_report_header() -> str:
    """Say which dialects this run covers."""
    return f"cadenza dialects: {', '.join(DIALECTS)} (CADENZA_TEST_POSTGRES=1 adds postgres)"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that needs a database once per dialect in play."""
    if "dialect" not in metafunc.fixturenames:
        return
    markers = metafunc.definition.iter_markers("parametrize")
    pinned = any("dialect" in str(marker.args[0]) for marker in markers)
    if pinned:  # the test chose its dialect itself
        return
    postgres_only = metafunc.definition.get_closest_marker("postgres") is not None
    metafunc.parametrize("dialect", ["postgres"] if postgres_only else DIALECTS, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip PostgreSQL-only tests while the switch is off."""
    if POSTGRES_SWITCH:
        return
    skip = pytest.mark.skip(reason="PostgreSQL tests need CADENZA_TEST_POSTGRES=1")
    for item in items:
        if item.get_closest_marker("postgres") is not None:
            item.add_marker(skip)


@pytest.fixture
def dialect(request: pytest.FixtureRequest) -> str:
    """The dialect of this test's database: 'sqlite' or 'postgres'."""
    name: str = getattr(request, "param", "sqlite")
    if name == "postgres" and not POSTGRES_SWITCH:
        pytest.skip("PostgreSQL tests need CADENZA_TEST_POSTGRES=1")
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; tests copy it (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster per session, started on first use."""
    cluster = PgCluster.create(tmp_path_factory.mktemp("pg"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PgCluster) -> str:
    """One migrated PostgreSQL database per session; tests get copies of it."""
    name = pg_cluster.create_database(name="cadenza_template")
    upgrade(pg_cluster.url(name))
    pg_cluster.mark_template(name)
    return name


@pytest.fixture
def store_url(dialect: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, migrated database for this test."""
    if dialect == "sqlite":
        tmp_path: Path = request.getfixturevalue("tmp_path")
        path = tmp_path / "cadenza.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database(template=request.getfixturevalue("pg_template"))
    yield cluster.url(name)
    cluster.drop_database(name)


@pytest.fixture
def empty_store_url(dialect: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, empty (not migrated) database for this test."""
    if dialect == "sqlite":
        tmp_path: Path = request.getfixturevalue("tmp_path")
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)


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
