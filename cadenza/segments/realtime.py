"""Real-time segment membership: a listener on the engine's passes.

In every pass, inside the engine's transaction, the listener reads the events after its
cursors (`segments:<part>`) and the contacts queued for it (`cadenza.store.changes`), and
re-evaluates only the contacts they touched against only the segments they can affect. An
in-memory index, rebuilt when a definition changes, answers which those are:

    track event "purchased"      segments counting (or summing, ...) "purchased"
    identify with traits         segments reading one of those attributes
    group                        segments reading company attributes
    queued change                segments reading attributes, tags, consent, scores, stages
    membership change of X       segments referencing X (evaluated after X, in the same pass)
    first event of a new contact every segment
    a count window moving on     contacts whose counted events just left a window (every
                                 `window_scan_ms`), so that people leave "3 purchases within
                                 30 days" when the oldest purchase turns 31 days old

Facts are loaded once per batch for the touched contacts (`load_facts`) and conditions are
evaluated in Python; membership changes, history and entry/exit events are written in the
same transaction. What real time cannot see (data changed behind the engine's back, merges,
contacts created while no worker ran, `last_seen: "*"` windows) the scheduled recompute
corrects and reports as drift.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.segments.conditions import parse_condition
from cadenza.segments.facts import ANY_EVENT, Needs, load_facts
from cadenza.segments.membership import Change, write_changes
from cadenza.segments.models import Segment
from cadenza.segments.nodes import AttributeCondition, Condition, LastSeenCondition, leaves
from cadenza.segments.queries import all_segments, fingerprint
from cadenza.segments.recompute import RecomputeJob, dependency_order
from cadenza.store import cursors as store_cursors
from cadenza.store import fetch, loads, schema, select_in
from cadenza.store.changes import take_changed

READER = "segments"
"""The listener's event-log cursors are `segments:<part>`."""
WINDOW_MARK = "segments-window"
"""`segments-window:<part>`: when the count windows of the partition were last scanned."""



@dataclass
class _Entry:
    segment: Segment
    condition: Condition
    needs: Needs
    level: int
    """0 for segments referencing no segment, else 1 + the highest level referenced."""


@dataclass
class SegmentIndex:
    """Which segments an event or change can affect."""

    fingerprint: tuple[Any, ...] = ()
    entries: dict[int, _Entry] = field(default_factory=dict)
    by_event: dict[str, set[int]] = field(default_factory=dict)
    any_event: set[int] = field(default_factory=set)
    """Segments reading the contact's latest event of any name (`last_seen: "*"`)."""
    by_trait: dict[str, set[int]] = field(default_factory=dict)
    any_trait: set[int] = field(default_factory=set)
    """Segments reading attributes whose names the index cannot list."""
    on_group: set[int] = field(default_factory=set)
    on_change: set[int] = field(default_factory=set)
    dependents: dict[str, set[int]] = field(default_factory=dict)
    windows: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    """(event, window edge in ms) of windowed counts, sums and last_seen -> segments."""


def build_index(segments: Sequence[Segment], mark: tuple[Any, ...] = ()) -> SegmentIndex:
    """The index of the active dynamic segments."""
    index = SegmentIndex(fingerprint=mark)
    active = [s for s in segments if s.dynamic and s.status == "active"]
    levels: dict[str, int] = {}
    for segment in dependency_order(active):
        assert segment.definition is not None
        condition = parse_condition(segment.definition, f"segments.{segment.key}")
        level = 1 + max((levels.get(dep, 0) for dep in segment.depends_on), default=-1)
        levels[segment.key] = level
        needs = condition.needs()
        sid = segment.id
        index.entries[sid] = _Entry(segment, condition, needs, level)
        for dep in segment.depends_on:
            index.dependents.setdefault(dep, set()).add(sid)
        _index_needs(index, sid, condition, needs)
    return index


def _index_needs(index: SegmentIndex, sid: int, condition: Condition, needs: Needs) -> None:
    def on_event(event: str) -> None:
        if event == ANY_EVENT:
            index.any_event.add(sid)
        else:
            index.by_event.setdefault(event, set()).add(sid)

    def window(event: str, ms: int) -> None:
        if ms and event != ANY_EVENT:
            index.windows.setdefault((event, ms), set()).add(sid)

    for event, within in needs.counts:
        on_event(event)
        window(event, within)
    for aggregate in needs.aggregates:
        on_event(aggregate.event)
        window(aggregate.event, aggregate.since_ms)
        window(aggregate.event, aggregate.until_ms)
    for event in needs.last_seen:
        on_event(event)
    for leaf in leaves(condition):
        if isinstance(leaf, LastSeenCondition):
            window(leaf.event, leaf.window_ms)
    if needs.companies:
        index.on_group.add(sid)
    if needs.attributes:
        names = {leaf.path for leaf in leaves(condition)
                 if isinstance(leaf, AttributeCondition)}
        for trait in names:
            index.by_trait.setdefault(trait, set()).add(sid)
        if not names:
            index.any_trait.add(sid)
    if (needs.attributes or needs.tags or needs.consents or needs.companies or needs.scores
            or needs.stage):
        index.on_change.add(sid)


Todo = dict[int, dict[int, str]]
"""segment id -> {contact id: cause}."""


class SegmentListener:
    """Keeps dynamic segments current in the engine's passes."""

    name = "segments"

    def __init__(self, window_scan_ms: int = 60_000) -> None:
        self.window_scan_ms = window_scan_ms
        self.index = SegmentIndex()
        self.evaluations = 0
        """(segment, contact) evaluations so far (tests and benchmarks read it)."""
        self._next_scan = 0
        self._newest: int | None = None
        """Contacts above this id are new to this listener: evaluated against every segment
        (a new contact may match `{not: {tag: churned}}` whatever event created it)."""
        self._pending: tuple[int, int] | None = None
        """(newest contact id, last event id) of the last pass, applied once a later pass
        sees the cursors past that event (its transaction committed)."""

    def refresh(self, conn: Connection) -> SegmentIndex:
        """Rebuild the index if a definition changed since the last pass."""
        mark = fingerprint(conn)
        if mark != self.index.fingerprint:
            self.index = build_index(all_segments(conn, "active"), mark)
        return self.index

    def apply(self, conn: Connection, parts: Sequence[int], now: int, limit: int) -> int:
        """Read up to `limit` events and queued changes of `parts`; update memberships."""
        if not parts:
            return 0
        index = self.refresh(conn)
        positions = _positions(conn, parts, now)
        low = min(positions.values())
        if not index.entries:
            # Nothing to evaluate: every contact so far is as evaluated as it can be (a
            # segment created later is computed in full when it is saved).
            self._newest = int(conn.exec_driver_sql(
                "SELECT coalesce(max(id), 0) FROM contacts").scalar_one())
            self._pending = None
            top = store_cursors.log_end(conn)
            if top > low:
                store_cursors.move_cursors(conn, READER, parts, top, now)
            return len(take_changed(conn, READER, parts, limit))
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        rows = fetch(conn, f"SELECT id, contact_id, type, name, properties FROM events "
                     f"WHERE id > {mark} ORDER BY id LIMIT {int(limit)}", (low,))
        newest = self._newest_known(conn, low)
        todo: Todo = defaultdict(dict)
        held = set(parts)
        fresh: set[int] = set()
        for eid, cid, etype, name, props in rows:
            part = cid % schema.PARTITIONS
            if part not in held or eid <= positions[part]:
                continue
            if cid > newest:
                fresh.add(cid)
            for sid in index.by_event.get(name, ()):
                todo[sid][cid] = "event"
            for sid in index.any_event:
                todo[sid][cid] = "event"
            if etype == "identify":
                for trait in loads(props) or {}:
                    for sid in index.by_trait.get(trait, ()):
                        todo[sid][cid] = "event"
                for sid in index.any_trait:
                    todo[sid][cid] = "event"
            elif etype == "group":
                for sid in index.on_group:
                    todo[sid][cid] = "event"
        for cid in fresh:
            for sid in index.entries:
                todo[sid].setdefault(cid, "event")
        if rows:
            self._pending = (max(fresh, default=newest), int(rows[-1][0]))
        changed = take_changed(conn, READER, parts, limit)
        for cid in changed:
            for sid in index.on_change:
                todo[sid].setdefault(cid, "change")
        if index.windows and now >= self._next_scan:
            self._scan_windows(conn, index, parts, now, todo)
        if todo:
            self.evaluate(conn, index, todo, now)
        if rows:
            _move(conn, parts, rows[-1][0], now)
        return max(len(rows), len(changed))

    def _newest_known(self, conn: Connection, low: int) -> int:
        """The highest contact id already evaluated against every segment (the newest
        contact when this listener started; advanced by passes that committed)."""
        if self._newest is None:
            self._newest = int(conn.exec_driver_sql(
                "SELECT coalesce(max(id), 0) FROM contacts").scalar_one())
            self._pending = None
        elif self._pending is not None and low >= self._pending[1]:
            self._newest = max(self._newest, self._pending[0])
            self._pending = None
        return self._newest

    def _scan_windows(self, conn: Connection, index: SegmentIndex, parts: Sequence[int],
                      now: int, todo: Todo) -> None:
        """Queue the contacts whose counted events left a window since the last scan."""
        self._next_scan = now + self.window_scan_ms
        names = [f"{WINDOW_MARK}:{p}" for p in parts]
        have = dict(select_in(conn, "SELECT name, position FROM engine_cursors WHERE name IN "
                              "({marks})", names))
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        missing = [n for n in names if n not in have]
        if missing:
            conn.exec_driver_sql(f"INSERT INTO engine_cursors (name, position, updated_at) "
                                 f"VALUES ({mark}, {mark}, {mark}) ON CONFLICT (name) "
                                 f"DO NOTHING", [(n, now, now) for n in missing])
        if not have:
            return  # first scan: windows are measured from now on
        last = min(int(v) for v in have.values())
        held = set(parts)
        for (event, window), sids in index.windows.items():
            for (cid,) in fetch(conn, f"SELECT DISTINCT contact_id FROM events WHERE name = "
                                f"{mark} AND timestamp >= {mark} AND timestamp < {mark}",
                                (event, last - window, now - window)):
                if cid % schema.PARTITIONS in held:
                    for sid in sids:
                        todo[sid].setdefault(int(cid), "window")
        conn.exec_driver_sql(f"UPDATE engine_cursors SET position = {mark}, updated_at = "
                             f"{mark} WHERE name = {mark}", [(now, now, n) for n in names])

    def evaluate(self, conn: Connection, index: SegmentIndex, todo: Todo, now: int) -> None:
        """Re-evaluate the (segment, contacts) in `todo`, level by level, and write what
        changed; membership changes queue the segments that reference them."""
        pending: Todo = {sid: found for sid, found in todo.items() if sid in index.entries}
        while pending:
            level = min(index.entries[sid].level for sid in pending)
            batch = {sid: pending.pop(sid) for sid in list(pending)
                     if index.entries[sid].level == level}
            contacts = sorted({cid for found in batch.values() for cid in found})
            live: set[int] = set()
            member: set[tuple[int, int]] = set()
            for cid, sid in select_in(
                    conn, "SELECT c.id, m.segment_id FROM contacts c LEFT JOIN segment_members "
                    "m ON m.contact_id = c.id WHERE c.merged_into IS NULL AND c.id IN "
                    "({marks})", contacts):
                live.add(int(cid))
                if sid is not None:
                    member.add((int(sid), int(cid)))
            needs = Needs()
            for sid in batch:
                needs = needs | index.entries[sid].needs
            facts = load_facts(conn, sorted(live), needs, now)
            by_cause: dict[str, list[Change]] = defaultdict(list)
            for sid, found in batch.items():
                entry = index.entries[sid]
                key = entry.segment.key
                for cid, cause in found.items():
                    if cid not in live:
                        continue
                    self.evaluations += 1
                    holds = entry.condition.evaluate(facts[cid])
                    if holds != ((sid, cid) in member):
                        by_cause[cause].append(Change(sid, key, cid, holds))
                        for dep in index.dependents.get(key, ()):
                            pending.setdefault(dep, {}).setdefault(cid, cause)
            for cause, changes in by_cause.items():
                write_changes(conn, changes, cause, "rule", now)


def follow_dependents(conn: Connection, changes: Sequence[Change], cause: str,
                      now: int) -> None:
    """Re-evaluate the segments that reference the segments in `changes` (a static list
    edited, say) for the contacts that moved, in dependency order, in this transaction."""
    index = build_index(all_segments(conn, "active"))
    todo: Todo = defaultdict(dict)
    for change in changes:
        for dep in index.dependents.get(change.segment_key, ()):
            todo[dep][change.contact_id] = cause
    if todo:
        SegmentListener().evaluate(conn, index, todo, now)


def _positions(conn: Connection, parts: Sequence[int], now: int) -> dict[int, int]:
    """The listener's cursor per partition. A worker holding every partition (one worker,
    the common case) reads them with one range scan of the key instead of a list of names."""
    if len(parts) < schema.PARTITIONS:
        return store_cursors.cursor_positions(conn, READER, parts, now)
    rows = fetch(conn, f"SELECT name, position FROM engine_cursors WHERE name > '{READER}:' "
                 f"AND name < '{READER};'")
    if len(rows) < schema.PARTITIONS:
        return store_cursors.cursor_positions(conn, READER, parts, now)
    return {int(name[len(READER) + 1:]): int(pos) for name, pos in rows}


def _move(conn: Connection, parts: Sequence[int], position: int, now: int) -> None:
    if len(parts) < schema.PARTITIONS:
        store_cursors.move_cursors(conn, READER, parts, position, now)
        return
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    conn.exec_driver_sql(f"UPDATE engine_cursors SET position = {mark}, updated_at = {mark} "
                         f"WHERE name > '{READER}:' AND name < '{READER};'", (position, now))


def segment_listeners(settings: Any) -> tuple[list[Any], list[Any]]:
    """The segments domain's engine listener and its scheduled recompute."""
    scan_s = int(getattr(settings, "segment_window_scan_s", 60))
    every_s = int(getattr(settings, "segment_recompute_interval_s", 3600))
    return [SegmentListener(scan_s * 1000)], [RecomputeJob(every_s * 1000)]
