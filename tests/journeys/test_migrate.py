"""Moving running enrollments between versions with an explicit step mapping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.journeys import JourneyService, JourneyVersion
from cadenza.store import Store, schema
from tests.journeys.conftest import enrollments, minimal

Enroll = Callable[..., list[int]]

V1 = minimal(steps=[
    {"id": "welcome", "send": {"channel": "email", "template": "welcome"}},
    {"id": "settle", "wait": "2d"},
    {"id": "wait-buy", "wait_for": {"event": "purchased", "timeout": "3d"}},
    {"id": "nudge", "send": {"channel": "email", "template": "nudge"}},
])
V2 = minimal(steps=[
    {"id": "hello", "send": {"channel": "email", "template": "welcome"}},
    {"id": "pause", "wait": "1d"},
    {"id": "wait-order", "wait_for": {"event": "ordered", "timeout": "5d"}},
    {"id": "pro-check", "branch": [{"when": {"tag": "pro"}, "goto": "nudge"}]},
    {"id": "nudge", "send": {"channel": "email", "template": "nudge"}},
])


@pytest.fixture
def versions(journeys: JourneyService, templates: None) -> tuple[JourneyVersion,
                                                                  JourneyVersion]:
    """Version 1 and version 2 of welcome-flow, both published (2 live)."""
    journeys.save_draft(V1)
    one = journeys.publish("welcome-flow")
    journeys.save_draft(V2)
    return one, journeys.publish("welcome-flow")


def test_a_complete_mapping_moves_everyone(journeys: JourneyService, store: Store,
                                           clock: FakeClock, enroll: Enroll,
                                           versions: tuple[JourneyVersion, ...]) -> None:
    one, two = versions
    wake = clock.now_ms() + 3_600_000
    settling = enroll(one.id, "settle", 2, wake_at=wake)
    waiting = enroll(one.id, "wait-buy", 1, wake_at=wake, wait_event="purchased",
                     wait_key="A-1")
    ready = enroll(one.id, "nudge", 1, status="ready", wake_at=wake)
    done = enroll(one.id, "nudge", 1, status="completed")
    clock.advance(1000)
    moved = journeys.migrate("welcome-flow", 1, 2, {"settle": "pause",
                                                    "wait-buy": "wait-order",
                                                    "nudge": "pro-check",
                                                    "welcome": "hello"})
    assert moved == {"nudge": 1, "settle": 2, "wait-buy": 1}
    rows = {r["id"]: r for r in enrollments(store)}
    now = clock.now_ms()

    def state(eid: int) -> tuple[Any, ...]:
        r = rows[eid]
        return (r["version_id"], r["node"], r["status"], r["wake_at"], r["wait_event"],
                r["wait_key"], r["seq"], r["updated_at"])

    # Same wait kind: the wait goes on where it was (a wait_for now awaits the new event).
    assert state(settling[0]) == (two.id, "pause", "waiting", wake, None, None, 4, now)
    assert state(waiting[0]) == (two.id, "wait-order", "waiting", wake, "ordered", "A-1", 4,
                                 now)
    # Another kind: ready to run the new step now.
    assert state(ready[0]) == (two.id, "pro-check", "ready", now, None, None, 4, now)
    # Ended enrollments stay where they ended.
    assert state(done[0])[:3] == (one.id, "nudge", "completed")
    with store.read() as conn:
        history = conn.execute(sa.select(schema.journey_history)
                               .order_by(schema.journey_history.c.enrollment_id)).mappings().all()
    assert [(h["enrollment_id"], h["cause"], h["version_id"], h["at"]) for h in history] == [
        (eid, "migrate", two.id, now) for eid in (*settling, *waiting, *ready)]
    assert history[0]["steps"] == [["settle", "migrated",
                                    {"from_version": 1, "to_version": 2, "to": "pause"}]]


def test_waiting_moved_to_another_kind_of_wait_is_restarted(
        journeys: JourneyService, store: Store, clock: FakeClock, enroll: Enroll,
        versions: tuple[JourneyVersion, ...]) -> None:
    one = versions[0]
    enroll(one.id, "wait-buy", 1, wake_at=clock.now_ms() + 10, wait_event="purchased",
           wait_key="A-1")
    journeys.migrate("welcome-flow", 1, 2, {"wait-buy": "pause"})
    row = enrollments(store)[0]
    assert (row["node"], row["status"], row["wake_at"], row["wait_event"], row["wait_key"]) == \
        ("pause", "ready", clock.now_ms(), None, None)


def test_an_incomplete_mapping_moves_no_one(journeys: JourneyService, store: Store,
                                            clock: FakeClock, enroll: Enroll,
                                            versions: tuple[JourneyVersion, ...]) -> None:
    one, _ = versions
    enroll(one.id, "settle", 2, wake_at=clock.now_ms())
    enroll(one.id, "wait-buy", 1, wake_at=clock.now_ms(), wait_event="purchased")
    before = enrollments(store)
    with pytest.raises(ValidationFailed) as caught:
        journeys.migrate("welcome-flow", 1, 2, {"settle": "pause"})
    assert caught.value.field == "mapping"
    assert "enrollments of version 1 are at 'wait-buy', which it does not map; add " \
        "wait-buy=<step of version 2>" in caught.value.reason
    with pytest.raises(ValidationFailed) as caught:
        journeys.migrate("welcome-flow", 1, 2, {"settle": "paus", "wait-buy": "wait-order",
                                                "setle": "pause"})
    assert "'setle' names no step of version 1 (did you mean 'settle'?)" in caught.value.reason
    assert "settle=paus: 'paus' names no step of version 2 (did you mean 'pause'?)" in \
        caught.value.reason
    assert enrollments(store) == before


def test_migrate_errors(journeys: JourneyService, versions: tuple[JourneyVersion, ...],
                        templates: None) -> None:
    with pytest.raises(ValidationFailed, match="is version 1 itself"):
        journeys.migrate("welcome-flow", 1, 1, {})
    with pytest.raises(NotFound, match="welcome-flow v9"):
        journeys.migrate("welcome-flow", 1, 9, {})
    with pytest.raises(NotFound, match="journey 'other' not found"):
        journeys.migrate("other", 1, 2, {})
    journeys.save_draft(V1)
    with pytest.raises(Conflict, match="version 3 of 'welcome-flow' is a draft"):
        journeys.migrate("welcome-flow", 1, 3, {})
    # Nobody to move: an empty mapping is complete.
    assert journeys.migrate("welcome-flow", 2, 1, {}) == {}
