"""What conditions look at, and loading it for a whole batch of contacts at once.

The engine collects the `Needs` of every condition a batch will meet, calls `load_facts` once
(one statement per kind of need, chunked over the contact ids, never one per contact) and then
evaluates each contact's conditions in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.store import loads, select_in

BUILTIN_ATTRIBUTES = ("email", "phone", "user_id", "timezone", "locale")
"""Attribute names that are contact columns rather than keys of the attributes JSON."""

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

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.attributes or other.attributes, self.tags or other.tags,
                     self.counts | other.counts, self.consents | other.consents)

    def __bool__(self) -> bool:
        return self.attributes or self.tags or bool(self.counts) or bool(self.consents)


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
    return {cid: Facts(cid, attributes=attributes[cid], counts=counts[cid],
                       consents=consents[cid], tags=frozenset(tags[cid])) for cid in ids}


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
