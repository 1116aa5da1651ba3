"""Engine fixtures: publish a journey straight into the tables, an engine on a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cadenza.clock import FakeClock
from cadenza.engine import Engine
from cadenza.events import EventService
from cadenza.journeys import compile_definition, load_journey
from cadenza.store import Store, dumps, insert_rows, schema

DAY = 86_400_000

REFERENCE = (Path(__file__).parents[2] / "docs" / "examples" / "reference-journey.yaml"
             ).read_text(encoding="utf-8")
"""The reference journey of issue 4."""


def insert_live_journey(store: Store, clock: FakeClock, text: str) -> int:
    """Put a journey file in the tables as a live, published version 1; its journey id."""
    definition: dict[str, Any] = load_journey(text)
    compile_definition(definition)
    now = clock.now_ms()
    with store.begin() as conn:
        jid = conn.execute(schema.journeys.insert().values(
            key=definition["journey"], name=definition["journey"], status="live",
            created_at=now, updated_at=now).returning(schema.journeys.c.id)).scalar_one()
        vid = conn.execute(schema.journey_versions.insert().values(
            journey_id=jid, number=1, status="published", definition=definition,
            content_hash="x", created_at=now, published_at=now
        ).returning(schema.journey_versions.c.id)).scalar_one()
        conn.execute(schema.journeys.update().where(schema.journeys.c.id == jid)
                     .values(live_version_id=vid))
    return int(jid)


@pytest.fixture
def publish(store: Store, clock: FakeClock) -> Callable[[str], int]:
    """Publish a journey file as a live version (straight into the tables, bypassing the
    template checks of `JourneyService.publish`); returns the journey id."""
    return lambda text: insert_live_journey(store, clock, text)


@pytest.fixture
def engine(store: Store, clock: FakeClock) -> Engine:
    """An engine on the fake clock."""
    eng = Engine(store, clock, batch_size=1_000)
    eng.start()
    return eng


@pytest.fixture
def make_contacts(events: EventService) -> Callable[..., list[int]]:
    """Contacts user-1..user-n, every third one on the pro plan; returns their ids."""

    def go(n: int, **traits: Any) -> list[int]:
        messages = [{"type": "identify", "userId": f"user-{i}", "messageId": f"id-{i}",
                     "traits": {"plan": "pro" if i % 3 == 0 else "basic", **traits}}
                    for i in range(n)]
        result = events.ingest(messages)
        assert not result.rejected, result.rejected
        return [int(c) for c in result.contact_ids]

    return go


def track(events: EventService, user: str, name: str, message_id: str,
          **properties: Any) -> None:
    """One track call."""
    result = events.ingest([{"type": "track", "userId": user, "event": name,
                             "messageId": message_id, "properties": properties}])
    assert not result.rejected, result.rejected


__all__ = ["DAY", "REFERENCE", "dumps", "insert_rows", "track"]
