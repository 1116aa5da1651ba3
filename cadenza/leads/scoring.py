"""Rule-based lead scoring in real time: the "scores" listener and the refresh job.

The listener rides on the engine's passes (`cadenza.engine.listeners`). For the partitions
the worker leases it reads the events after its cursors `scores:<part>` and the contacts
queued for "scores" (attribute, tag and consent changes made outside the event log), then:

1. appends a `score_ledger` row per (model, rule, contact, event) an event scores; the row's
   unique key makes a repeated pass add nothing;
2. re-scores exactly the touched contacts with the same statements as `score_all`
   (`cadenza.leads.score_queries`), decayed to now, so the two paths cannot disagree;
3. emits threshold and grade events, and queues the contacts whose score or grade changed
   for segments and lifecycle (`mark_changed`);
4. moves its cursors, all in the engine's pass transaction.

The refresh job re-scores every active model every `score_refresh_interval_s`: decay moves
scores while nothing happens, and `count`/`last_seen` conditions age.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.leads.score_queries import SCORE_EVENTS
from cadenza.leads.score_service import (
    ScoreService,
    ledger_rows,
    load_models,
    score_models,
    write_ledger,
)
from cadenza.store import Store, fetch, loads, schema
from cadenza.store import cursors as store_cursors
from cadenza.store.changes import take_changed

READER = "scores"
"""The listener's cursors are `scores:<part>`; its change-queue consumer is "scores"."""


@dataclass
class ScoreListener:
    """Re-scores the contacts that events or queued changes touched."""

    name: str = READER

    def apply(self, conn: Connection, parts: Sequence[int], now: int, limit: int) -> int:
        """Read up to `limit` events and `limit` queued contacts of `parts`; re-score."""
        if not parts:
            return 0
        models = load_models(conn)
        positions = store_cursors.cursor_positions(conn, READER, parts, now)
        changed = take_changed(conn, READER, parts, limit)
        if not models:
            top = store_cursors.log_end(conn)
            if top > min(positions.values()):
                store_cursors.move_cursors(conn, READER, parts, top, now)
            return len(changed)
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        rows = fetch(conn, f"SELECT id, contact_id, name, properties, timestamp FROM events "
                     f"WHERE id > {mark} ORDER BY id LIMIT {int(limit)}",
                     (min(positions.values()),))
        held = set(parts)
        scored_names = {r.event for s in models for r in getattr(s.model, "event_rules", ())}
        events = []
        touched = set(changed)
        for eid, cid, name, props, at in rows:
            if cid % schema.PARTITIONS not in held or eid <= positions[cid % schema.PARTITIONS]:
                continue
            if name in SCORE_EVENTS and name not in scored_names:
                continue  # our own threshold/grade events change no score
            touched.add(cid)
            if name in scored_names:
                events.append((eid, cid, name, loads(props) or {}, at))
        write_ledger(conn, ledger_rows(models, events))
        if touched:
            score_models(conn, models, now, touched)
        if rows:
            store_cursors.move_cursors(conn, READER, parts, rows[-1][0], now)
        return len(rows) + len(changed)


@dataclass
class ScoreRefreshJob:
    """Re-scores every active rules and matrix model (decay, aging windows)."""

    interval_ms: int
    name: str = "scores-refresh"

    def run(self, store: Store, now: int) -> Any:
        """One round: every active model, in one transaction per call."""
        return ScoreService(store, _Fixed(now)).score_all()


@dataclass
class _Fixed:
    now: int

    def now_ms(self) -> int:
        return self.now


def scoring_listeners(settings: Any) -> tuple[list[Any], list[Any]]:
    """Score listeners (event points in real time) and jobs (decay)."""
    interval = int(getattr(settings, "score_refresh_interval_s", 3600)) * 1000
    jobs: list[Any] = [ScoreRefreshJob(interval)] if interval > 0 else []
    return [ScoreListener()], jobs
