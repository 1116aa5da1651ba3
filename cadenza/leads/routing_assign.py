"""Routing contacts to sales reps, a batch at a time, in the caller's transaction.

For each contact the first routing rule whose condition holds picks a rep from its pool with
its strategy, skipping reps who are away, inactive or at capacity:

- `round_robin`: the next eligible rep after the rule's cursor (the last rep it picked, in
  rep id order), so over any run of leads the eligible reps' counts differ by one at most.
  A `match` pool (territory = country, ...) splits the rule's reps in groups; there the
  eligible rep with the fewest leads from this rule is picked (ties: the next after the
  cursor), which keeps every group fair.
- `weighted`: smooth weighted round robin (the nginx sequence) over the pool; the cursor is
  the position in that deterministic sequence.
- `specific`: the rule's one rep.

Each assignment writes, in the same transaction: the `lead_assignments` row (at most one
active row per contact, by a unique index: a repeat is a no-op), a hand-off task in the outbox
(channel `task`, key `assign:<assignment id>`), a "Lead Assigned" event, and the CRM hand-off
hook. With no matching rule or no eligible rep the assignment is recorded `unassigned` with the
reason, its task goes to the fallback queue and a "Lead Unassigned" event is written; routing
the contact again retries it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.events import lock_event_log
from cadenza.leads.reps import Rep, load_reps, open_counts
from cadenza.leads.routing_rules import RoutingRule, load_rules
from cadenza.segments import Facts, Needs, load_facts
from cadenza.store import allocate_ids, dumps, insert_rows, loads, schema, select_in

ROUTING_LOCK = 0x52_4F_55_54  # "ROUT": serialises routing writes on PostgreSQL
ACTIVE = ("open", "touched", "escalated", "unassigned")
"""Statuses that hold the contact (see `schema.ACTIVE_ASSIGNMENT_SQL`)."""
ASSIGNED_EVENT = "Lead Assigned"
UNASSIGNED_EVENT = "Lead Unassigned"
_a = schema.lead_assignments


@dataclass(frozen=True)
class RoutingOptions:
    """Workspace-wide routing settings."""

    fallback_queue: str = "sales-unassigned"
    """Task queue for leads no rule or rep could take."""
    due_soon_ms: int = 3_600_000
    """An SLA ending within this is "due soon"."""

    @classmethod
    def from_settings(cls, settings: Any) -> RoutingOptions:
        """From `Settings` (routing_fallback_queue, routing_due_soon_s)."""
        return cls(str(getattr(settings, "routing_fallback_queue", cls.fallback_queue)),
                   int(getattr(settings, "routing_due_soon_s", 3600)) * 1000)


@dataclass
class NewAssignment:
    """An assignment about to be written."""

    contact_id: int
    rule: RoutingRule | None
    rep: Rep | None
    reason: dict[str, Any]
    profile: dict[str, Any]
    cause: str
    previous_id: int | None = None
    id: int = 0
    sla_due_at: int | None = None

    @property
    def status(self) -> str:
        """open, or unassigned when no rep took it."""
        return "open" if self.rep is not None else "unassigned"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.id, "contact_id": self.contact_id, "status": self.status,
                "rep": None if self.rep is None else self.rep.key,
                "rule": None if self.rule is None else self.rule.key,
                "reason": self.reason, "sla_due_at": self.sla_due_at,
                "previous_id": self.previous_id}


@dataclass
class RouteResult:
    """What one routing call did."""

    assigned: list[NewAssignment] = field(default_factory=list)
    unassigned: list[NewAssignment] = field(default_factory=list)
    already: dict[int, int] = field(default_factory=dict)
    """Contacts that already had an active assignment (contact -> assignment id)."""
    missing: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"assigned": [a.to_dict() for a in self.assigned],
                "unassigned": [a.to_dict() for a in self.unassigned],
                "already_assigned": [{"contact_id": c, "assignment_id": a}
                                     for c, a in sorted(self.already.items())],
                "missing": self.missing}


def lock_routing(conn: Connection) -> None:
    """Serialise routing writes (cursors, capacity, one active assignment per contact) on
    PostgreSQL; SQLite has one writer. The event log's lock is taken first, always: an engine
    pass holds it when a stage change routes, so the two locks are always taken in the same
    order and never deadlock."""
    if conn.dialect.name == "postgresql":
        lock_event_log(conn)
        conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({ROUTING_LOCK})"))


@lru_cache(maxsize=256)
def smooth_sequence(weights: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """The smooth weighted round-robin order of (rep id, weight) pairs over one period
    (sum of weights): each rep appears `weight` times, spread as evenly as possible."""
    total = sum(w for _, w in weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total):
        best = 0
        for i, (_, weight) in enumerate(weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= total
        order.append(weights[best][0])
    return tuple(order)


class Picker:
    """Picks reps for one batch: reps, capacity use and cursors loaded once, updated in
    memory as the batch is assigned, cursors written back by `save_cursors`."""

    def __init__(self, conn: Connection, now: int, rules: Sequence[RoutingRule]) -> None:
        self.conn = conn
        self.now = now
        self.rules = {r.key: r for r in rules}
        self.reps = load_reps(conn)
        self.by_key = {r.key: r for r in self.reps}
        self.load = open_counts(conn)
        self.cursors = {r.key: r.cursor for r in rules}
        self.moved: set[str] = set()
        self._rule_counts: dict[str, dict[int, int]] = {}

    def pool(self, rule: RoutingRule, attributes: Mapping[str, Any],
             company: Mapping[str, Any]) -> tuple[list[Rep], dict[str, Any]]:
        """The rule's reps for this contact (by id), and the values matched."""
        if rule.strategy == "specific":
            reps = [self.by_key[rule.rep]] if rule.rep in self.by_key else []
        elif rule.reps is not None:
            reps = sorted((self.by_key[k] for k in rule.reps if k in self.by_key),
                          key=lambda r: r.id)
        else:
            reps = list(self.reps)
        wanted: dict[str, Any] = {}
        for rep_attr, source in rule.match.items():
            value = company.get(source[8:]) if source.startswith("company.") \
                else attributes.get(source)
            wanted[rep_attr] = value
            reps = [r for r in reps if value is not None and r.attributes.get(rep_attr) == value]
        return reps, wanted

    def blocked(self, rep: Rep) -> str | None:
        """Why `rep` cannot take a lead now (None when it can)."""
        why = rep.why_unavailable(self.now)
        if why is not None:
            return why
        held = self.load.get(rep.id, 0)
        if rep.capacity is not None and held >= rep.capacity:
            return f"full ({held}/{rep.capacity})"
        return None

    def pick(self, rule: RoutingRule, attributes: Mapping[str, Any],
             company: Mapping[str, Any], exclude: frozenset[int] = frozenset()
             ) -> tuple[Rep | None, dict[str, Any]]:
        """A rep for one contact (and why), or None with the reason; updates capacity use
        and the rule's cursor in memory."""
        reps, wanted = self.pool(rule, attributes, company)
        why: dict[str, Any] = {"rule": rule.key, "strategy": rule.strategy}
        if wanted:
            why["matched"] = wanted
        skipped = {r.key: self.blocked(r) or "excluded" for r in reps
                   if r.id in exclude or self.blocked(r)}
        eligible = [r for r in reps if r.key not in skipped]
        if not eligible:
            if not reps:
                why["reason"] = ("no rep matches " + ", ".join(
                    f"{k} = {v!r}" for k, v in wanted.items())) if wanted else \
                    "the rule's pool has no reps"
            else:
                why["reason"] = "no eligible rep in the pool: " + "; ".join(
                    f"{k} {v}" for k, v in sorted(skipped.items()))
            return None, why
        if skipped:
            why["skipped"] = skipped
        chosen = self._choose(rule, reps, eligible)
        self.load[chosen.id] = self.load.get(chosen.id, 0) + 1
        self.moved.add(rule.key)
        return chosen, why

    def _choose(self, rule: RoutingRule, pool: list[Rep], eligible: list[Rep]) -> Rep:
        cursor = self.cursors[rule.key]
        if rule.strategy == "weighted":
            order = smooth_sequence(tuple((r.id, r.weight) for r in pool))
            ok = {r.id: r for r in eligible}
            for step in range(len(order)):
                rep_id = order[(cursor + step) % len(order)]
                if rep_id in ok:
                    self.cursors[rule.key] = (cursor + step + 1) % len(order)
                    return ok[rep_id]
        if rule.strategy == "round_robin" and rule.match:
            counts = self._counts(rule)
            chosen = min(eligible, key=lambda r: (counts.get(r.id, 0), r.id <= cursor, r.id))
            counts[chosen.id] = counts.get(chosen.id, 0) + 1
        else:
            after = [r for r in eligible if r.id > cursor]
            chosen = after[0] if after else eligible[0]
        self.cursors[rule.key] = chosen.id
        return chosen

    def _counts(self, rule: RoutingRule) -> dict[int, int]:
        if rule.key not in self._rule_counts:
            self._rule_counts[rule.key] = {int(r): int(n) for r, n in self.conn.execute(
                sa.select(_a.c.rep_id, sa.func.count()).where(
                    _a.c.rule == rule.key, _a.c.rep_id.is_not(None),
                    _a.c.status != "unassigned").group_by(_a.c.rep_id)).all()}
        return self._rule_counts[rule.key]

    def save_cursors(self) -> None:
        """Write the moved rule cursors (same transaction as the assignments)."""
        t = schema.routing_rules
        for key in sorted(self.moved):
            self.conn.execute(sa.update(t).where(t.c.key == key)
                              .values(cursor=self.cursors[key]))


@dataclass(frozen=True)
class Context:
    """What routing reads about one contact."""

    facts: Facts
    company: Mapping[str, Any]
    stage: str | None


def load_contexts(conn: Connection, ids: Sequence[int], needs: Needs,
                  now: int) -> dict[int, Context]:
    """Facts (with attributes), first company and stage of each contact; one statement per
    kind."""
    facts = load_facts(conn, ids, needs | Needs(attributes=True), now)
    companies: dict[int, dict[str, Any]] = {}
    for cid, name, domain, attrs in select_in(
            conn, "SELECT m.contact_id, c.name, c.domain, c.attributes FROM company_members m "
            "JOIN companies c ON c.id = m.company_id WHERE m.contact_id IN ({marks}) "
            "ORDER BY m.contact_id, m.company_id", ids):
        if int(cid) not in companies:
            body = attrs if isinstance(attrs, Mapping) else _loads(attrs)
            companies[int(cid)] = {**(body or {}), "name": name, "domain": domain}
    stages = {int(c): str(s) for c, s in select_in(
        conn, "SELECT contact_id, stage FROM contact_stages WHERE contact_id IN ({marks})",
        ids)}
    return {cid: Context(f, companies.get(cid, {}), stages.get(cid)) for cid, f in facts.items()}


def _loads(value: Any) -> Any:
    return loads(value) if isinstance(value, str | bytes) else value


def profile(ctx: Context) -> dict[str, Any]:
    """The lead's profile summary for the hand-off task."""
    attrs = ctx.facts.attributes
    name = attrs.get("name") or " ".join(
        str(attrs[k]) for k in ("first_name", "last_name") if attrs.get(k)) or None
    out = {"contact_id": ctx.facts.contact_id, "name": name, "email": attrs.get("email"),
           "phone": attrs.get("phone"), "title": attrs.get("title"), "stage": ctx.stage,
           "company": ctx.company.get("name"), "company_domain": ctx.company.get("domain")}
    return {k: v for k, v in out.items() if v is not None}


def route_contacts(conn: Connection, contact_ids: Sequence[int], now: int,
                   options: RoutingOptions, *, cause: str = "api") -> RouteResult:
    """Route `contact_ids` (see the module docstring); a contact with an active assignment
    is left alone, one recorded `unassigned` is tried again."""
    result = RouteResult()
    wanted = sorted({int(c) for c in contact_ids})
    if not wanted:
        return result
    lock_routing(conn)
    live = {int(c) for c, in select_in(
        conn, "SELECT id FROM contacts WHERE merged_into IS NULL AND id IN ({marks})", wanted)}
    result.missing = [c for c in wanted if c not in live]
    held: dict[int, tuple[int, str]] = {int(c): (int(i), str(s)) for i, c, s in select_in(
        conn, "SELECT id, contact_id, status FROM lead_assignments WHERE status IN "
        "('open', 'touched', 'escalated', 'unassigned') AND contact_id IN ({marks})",
        sorted(live))}
    retry = {c: i for c, (i, s) in held.items() if s == "unassigned"}
    result.already = {c: i for c, (i, s) in held.items() if s != "unassigned"}
    todo = sorted(c for c in live if c not in result.already)
    if not todo:
        return result
    rules = load_rules(conn, lock=True)
    needs = Needs()
    for rule in rules:
        needs = needs | rule.needs()
    contexts = load_contexts(conn, todo, needs, now)
    picker = Picker(conn, now, rules)
    fresh: list[NewAssignment] = []
    for cid in todo:
        ctx = contexts[cid]
        made = _route_one(picker, rules, ctx, cause, retry.get(cid))
        if made.rep is None and cid in retry:
            continue  # still nobody: the recorded unassigned row stands
        fresh.append(made)
    if retry:
        done = [a.previous_id for a in fresh if a.previous_id is not None]
        if done:
            conn.execute(sa.update(_a).where(_a.c.id.in_(done)).values(
                status="reassigned", closed_at=now))
    write_assignments(conn, fresh, now, options)
    picker.save_cursors()
    result.assigned = [a for a in fresh if a.rep is not None]
    result.unassigned = [a for a in fresh if a.rep is None]
    return result


def _route_one(picker: Picker, rules: Sequence[RoutingRule], ctx: Context, cause: str,
               previous: int | None) -> NewAssignment:
    for rule in rules:
        if rule.condition is not None and not rule.condition.evaluate(ctx.facts):
            continue
        rep, why = picker.pick(rule, ctx.facts.attributes, ctx.company)
        return NewAssignment(ctx.facts.contact_id, rule, rep, why, profile(ctx), cause,
                             previous)
    return NewAssignment(ctx.facts.contact_id, None, None,
                         {"reason": "no routing rule matches this contact"}, profile(ctx),
                         cause, previous)


def write_assignments(conn: Connection, made: Sequence[NewAssignment], now: int,
                      options: RoutingOptions) -> None:
    """Insert assignments with their hand-off tasks (outbox) and events, set-wise."""
    if not made:
        return
    for a, new_id in zip(made, allocate_ids(conn, _a, len(made)), strict=True):
        a.id = new_id
        if a.rep is not None and a.rule is not None and a.rule.sla_ms is not None:
            a.sla_due_at = now + a.rule.sla_ms
    insert_rows(conn, _a, (
        "id", "contact_id", "rep_id", "rule", "status", "reason", "assigned_at", "sla_due_at",
        "previous_id"), [
        (a.id, a.contact_id, None if a.rep is None else a.rep.id,
         None if a.rule is None else a.rule.key, a.status, dumps({**a.reason, "cause": a.cause}),
         now, a.sla_due_at, a.previous_id) for a in made])
    write_tasks(conn, [(f"assign:{a.id}", a.contact_id, _task_queue(a, options),
                        _task_title(a), _task_details(a)) for a in made], now)
    write_events(conn, [(f"assign:{a.id}", a.contact_id,
                         ASSIGNED_EVENT if a.rep else UNASSIGNED_EVENT, _event(a))
                        for a in made], now)
    crm_handoff(conn, [a for a in made if a.rep is not None], now)


def crm_handoff(conn: Connection, assignments: Sequence[NewAssignment], now: int) -> None:
    """Hook for the CRM connectors (a later issue): create the lead/owner record in the CRM
    through the outbox, in this same transaction, keyed `crm:<assignment id>`. Nothing yet."""


def _task_queue(a: NewAssignment, options: RoutingOptions) -> str:
    if a.rep is None:
        return options.fallback_queue
    return a.rule.queue if a.rule is not None and a.rule.queue else a.rep.key


def _who(a: NewAssignment) -> str:
    return str(a.profile.get("name") or a.profile.get("email") or f"contact {a.contact_id}")


def _task_title(a: NewAssignment) -> str:
    company = f" ({a.profile['company']})" if a.profile.get("company") else ""
    if a.rep is None:
        return f"Unassigned lead: {_who(a)}{company}"
    return f"New lead for {a.rep.name}: {_who(a)}{company}"


def _task_details(a: NewAssignment) -> dict[str, Any]:
    return {"assignment_id": a.id, "rep": None if a.rep is None else a.rep.key,
            "lead": a.profile, "why": a.reason, "sla_due_at": a.sla_due_at,
            "previous_assignment_id": a.previous_id, "cause": a.cause}


def _event(a: NewAssignment) -> dict[str, Any]:
    out = {"assignment_id": a.id, "rep": None if a.rep is None else a.rep.key,
           "rule": None if a.rule is None else a.rule.key, "cause": a.cause}
    if a.rep is None:
        out["reason"] = a.reason.get("reason")
    if a.previous_id is not None:
        out["previous_assignment_id"] = a.previous_id
    return out


def write_tasks(conn: Connection, tasks: Sequence[tuple[str, int, str, str, dict[str, Any]]],
                now: int) -> None:
    """Outbox rows of the `task` channel: (idempotency key, contact, queue, title, details).
    The title travels as `entry.title`, so nothing in it is read as template syntax; the
    purpose is transactional (an internal hand-off: no quiet hours, caps or consent)."""
    insert_rows(conn, schema.outbox, (
        "idempotency_key", "contact_id", "part", "shadow", "channel", "payload", "status",
        "attempts", "next_attempt_at", "created_at"), [
        (key, cid, cid % schema.PARTITIONS, False, "task", dumps({
            "params": {"title": "{{ entry.title }}", "queue": queue, "details": details,
                       "purpose": "transactional"},
            "entry": {"title": title}, "step": "routing"}), "pending", 0, now, now)
        for key, cid, queue, title, details in tasks], ignore_conflicts_on=("idempotency_key",))


def write_events(conn: Connection, events: Sequence[tuple[str, int, str, dict[str, Any]]],
                 now: int) -> None:
    """Track events (message id, contact, name, properties) from routing, deduplicated by
    message id."""
    if not events:
        return
    lock_event_log(conn)
    insert_rows(conn, schema.events, (
        "message_id", "contact_id", "type", "name", "properties", "context", "source",
        "timestamp", "received_at"), [
        (mid, cid, "track", name, dumps(props), "{}", "routing", now, now)
        for mid, cid, name, props in events], ignore_conflicts_on=("message_id",))
