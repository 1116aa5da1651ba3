"""What the engine knows about journeys: compiled specs and the in-memory event index.

Built from the `journeys` and `journey_versions` tables and rebuilt when a journey changes
(the journeys table is small, so each pass compares it cheaply). The index answers, for an
event name, which journeys it enters, which waits it may end and which goals it meets —
without a query.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.journeys.spec import (
    ApiTrigger,
    AttributeTrigger,
    DateTrigger,
    EventTrigger,
    JourneySpec,
    ScheduleTrigger,
    SegmentTrigger,
    Trigger,
    WaitForStep,
)
from cadenza.segments import SEGMENT_ENTERED, SEGMENT_EXITED
from cadenza.store import fetch, loads

Compile = Callable[[dict[str, Any]], JourneySpec]
SEGMENT_EVENTS = {SEGMENT_ENTERED: "enter", SEGMENT_EXITED: "exit"}
"""The segments domain's entry/exit events, and the `on` of the triggers they fire."""


@dataclass(frozen=True)
class Target:
    """A version that entries go to: the live one, or the one in shadow."""

    journey_id: int
    key: str
    version_id: int
    shadow: bool
    spec: JourneySpec = field(compare=False)


@dataclass
class Catalog:
    """Journeys, their specs, and the event index."""

    fingerprint: tuple[Any, ...] = ()
    keys: dict[int, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    specs: dict[int, JourneySpec] = field(default_factory=dict)
    version_journey: dict[int, int] = field(default_factory=dict)
    targets: dict[int, list[Target]] = field(default_factory=dict)
    """Where a journey's new entries go (live first, then shadow), for live journeys."""
    entry_events: dict[str, list[tuple[Target, EventTrigger]]] = field(default_factory=dict)
    entry_attributes: list[tuple[Target, AttributeTrigger]] = field(default_factory=list)
    entry_dates: list[tuple[Target, DateTrigger]] = field(default_factory=list)
    entry_schedules: list[tuple[Target, ScheduleTrigger]] = field(default_factory=list)
    entry_segments: dict[str, list[tuple[Target, SegmentTrigger]]] = field(default_factory=dict)
    waited_events: set[str] = field(default_factory=set)
    goals: dict[str, set[int]] = field(default_factory=dict)
    """Event name -> ids of running journeys with a goal on it (in some version)."""
    paused: set[int] = field(default_factory=set)

    def spec(self, version_id: int) -> JourneySpec:
        """The compiled spec of a version."""
        return self.specs[version_id]

    def interesting(self, name: str, is_identify: bool) -> bool:
        """Whether an event of this name can change anything."""
        return (name in self.entry_events or name in self.waited_events or name in self.goals
                or (is_identify and bool(self.entry_attributes))
                or (name in SEGMENT_EVENTS and bool(self.entry_segments)))

    def api_targets(self, key: str) -> list[Target]:
        """The targets of a journey that accepts API entries (empty if it does not)."""
        journey_id = self.ids.get(key)
        if journey_id is None:
            return []
        return [t for t in self.targets.get(journey_id, [])
                if any(isinstance(tr, ApiTrigger) for tr in t.spec.triggers)]


class CatalogLoader:
    """Keeps a `Catalog` current; specs of published versions are compiled once."""

    def __init__(self, compile_definition: Compile) -> None:
        self._compile = compile_definition
        self._specs: dict[int, JourneySpec] = {}
        self.catalog = Catalog()

    def refresh(self, conn: Connection) -> Catalog:
        """Reload the catalog if any journey changed since the last call."""
        journeys = fetch(conn, "SELECT id, key, status, live_version_id, shadow_version_id, "
                         "updated_at FROM journeys ORDER BY id")
        versions = fetch(conn, "SELECT count(*), coalesce(max(id), 0) FROM journey_versions "
                         "WHERE status = 'published'")
        fingerprint = (tuple(journeys), tuple(versions))
        if fingerprint != self.catalog.fingerprint:
            self.catalog = self._build(conn, journeys, fingerprint)
        return self.catalog

    def _build(self, conn: Connection, journeys: list[tuple[Any, ...]],
               fingerprint: tuple[Any, ...]) -> Catalog:
        cat = Catalog(fingerprint=fingerprint)
        running = {row[0] for row in journeys if row[2] != "archived"}
        for jid, key, status, _live, _shadow, _ in journeys:
            cat.keys[jid] = key
            cat.ids[key] = jid
            cat.status[jid] = status
            if status == "paused":
                cat.paused.add(jid)
        wanted = [vid for vid, in conn.exec_driver_sql(
            "SELECT id FROM journey_versions WHERE status = 'published'")
            if vid not in self._specs]
        for vid, definition in _definitions(conn, wanted):
            self._specs[vid] = self._compile(loads(definition))
        for vid, jid in conn.exec_driver_sql(
                "SELECT id, journey_id FROM journey_versions WHERE status = 'published'"):
            if vid in self._specs:
                cat.specs[vid] = self._specs[vid]
                cat.version_journey[vid] = jid
        entry_events: dict[str, list[tuple[Target, EventTrigger]]] = defaultdict(list)
        segments: dict[str, list[tuple[Target, SegmentTrigger]]] = defaultdict(list)
        for jid, key, status, live, shadow, _ in journeys:
            if status != "live":
                continue
            targets = [Target(jid, key, vid, vid == shadow, cat.specs[vid])
                       for vid in (live, shadow) if vid is not None and vid in cat.specs]
            cat.targets[jid] = targets
            for target in targets:
                for trigger in target.spec.triggers:
                    _index_trigger(cat, entry_events, segments, target, trigger)
        cat.entry_events = dict(entry_events)
        cat.entry_segments = dict(segments)
        goals: dict[str, set[int]] = defaultdict(set)
        for vid, spec in cat.specs.items():
            jid = cat.version_journey[vid]
            if jid not in running or jid in cat.paused:
                continue
            for step in spec.steps.values():
                if isinstance(step, WaitForStep):
                    cat.waited_events.add(step.event)
            for goal in spec.goals:
                goals[goal.event].add(jid)
        cat.goals = dict(goals)
        return cat


def _index_trigger(cat: Catalog, entry_events: dict[str, list[tuple[Target, EventTrigger]]],
                   segments: dict[str, list[tuple[Target, SegmentTrigger]]], target: Target,
                   trigger: Trigger) -> None:
    if isinstance(trigger, EventTrigger):
        entry_events[trigger.event].append((target, trigger))
    elif isinstance(trigger, AttributeTrigger):
        cat.entry_attributes.append((target, trigger))
    elif isinstance(trigger, DateTrigger):
        cat.entry_dates.append((target, trigger))
    elif isinstance(trigger, ScheduleTrigger):
        cat.entry_schedules.append((target, trigger))
    elif isinstance(trigger, SegmentTrigger):
        segments[trigger.segment].append((target, trigger))


def _definitions(conn: Connection, ids: list[int]) -> list[tuple[int, Any]]:
    from cadenza.store import select_in

    return [(int(r[0]), r[1]) for r in select_in(
        conn, "SELECT id, definition FROM journey_versions WHERE id IN ({marks})", ids)]
