"""First touch and its SLA: touching and closing assignments, the SLA job, the rep queues.

An assignment whose rule has an `sla` is due for a first touch by `sla_due_at`. The SLA job
(`RoutingSlaJob`, every `routing_sla_check_s`) takes the open assignments past due, a batch at
a time, and for each: writes an escalation task (outbox, key `escalate:<id>`, to the rule's
escalation queue, else its manager's queue, else the fallback queue) and a "Lead SLA Lapsed"
event; then reassigns the lead to the next eligible rep of the same rule (the old assignment
becomes `reassigned`, the new one links it as `previous_id`), or, when no other rep can take
it, leaves it with the rep as `escalated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.leads.routing_assign import (
    NewAssignment,
    Picker,
    RoutingOptions,
    load_contexts,
    lock_routing,
    profile,
    write_assignments,
    write_events,
    write_tasks,
)
from cadenza.leads.routing_rules import load_rules
from cadenza.segments import Needs
from cadenza.store import Page, Store, check_limit, decode_cursor, encode_cursor, schema

SLA_EVENT = "Lead SLA Lapsed"
TOUCHED_EVENT = "Lead Touched"
STATUSES = ("open", "touched", "escalated", "reassigned", "unassigned", "closed")
SLA_STATES = ("on_time", "due_soon", "lapsed", "met", "none")
_a = schema.lead_assignments
_r = schema.sales_reps


def sla_state(status: str, due: int | None, touched: int | None, now: int,
              due_soon_ms: int) -> str:
    """on_time, due_soon or lapsed for a lead awaiting first touch; met when touched by the
    due time (or with no SLA); none when there is no SLA to keep."""
    if touched is not None:
        return "met" if due is None or touched <= due else "lapsed"
    if due is None or status not in ("open", "escalated"):
        return "lapsed" if status in ("escalated", "reassigned") and due is not None \
            else "none"
    if due <= now:
        return "lapsed"
    return "due_soon" if due - now <= due_soon_ms else "on_time"


_COLUMNS = (_a.c.id, _a.c.contact_id, _a.c.rule, _a.c.status, _a.c.reason, _a.c.assigned_at,
            _a.c.sla_due_at, _a.c.touched_at, _a.c.closed_at, _a.c.previous_id,
            _r.c.key.label("rep"))


def _row(row: Any, now: int, due_soon_ms: int) -> dict[str, Any]:
    out = dict(row._mapping)
    out["sla_state"] = sla_state(out["status"], out["sla_due_at"], out["touched_at"], now,
                                 due_soon_ms)
    return out


def get_assignment(conn: Connection, assignment_id: int, now: int,
                   due_soon_ms: int) -> dict[str, Any]:
    """One assignment with its rep key and SLA state."""
    row = conn.execute(sa.select(*_COLUMNS).select_from(_a.outerjoin(_r, _r.c.id == _a.c.rep_id))
                       .where(_a.c.id == assignment_id)).first()
    if row is None:
        raise NotFound("assignment", assignment_id)
    return _row(row, now, due_soon_ms)


def find_assignments(conn: Connection, now: int, due_soon_ms: int, *, rep: str | None = None,
                     status: str | None = None, contact_id: int | None = None,
                     sla: str | None = None, cursor: str | None = None,
                     limit: int = 50) -> Page:
    """Assignments newest first, by rep (its queue), status, contact or SLA state."""
    check_limit(limit)
    if status is not None and status not in STATUSES:
        raise ValidationFailed("status", f"must be one of {', '.join(STATUSES)}")
    if sla is not None and sla not in SLA_STATES:
        raise ValidationFailed("sla", f"must be one of {', '.join(SLA_STATES)}")
    query = sa.select(*_COLUMNS).select_from(_a.outerjoin(_r, _r.c.id == _a.c.rep_id)) \
        .order_by(_a.c.id.desc())
    if rep is not None:
        if conn.execute(sa.select(_r.c.id).where(_r.c.key == rep)).first() is None:
            raise NotFound("sales rep", rep)
        query = query.where(_r.c.key == rep)
    if status is not None:
        query = query.where(_a.c.status == status)
    if contact_id is not None:
        query = query.where(_a.c.contact_id == contact_id)
    if sla in ("on_time", "due_soon", "lapsed"):
        query = query.where(_a.c.sla_due_at.is_not(None))
        if sla != "lapsed":
            query = query.where(_a.c.status.in_(("open", "escalated")),
                                _a.c.touched_at.is_(None))
        soon = now + due_soon_ms
        if sla == "on_time":
            query = query.where(_a.c.sla_due_at > soon)
        elif sla == "due_soon":
            query = query.where(_a.c.sla_due_at > now, _a.c.sla_due_at <= soon)
    if cursor:
        (before,) = decode_cursor(cursor, 1)
        query = query.where(_a.c.id < before)
    if sla in (None, "on_time", "due_soon"):  # the SQL filter is exact
        query = query.limit(limit + 1)
    items: list[dict[str, Any]] = []
    last = None
    # Other SLA states are computed: read on until the page is full.
    for row in conn.execute(query.execution_options(yield_per=500)):
        last = row.id
        item = _row(row, now, due_soon_ms)
        if sla is None or item["sla_state"] == sla:
            items.append(item)
        if len(items) > limit:
            break
    more = len(items) > limit
    items = items[:limit]
    return Page(items, encode_cursor(items[-1]["id"]) if more and last is not None else None)


def touch(conn: Connection, assignment_id: int, now: int, note: str | None = None) -> bool:
    """Record the first touch of an assignment (open or escalated); False when it was
    touched already (a repeat changes nothing)."""
    row = conn.execute(sa.select(_a.c.status, _a.c.contact_id, _a.c.rule).where(
        _a.c.id == assignment_id)).first()
    if row is None:
        raise NotFound("assignment", assignment_id)
    if row.status == "touched":
        return False
    if row.status not in ("open", "escalated"):
        raise Conflict(f"assignment {assignment_id} is {row.status}; only an open or "
                       "escalated assignment can be touched")
    conn.execute(sa.update(_a).where(_a.c.id == assignment_id).values(
        status="touched", touched_at=now))
    props: dict[str, Any] = {"assignment_id": assignment_id, "rule": row.rule}
    if note:
        props["note"] = note[:1000]
    write_events(conn, [(f"touch:{assignment_id}", int(row.contact_id), TOUCHED_EVENT, props)],
                 now)
    return True


def close(conn: Connection, assignment_id: int, now: int) -> bool:
    """Close an active assignment (the lead was worked, or is given up); False when it was
    closed already."""
    row = conn.execute(sa.select(_a.c.status).where(_a.c.id == assignment_id)).first()
    if row is None:
        raise NotFound("assignment", assignment_id)
    if row.status == "closed":
        return False
    if row.status == "reassigned":
        raise Conflict(f"assignment {assignment_id} was reassigned; close its successor")
    conn.execute(sa.update(_a).where(_a.c.id == assignment_id).values(
        status="closed", closed_at=now, touched_at=sa.func.coalesce(_a.c.touched_at, now)))
    return True


@dataclass
class SlaReport:
    """What one SLA round did."""

    lapsed: list[int] = field(default_factory=list)
    reassigned: dict[int, int] = field(default_factory=dict)
    """Lapsed assignment -> its new assignment."""
    escalated: list[int] = field(default_factory=list)
    """Lapsed assignments no other rep could take (they stay with their rep)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"lapsed": self.lapsed, "escalated": self.escalated,
                "reassigned": [{"from": a, "to": b} for a, b in sorted(self.reassigned.items())]}


def check_slas(conn: Connection, now: int, options: RoutingOptions,
               limit: int = 500) -> SlaReport:
    """Escalate and reassign up to `limit` open assignments past their SLA (set-wise)."""
    report = SlaReport()
    lock_routing(conn)
    lapsed = conn.execute(sa.select(_a.c.id, _a.c.contact_id, _a.c.rep_id, _a.c.rule,
                                    _a.c.sla_due_at).where(
        _a.c.status == "open", _a.c.sla_due_at <= now).order_by(_a.c.sla_due_at, _a.c.id)
        .limit(limit)).all()
    if not lapsed:
        return report
    rules = load_rules(conn, lock=True)
    by_key = {r.key: r for r in rules}
    needs = Needs()
    for each in rules:
        needs = needs | each.needs()
    contexts = load_contexts(conn, sorted({int(r.contact_id) for r in lapsed}), needs, now)
    picker = Picker(conn, now, rules)
    reps = {r.id: r for r in picker.reps}
    tasks = []
    events = []
    fresh: list[NewAssignment] = []
    for row in lapsed:
        aid, cid, rep_id = int(row.id), int(row.contact_id), int(row.rep_id)
        rule = by_key.get(row.rule) if row.rule else None
        ctx = contexts[cid]
        rep = reps.get(rep_id)
        rep_name = rep.name if rep else f"rep {rep_id}"
        report.lapsed.append(aid)
        queue = (rule.escalation_queue if rule and rule.escalation_queue else
                 rule.escalation_manager if rule and rule.escalation_manager else
                 options.fallback_queue)
        who = profile(ctx)
        title = (f"SLA lapsed: {who.get('name') or who.get('email') or f'contact {cid}'} "
                 f"was not touched by {rep_name} in time")
        new_rep = None
        why: dict[str, Any] = {}
        if rule is not None:
            picker.load[rep_id] = max(0, picker.load.get(rep_id, 0) - 1)
            new_rep, why = picker.pick(rule, ctx.facts.attributes, ctx.company,
                                       exclude=frozenset({rep_id}))
            if new_rep is None:
                picker.load[rep_id] = picker.load.get(rep_id, 0) + 1
        details = {"assignment_id": aid, "rep": rep.key if rep else None, "rule": row.rule,
                   "sla_due_at": int(row.sla_due_at), "lead": who,
                   "reassigned_to": new_rep.key if new_rep else None}
        tasks.append((f"escalate:{aid}", cid, queue, title, details))
        events.append((f"sla:{aid}", cid, SLA_EVENT, {
            "assignment_id": aid, "rep": rep.key if rep else None, "rule": row.rule,
            "reassigned_to": new_rep.key if new_rep else None}))
        if new_rep is not None:
            fresh.append(NewAssignment(cid, rule, new_rep, {**why, "reassigned_from": aid},
                                       who, "sla", previous_id=aid))
        else:
            report.escalated.append(aid)
    moved = [a.previous_id for a in fresh if a.previous_id is not None]
    if moved:
        conn.execute(sa.update(_a).where(_a.c.id.in_(moved)).values(
            status="reassigned", closed_at=now))
    if report.escalated:
        conn.execute(sa.update(_a).where(_a.c.id.in_(report.escalated)).values(
            status="escalated"))
    write_tasks(conn, tasks, now)
    write_events(conn, events, now)
    write_assignments(conn, fresh, now, options)
    picker.save_cursors()
    report.reassigned = {a.previous_id: a.id for a in fresh if a.previous_id is not None}
    return report


class RoutingSlaJob:
    """The periodic SLA check (one worker at a time, `cadenza.engine.listeners.Job`)."""

    name = "routing-sla"

    def __init__(self, interval_ms: int, options: RoutingOptions, batch: int = 500) -> None:
        self.interval_ms = interval_ms
        self.options = options
        self.batch = batch

    def run(self, store: Store, now: int) -> SlaReport:
        """Check batches until no lapsed assignment is left (each batch one transaction)."""
        total = SlaReport()
        while True:
            report = store.retry(lambda conn: check_slas(conn, now, self.options, self.batch))
            total.lapsed += report.lapsed
            total.escalated += report.escalated
            total.reassigned.update(report.reassigned)
            if len(report.lapsed) < self.batch:
                return total


def sla_jobs(settings: Any) -> Sequence[RoutingSlaJob]:
    """The SLA job from settings (none when `routing_sla_check_s` is 0)."""
    seconds = int(getattr(settings, "routing_sla_check_s", 60))
    if seconds <= 0:
        return []
    return [RoutingSlaJob(seconds * 1000, RoutingOptions.from_settings(settings))]
