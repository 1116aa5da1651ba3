"""Full compute of dynamic segments: the set-oriented truth that real time is checked against.

A recompute selects who matches now (`select_matching`, or the Python path without the SQL
compiler), diffs it against the stored members in the database and writes the difference with
history and entry/exit events. What it had to change is drift: entries and exits that real
time missed (a window that closed, a change written behind the engine's back). Each scheduled
recompute stores its drift in `segment_recomputes` and logs it. Segments that reference other
segments are recomputed after them (dependency order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from cadenza.segments.conditions import parse_condition
from cadenza.segments.matching import matching_select
from cadenza.segments.membership import Diff, apply_matching
from cadenza.segments.models import Drift, Segment
from cadenza.segments.queries import all_segments
from cadenza.store import Store, insert_rows, schema

log = logging.getLogger("cadenza.segments")


def dependency_order(segments: Sequence[Segment]) -> list[Segment]:
    """`segments` with every segment after the ones it references (cycles are refused when
    definitions are saved; a stray one is broken by key order rather than looping)."""
    by_key = {s.key: s for s in segments}
    done: set[str] = set()
    visiting: set[str] = set()
    order: list[Segment] = []

    def visit(key: str) -> None:
        if key in done or key in visiting or key not in by_key:
            return
        visiting.add(key)
        for dep in sorted(by_key[key].depends_on):
            visit(dep)
        visiting.discard(key)
        done.add(key)
        order.append(by_key[key])

    for key in sorted(by_key):
        visit(key)
    return order


def compute(conn: Connection, segment: Segment, now: int, cause: str, *,
            first: bool = False) -> Diff:
    """Make a dynamic segment's members exactly who matches now, in this transaction.
    `first` fills a new segment: history is written but no entry events (nobody entered;
    the segment began)."""
    assert segment.definition is not None, "static segments are not computed"
    condition = parse_condition(segment.definition, "condition")
    return apply_matching(conn, segment.id, segment.key,
                          matching_select(condition, conn.dialect.name, now), cause, now,
                          emit=not first)


def recompute(conn: Connection, segment: Segment, now: int) -> Drift:
    """A scheduled or requested recompute: compute and record the drift."""
    started = time.perf_counter()
    diff = compute(conn, segment, now, "recompute")
    took = int((time.perf_counter() - started) * 1000)
    insert_rows(conn, schema.segment_recomputes,
                ("segment_id", "started_at", "duration_ms", "members", "entered", "exited"),
                [(segment.id, now, took, diff.members, diff.entered, diff.exited)])
    if diff.entered or diff.exited:
        log.warning("segment %s drifted: %d entries and %d exits missed by real time "
                    "(%d members)", segment.key, diff.entered, diff.exited, diff.members)
    return Drift(segment.key, now, took, diff.members, diff.entered, diff.exited)


def recompute_all(store: Store, now: int, keys: Sequence[str] | None = None) -> list[Drift]:
    """Recompute every active dynamic segment (or those in `keys`), in dependency order,
    one transaction each."""
    with store.read() as conn:
        segments = [s for s in all_segments(conn, "active") if s.dynamic]
    chosen = dependency_order(segments)
    if keys is not None:
        wanted = set(keys)
        chosen = [s for s in chosen if s.key in wanted]
    return [store.retry(lambda conn, s=segment: recompute(conn, s, now))  # type: ignore[misc]
            for segment in chosen]


@dataclass
class RecomputeJob:
    """The scheduled full recompute (`CADENZA_SEGMENT_RECOMPUTE_INTERVAL_S`)."""

    interval_ms: int
    name: str = "segments-recompute"

    def run(self, store: Store, now: int) -> list[Drift]:
        """Recompute every dynamic segment and report the drift."""
        return recompute_all(store, now)
