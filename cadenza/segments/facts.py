"""What conditions look at, and loading it for a whole batch of contacts at once.

The engine collects the `Needs` of every condition a batch will meet, calls `load_facts` once
(one statement per kind of need, chunked over the contact ids, never one per contact) and then
evaluates each contact's conditions in memory.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from cadenza.store import loads, select_in

if TYPE_CHECKING:
    from cadenza.segments.nodes import Condition

BUILTIN_ATTRIBUTES = ("email", "phone", "user_id", "timezone", "locale")
"""Attribute names that are contact columns rather than keys of the attributes JSON."""

COMPANY_BUILTINS = ("name", "domain")
"""Company attribute names that are columns of `companies` rather than keys of its JSON."""

ANY_EVENT = "*"
"""The event name of `last_seen` conditions that look at every event."""


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (list items by index: `items.0.sku`); None when absent.

    Only ASCII digits index lists, so a part such as '²' or '-1' is always a key.
    """
    current: Any = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif (isinstance(current, list | tuple) and part.isascii() and part.isdigit()
              and int(part) < len(current)):
            current = current[int(part)]
        else:
            return None
    return current


def is_number(value: Any) -> bool:
    """True for ints and floats, never for booleans."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Aggregate:
    """A per-contact total over some of its events: a filtered or bounded count, or a sum."""

    kind: str
    """count or sum."""
    event: str
    since_ms: int
    """The window starts this long before now (timestamp >= now - since); 0 is all time."""
    until_ms: int = 0
    """The window ends this long before now (timestamp < now - until); 0 has no end."""
    of: str | None = None
    """The property path summed (sum only); non-numeric and missing values are skipped."""
    where: Condition | None = None
    """A condition on each event's properties (event_prop tests); None takes every event."""

    def takes(self, timestamp: int, now_ms: int) -> bool:
        """Whether an event at `timestamp` falls in the window."""
        if self.since_ms and timestamp < now_ms - self.since_ms:
            return False
        return not (self.until_ms and timestamp >= now_ms - self.until_ms)

_COUNTS_PER_STATEMENT = 50
"""(event, window) pairs counted by one statement; more are split to bound its parameters."""


@dataclass(frozen=True)
class Needs:
    """What a set of conditions needs loaded to be evaluated."""

    attributes: bool = False
    """Custom attributes merged with the built-in columns (email, phone, ...)."""
    tags: bool = False
    counts: frozenset[tuple[str, int]] = frozenset()
    """(event name, window in ms) pairs whose per-contact counts are needed; 0 is all time."""
    consents: frozenset[tuple[str, str]] = frozenset()
    """(channel, purpose) pairs whose status is needed."""
    companies: bool = False
    """The attributes of every company the contact belongs to."""
    segments: frozenset[str] = frozenset()
    """Keys of the segments whose membership is needed."""
    scores: frozenset[str] = frozenset()
    """Keys of the score models whose score and grade are needed."""
    stage: bool = False
    """The contact's lifecycle stage."""
    last_seen: frozenset[str] = frozenset()
    """Event names (or ANY_EVENT) whose latest timestamp is needed."""
    aggregates: frozenset[Aggregate] = frozenset()
    """Filtered or bounded counts and sums."""

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.attributes or other.attributes, self.tags or other.tags,
                     self.counts | other.counts, self.consents | other.consents,
                     self.companies or other.companies, self.segments | other.segments,
                     self.scores | other.scores, self.stage or other.stage,
                     self.last_seen | other.last_seen, self.aggregates | other.aggregates)

    def __bool__(self) -> bool:
        return (self.attributes or self.tags or bool(self.counts) or bool(self.consents)
                or self.companies or bool(self.segments) or bool(self.scores) or self.stage
                or bool(self.last_seen) or bool(self.aggregates))


@dataclass
class Facts:
    """What a condition may look at for one contact."""

    contact_id: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Custom attributes with the built-in ones (email, phone, user_id, ...) merged in."""
    entry: Mapping[str, Any] = field(default_factory=dict)
    """The entry event's properties or the API payload (`prop` conditions)."""
    event: Mapping[str, Any] = field(default_factory=dict)
    """The event being matched by a trigger, wait_for or goal (`event_prop` conditions)."""
    counts: Mapping[tuple[str, int], int] = field(default_factory=dict)
    """Events per (name, window ms); a pair that was loaded but is absent counts 0."""
    consents: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """Status per (channel, purpose); absent means no decision was ever recorded."""
    tags: frozenset[str] = frozenset()
    companies: tuple[Mapping[str, Any], ...] = ()
    """Attributes of each company the contact belongs to (name and domain merged in)."""
    segments: frozenset[str] = frozenset()
    """Keys of the (needed) segments the contact is a member of."""
    scores: Mapping[str, float] = field(default_factory=dict)
    """Score per score-model key; absent means the contact has no score in that model."""
    grades: Mapping[str, str] = field(default_factory=dict)
    """Grade per score-model key, where the model grades."""
    stage: str | None = None
    """The lifecycle stage; None when the contact has none."""
    last_seen: Mapping[str, int] = field(default_factory=dict)
    """Age in ms of the latest event per name (ANY_EVENT: any event), negative when that
    event is timestamped in the future; absent means never."""
    aggregates: Mapping[Aggregate, float] = field(default_factory=dict)
    """Value per loaded aggregate; a loaded aggregate that is absent is 0."""


def load_facts(conn: Connection, contact_ids: Sequence[int], needs: Needs,
               now_ms: int) -> dict[int, Facts]:
    """Facts for every contact in `contact_ids`: one statement per kind of need."""
    ids = sorted(set(contact_ids))
    attributes: dict[int, dict[str, Any]] = {cid: {} for cid in ids}
    counts: dict[int, dict[tuple[str, int], int]] = {cid: {} for cid in ids}
    consents: dict[int, dict[tuple[str, str], str]] = {cid: {} for cid in ids}
    tags: dict[int, set[str]] = {cid: set() for cid in ids}
    if ids and needs.attributes:
        _load_attributes(conn, ids, attributes)
    if ids and needs.counts:
        pairs = sorted(needs.counts)
        for start in range(0, len(pairs), _COUNTS_PER_STATEMENT):
            _load_counts(conn, ids, pairs[start : start + _COUNTS_PER_STATEMENT], now_ms,
                         counts)
    if ids and needs.consents:
        for cid, channel, purpose, status in select_in(
                conn, "SELECT contact_id, channel, purpose, status FROM consents "
                "WHERE contact_id IN ({marks})", ids):
            if (channel, purpose) in needs.consents:
                consents[cid][(channel, purpose)] = status
    if ids and needs.tags:
        for cid, tag in select_in(
                conn, "SELECT contact_id, tag FROM contact_tags WHERE contact_id IN ({marks})",
                ids):
            tags[cid].add(tag)
    found = {cid: Facts(cid, attributes=attributes[cid], counts=counts[cid],
                        consents=consents[cid], tags=frozenset(tags[cid])) for cid in ids}
    if ids:
        _load_more(conn, ids, needs, now_ms, found)
    return found


def _load_attributes(conn: Connection, ids: Sequence[int],
                     into: dict[int, dict[str, Any]]) -> None:
    columns = ", ".join(BUILTIN_ATTRIBUTES)
    for cid, raw, *builtins in select_in(
            conn, f"SELECT id, attributes, {columns} FROM contacts WHERE id IN ({{marks}})",
            ids):
        merged = dict(loads(raw) or {})
        # The columns are the truth for the built-in names (normalised, checked); a stray
        # JSON key of the same name never shows through.
        for name, value in zip(BUILTIN_ATTRIBUTES, builtins, strict=True):
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        into[cid] = merged


def _load_counts(conn: Connection, ids: Sequence[int], pairs: Sequence[tuple[str, int]],
                 now_ms: int, into: dict[int, dict[tuple[str, int], int]]) -> None:
    """Count every (event, window) pair in one pass over the batch's events.

    One statement for all pairs rather than one per pair: each contact's events are read
    once (through the (contact_id, timestamp) index) and summed per pair.
    """
    sums: list[str] = []
    params: list[Any] = []
    for name, window in pairs:
        if window:
            sums.append("sum(CASE WHEN name = {p} AND timestamp >= {p} THEN 1 ELSE 0 END)")
            params += [name, now_ms - window]
        else:
            sums.append("sum(CASE WHEN name = {p} THEN 1 ELSE 0 END)")
            params.append(name)
    names = sorted({name for name, _ in pairs})
    params += names
    where = ""
    if all(window for _, window in pairs):
        where = "timestamp >= {p} AND "
        params.append(now_ms - max(window for _, window in pairs))
    sql = (f"SELECT contact_id, {', '.join(sums)} FROM events "
           f"WHERE name IN ({', '.join(['{p}'] * len(names))}) AND {where}"
           "contact_id IN ({marks}) GROUP BY contact_id")
    for cid, *found in select_in(conn, sql, ids, before=params):
        for pair, count in zip(pairs, found, strict=True):
            if count:
                into[cid][pair] = int(count)


def _load_more(conn: Connection, ids: Sequence[int], needs: Needs, now_ms: int,
               found: dict[int, Facts]) -> None:
    """The needs of the segments issue's kinds, each in one statement (chunked over ids)."""
    if needs.companies:
        _load_companies(conn, ids, found)
    if needs.segments:
        _load_segments(conn, ids, needs.segments, found)
    if needs.scores:
        _load_scores(conn, ids, needs.scores, found)
    if needs.stage:
        for cid, stage in select_in(
                conn, "SELECT contact_id, stage FROM contact_stages "
                "WHERE contact_id IN ({marks})", ids):
            found[cid].stage = stage
    if needs.last_seen:
        _load_last_seen(conn, ids, needs.last_seen, now_ms, found)
    if needs.aggregates:
        _load_aggregates(conn, ids, needs.aggregates, now_ms, found)


def _load_companies(conn: Connection, ids: Sequence[int], found: dict[int, Facts]) -> None:
    companies: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for cid, company_id, name, domain, raw in select_in(
            conn, "SELECT m.contact_id, c.id, c.name, c.domain, c.attributes "
            "FROM company_members m JOIN companies c ON c.id = m.company_id "
            "WHERE m.contact_id IN ({marks})", ids):
        merged = dict(loads(raw) or {})
        # As for contacts, the columns are the truth for their names.
        for key, value in zip(COMPANY_BUILTINS, (name, domain), strict=True):
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        companies[cid].append((company_id, merged))
    for cid, held in companies.items():
        found[cid].companies = tuple(attrs for _, attrs in sorted(held, key=_first))


def _load_segments(conn: Connection, ids: Sequence[int], keys: frozenset[str],
                   found: dict[int, Facts]) -> None:
    wanted = sorted(keys)
    members: dict[int, set[str]] = defaultdict(set)
    for cid, key in select_in(
            conn, "SELECT m.contact_id, s.key FROM segment_members m "
            "JOIN segments s ON s.id = m.segment_id "
            f"WHERE s.key IN ({_marks(len(wanted))}) AND m.contact_id IN ({{marks}})",
            ids, before=wanted):
        members[cid].add(key)
    for cid, held in members.items():
        found[cid].segments = frozenset(held)


def _load_scores(conn: Connection, ids: Sequence[int], keys: frozenset[str],
                 found: dict[int, Facts]) -> None:
    wanted = sorted(keys)
    scores: dict[int, dict[str, float]] = defaultdict(dict)
    grades: dict[int, dict[str, str]] = defaultdict(dict)
    for cid, key, score, grade in select_in(
            conn, "SELECT s.contact_id, m.key, s.score, s.grade FROM contact_scores s "
            "JOIN score_models m ON m.id = s.model_id "
            f"WHERE m.key IN ({_marks(len(wanted))}) AND s.contact_id IN ({{marks}})",
            ids, before=wanted):
        scores[cid][key] = float(score)
        if grade is not None:
            grades[cid][key] = grade
    for cid, values in scores.items():
        found[cid].scores = values
    for cid, graded in grades.items():
        found[cid].grades = graded


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _marks(count: int) -> str:
    return ", ".join(["{p}"] * count)


def _load_last_seen(conn: Connection, ids: Sequence[int], names: frozenset[str],
                    now_ms: int, found: dict[int, Facts]) -> None:
    latest: dict[int, dict[str, int]] = defaultdict(dict)
    if ANY_EVENT in names:
        for cid, at in select_in(
                conn, "SELECT contact_id, max(timestamp) FROM events "
                "WHERE contact_id IN ({marks}) GROUP BY contact_id", ids):
            latest[cid][ANY_EVENT] = now_ms - int(at)
    named = sorted(names - {ANY_EVENT})
    if named:
        for cid, name, at in select_in(
                conn, "SELECT contact_id, name, max(timestamp) FROM events "
                f"WHERE name IN ({_marks(len(named))}) AND contact_id IN ({{marks}}) "
                "GROUP BY contact_id, name", ids, before=named):
            latest[cid][name] = now_ms - int(at)
    for cid, ages in latest.items():
        found[cid].last_seen = ages


def _load_aggregates(conn: Connection, ids: Sequence[int], aggregates: frozenset[Aggregate],
                     now_ms: int, found: dict[int, Facts]) -> None:
    """One statement per event name: its events in the widest window, totalled in Python
    (each event's properties are tested with the aggregate's `where` here, so journeys and
    segments share one definition of what an event filter means)."""
    by_event: dict[str, list[Aggregate]] = defaultdict(list)
    for aggregate in sorted(aggregates, key=repr):
        by_event[aggregate.event].append(aggregate)
    totals: dict[int, dict[Aggregate, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for event, group in by_event.items():
        params: list[Any] = [event]
        where = ""
        if all(a.since_ms for a in group):
            where = "AND timestamp >= {p} "
            params.append(now_ms - max(a.since_ms for a in group))
        wants_properties = any(a.where is not None or a.of is not None for a in group)
        columns = "contact_id, timestamp" + (", properties" if wants_properties else "")
        for row in select_in(
                conn, f"SELECT {columns} FROM events WHERE name = {{p}} {where}"
                "AND contact_id IN ({marks})", ids, before=params):
            cid, at = row[0], int(row[1])
            properties: Mapping[str, Any] = (loads(row[2]) or {}) if wants_properties else {}
            event_facts = Facts(cid, event=properties)
            for aggregate in group:
                if not aggregate.takes(at, now_ms):
                    continue
                if aggregate.where is not None and not aggregate.where.evaluate(event_facts):
                    continue
                if aggregate.of is None:
                    totals[cid][aggregate].append(1)
                else:
                    value = lookup(properties, aggregate.of)
                    if is_number(value):
                        totals[cid][aggregate].append(value)
    for cid, per in totals.items():
        found[cid].aggregates = {
            aggregate: (len(values) if aggregate.kind == "count" else math.fsum(values))
            for aggregate, values in per.items()
        }
