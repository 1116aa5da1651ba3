"""API fixtures: a real uvicorn server on loopback over the test store, keys, a client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cadenza.api import create_app
from cadenza.clock import FakeClock
from cadenza.governance import KeyKind, create_key
from cadenza.settings import Settings
from cadenza.store import Store
from tests.api.support import serving_app

SECRET = "test-secret-key-that-is-long-enough-0123456789"


@dataclass
class Keys:
    """Plaintext keys for the test app."""

    write: str
    admin: str

    @property
    def admin_headers(self) -> dict[str, str]:
        """Headers that authenticate as admin."""
        return {"Authorization": f"Bearer {self.admin}"}


@pytest.fixture
def settings(store_url: str) -> Settings:
    """Settings pointing at the test store."""
    return Settings.load(database_url=store_url, secret_key=SECRET, key_cache_seconds=0)


@pytest.fixture
def keys(store: Store, clock: FakeClock) -> Keys:
    """One write key and one admin key."""
    with store.begin() as conn:
        _, write = create_key(conn, SECRET, KeyKind.WRITE, "test source", clock.now_ms())
        _, admin = create_key(conn, SECRET, KeyKind.ADMIN, "test admin", clock.now_ms())
    return Keys(write, admin)


@pytest.fixture
def base_url(settings: Settings, store: Store, clock: FakeClock) -> Iterator[str]:
    """URL of a real server (uvicorn, loopback, free port) running the app."""
    with serving_app(create_app(settings, store=store, clock=clock)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    """An HTTP client for the test server."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http
