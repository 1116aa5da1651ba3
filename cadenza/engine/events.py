"""Events meet journeys: entries, the end of waits, and goals — matched in memory.

The engine reads events in id order after a cursor per partition (PostgreSQL ingestion
commits event ids in order under one lock, SQLite has one writer), so an event is applied
exactly once: the cursor moves in the same transaction as the effects. Only events whose
name the catalog's index knows cost more than a dictionary lookup.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.engine.batch import RUN_COLUMNS, Batch, partition, run_from_row
from cadenza.engine.catalog import SEGMENT_EVENTS, Target
from cadenza.engine.nodes import event_key
from cadenza.engine.runs import Run
from cadenza.journeys.spec import EXIT, WaitForStep
from cadenza.segments import SEGMENT_SOURCE, Condition, Facts, Needs
from cadenza.store import cursors as store_cursors
from cadenza.store import fetch, loads, select_in

Event = dict[str, Any]
READER = "events"
"""The engine's cursors in `engine_cursors` are `events:<part>`."""


def ensure_cursors(conn: Connection, parts: Iterable[int], now: int) -> None:
    """Create missing cursors at the end of the event log: journeys act on what happens from
    the moment the engine first runs, not on history."""
    store_cursors.ensure_cursors(conn, READER, parts, now)


def apply_events(batch: Batch, parts: Sequence[int], limit: int) -> int:
    """Apply up to `limit` events after the cursors of `parts`; return how many were read."""
    if not parts:
        return 0
    conn = batch.conn
    positions = store_cursors.cursor_positions(conn, READER, parts, batch.now)
    low = min(positions.values())
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    catalog = batch.catalog
    if not (catalog.entry_events or catalog.entry_attributes or catalog.waited_events
            or catalog.goals or catalog.entry_segments):
        # No journey listens to events: move the cursors to the end of the log unread.
        top = store_cursors.log_end(conn)
        if top > low:
            store_cursors.move_cursors(conn, READER, parts, top, batch.now)
        return 0
    rows = fetch(conn, f"SELECT id, contact_id, type, name, properties, source FROM events "
                 f"WHERE id > {mark} ORDER BY id LIMIT {int(limit)}", (low,))
    if not rows:
        return 0
    held = set(parts)
    events: list[Event] = []
    for eid, cid, etype, name, props, source in rows:
        part = partition(cid)
        if part not in held or eid <= positions[part]:
            continue
        if not catalog.interesting(name, etype == "identify"):
            continue
        events.append({"id": eid, "contact_id": cid, "type": etype, "name": name,
                       "properties": loads(props) or {}, "source": source})
    if events:
        _enter(batch, events)
        _wake_and_convert(batch, events)
    store_cursors.move_cursors(conn, READER, parts, rows[-1][0], batch.now)
    return len(rows)


def _holds(cond: Condition | None, facts: Facts) -> bool:
    return cond is None or cond.evaluate(facts)


def _facts_for(batch: Batch, conds: Sequence[Condition | None], contact_ids: Sequence[int]
               ) -> dict[int, Facts]:
    needs = Needs()
    for cond in conds:
        if cond is not None:
            needs = needs | cond.needs()
    if needs == Needs():
        return {}
    from cadenza.segments import load_facts

    return load_facts(batch.conn, sorted(set(contact_ids)), needs, batch.now)


def _with_event(base: Facts | None, contact_id: int, entry: dict[str, Any],
                event: dict[str, Any]) -> Facts:
    if base is None:
        return Facts(contact_id, entry=entry, event=event)
    return dataclasses.replace(base, entry=entry, event=event)


def _enter(batch: Batch, events: list[Event]) -> None:
    catalog = batch.catalog
    candidates: dict[Target, list[tuple[Event, Condition | None]]] = defaultdict(list)
    for event in events:
        for target, trigger in catalog.entry_events.get(event["name"], ()):
            candidates[target].append((event, trigger.where))
        on = SEGMENT_EVENTS.get(event["name"])
        if on is not None and event["source"] == SEGMENT_SOURCE:
            # The segments domain's entry/exit events fill the engine's segment hook.
            segment = event["properties"].get("segment")
            for target, strigger in catalog.entry_segments.get(segment, ()):
                if strigger.on == on:
                    candidates[target].append((event, None))
        if event["type"] == "identify":
            traits = event["properties"]
            for target, atrigger in catalog.entry_attributes:
                if atrigger.attr in traits and (atrigger.values is None
                                                or traits[atrigger.attr] in atrigger.values):
                    candidates[target].append((event, atrigger.where))
    for target, pairs in candidates.items():
        facts = _facts_for(batch, [w for _, w in pairs], [e["contact_id"] for e, _ in pairs])
        admitted = []
        for event, where in pairs:
            cid = event["contact_id"]
            props = event["properties"]
            if where is not None and not where.evaluate(
                    _with_event(facts.get(cid), cid, props, props)):
                continue
            admitted.append((cid, {"entry": props, "event": event["name"],
                                   "event_id": event["id"]}, f"event:{event['id']}",
                             event["id"]))
        batch.advance(batch.admit(target, admitted, "entry"))


def _wake_and_convert(batch: Batch, events: list[Event]) -> None:
    catalog = batch.catalog
    relevant = [e for e in events
                if e["name"] in catalog.waited_events or e["name"] in catalog.goals]
    if not relevant:
        return
    contact_ids = sorted({e["contact_id"] for e in relevant})
    in_pass = {r.id: r for r in batch.runs}
    loaded: list[Run] = []
    for row in select_in(batch.conn, f"SELECT {RUN_COLUMNS} FROM enrollments WHERE "
                         "status IN ('ready', 'waiting') AND contact_id IN ({marks})",
                         contact_ids):
        if row[0] not in in_pass and row[2] in catalog.specs \
                and row[1] not in catalog.paused:
            loaded.append(run_from_row(row, "event"))
    batch.load(loaded)
    by_contact: dict[int, list[Run]] = defaultdict(list)
    for run in batch.runs:
        if run.active:
            by_contact[run.contact_id].append(run)
    # The contact facts any of these waits' and goals' conditions need: one load per kind of
    # need for the whole set, not a query per enrollment.
    names = {e["name"] for e in relevant}
    conditions: list[Condition | None] = []
    for runs in by_contact.values():
        for run in runs:
            spec = catalog.spec(run.version_id)
            step = spec.steps.get(run.node)
            if isinstance(step, WaitForStep) and step.event in names:
                conditions.append(step.where)
            conditions.extend(g.where for g in spec.goals if g.event in names)
    facts = _facts_for(batch, conditions, contact_ids)
    for event in relevant:
        runs = by_contact.get(event["contact_id"], [])
        # Goals first: the event that ends a wait may also be a conversion (the purchase an
        # abandoned-cart journey waits for), and a goal that exits ends the wait with it.
        for run in runs:
            if run.active and run.after_event < event["id"]:
                _check_goals(batch, run, event, facts)
        woken = [r for r in runs if _awaits(batch, r, event, facts)]
        if woken:
            for run in woken:
                run.resume = "event"
                run.resume_event = event
                run.cause = "event"
            batch.advance(woken)


def _awaits(batch: Batch, run: Run, event: Event, facts: dict[int, Facts]) -> bool:
    if run.status != "waiting" or run.wait_event != event["name"]:
        return False
    if run.after_event >= event["id"]:
        return False
    step = batch.catalog.spec(run.version_id).steps.get(run.node)
    if not isinstance(step, WaitForStep):
        return False
    if step.match and event_key(step, event["properties"]) != run.wait_key:
        return False
    if step.where is not None:
        entry = run.context.get("entry", {})
        return _holds(step.where, _with_event(facts.get(run.contact_id), run.contact_id,
                                              entry, event["properties"]))
    return True


def _check_goals(batch: Batch, run: Run, event: Event, facts: dict[int, Facts]) -> None:
    spec = batch.catalog.spec(run.version_id)
    effects = batch.effects
    for goal in spec.goals:
        if goal.event != event["name"]:
            continue
        seen = _with_event(facts.get(run.contact_id), run.contact_id,
                           run.context.get("entry", {}), event["properties"])
        if not _holds(goal.where, seen):
            continue
        if goal.conversion:
            effects.conversions.append((run, goal.name, event["id"]))
        if goal.exit:
            node = run.node
            effects.departed[(run.version_id, run.shadow, node)] += 1
            effects.edges[(run.version_id, run.shadow, node, EXIT)] += 1
            run.path.append([node, "goal", {"goal": goal.name, "event_id": event["id"]}])
            run.seq += 1
            run.cause = "goal"
            effects.finish(run, "exited", f"goal:{goal.name}")
            return
        run.path.append([run.node, "goal", {"goal": goal.name, "event_id": event["id"]}])
        run.seq += 1
