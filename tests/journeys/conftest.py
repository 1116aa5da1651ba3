"""Journey fixtures: the service over the test store, a factory of definitions, the full
example file, and rows the engine would have written (contacts, enrollments, templates)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.journeys import JourneyService
from cadenza.store import Store, schema
from tests.api.conftest import base_url, client, keys, settings  # noqa: F401 - fixtures

EXAMPLE = Path(__file__).with_name("trial-onboarding.yaml")
"""A journey that uses every trigger and step kind (also the docs' example)."""

MakeJourney = Callable[..., dict[str, Any]]


def minimal(key: str = "welcome-flow", **changes: Any) -> dict[str, Any]:
    """A small valid definition: one event trigger, send, wait, send."""
    definition: dict[str, Any] = {
        "journey": key,
        "entry": {"event": "signed_up"},
        "steps": [
            {"id": "welcome", "send": {"channel": "email", "template": "welcome"}},
            {"id": "settle", "wait": "2d"},
            {"id": "nudge", "send": {"channel": "email", "template": "nudge"}},
        ],
    }
    definition.update(copy.deepcopy(changes))
    return definition


@pytest.fixture
def make_journey() -> MakeJourney:
    """Build a definition: `make_journey(key, **top_level_changes)`."""
    return minimal


@pytest.fixture
def journeys(store: Store, clock: FakeClock) -> JourneyService:
    """The journey service over the test store."""
    return JourneyService(store, clock)


@pytest.fixture
def add_templates(store: Store, clock: FakeClock) -> Callable[..., None]:
    """Create templates: `add_templates(("welcome", "email"), ...)`."""

    def add(*pairs: tuple[str, str]) -> None:
        with store.begin() as conn:
            conn.execute(sa.insert(schema.templates), [
                {"key": key, "channel": channel, "subject": key, "body": "Hi",
                 "created_at": clock.now_ms(), "updated_at": clock.now_ms()}
                for key, channel in pairs])

    return add


@pytest.fixture
def templates(add_templates: Callable[..., None]) -> None:
    """The templates `minimal` sends."""
    add_templates(("welcome", "email"), ("nudge", "email"))


@pytest.fixture
def enroll(store: Store, clock: FakeClock) -> Callable[..., list[int]]:
    """Put contacts into a journey version as the engine would:
    `enroll(version_id, node, count, status="waiting", wake_at=..., wait_event=...)`."""

    def add(version_id: int, node: str, count: int = 1, *, status: str = "waiting",
            wake_at: int | None = None, wait_event: str | None = None,
            wait_key: str | None = None) -> list[int]:
        now = clock.now_ms()
        ids = []
        with store.begin() as conn:
            journey_id = conn.execute(sa.select(schema.journey_versions.c.journey_id).where(
                schema.journey_versions.c.id == version_id)).scalar_one()
            for _ in range(count):
                contact = conn.execute(sa.insert(schema.contacts).values(
                    attributes={}, created_at=now, updated_at=now)
                    .returning(schema.contacts.c.id)).scalar_one()
                ids.append(conn.execute(sa.insert(schema.enrollments).values(
                    journey_id=journey_id, version_id=version_id, contact_id=contact,
                    part=contact % 64, shadow=False, node=node, status=status,
                    wake_at=wake_at, wait_event=wait_event, wait_key=wait_key, seq=3,
                    context={}, active_slot=0, entered_at=now, updated_at=now)
                    .returning(schema.enrollments.c.id)).scalar_one())
        return ids

    return add


def enrollments(store: Store) -> list[dict[str, Any]]:
    """Every enrollment row, by id."""
    with store.read() as conn:
        return [dict(r) for r in conn.execute(
            sa.select(schema.enrollments).order_by(schema.enrollments.c.id)).mappings()]
