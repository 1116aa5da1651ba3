"""Routing rules: which contacts go to which pool of reps, how, and how fast.

Rules are tried in order and the first whose condition holds routes the contact:

    key: emea-enterprise
    when: {all: [{attr: region, eq: emea}, {company_attr: size, gte: 500}]}
    pool: {match: {territory: country}}   # reps whose territory equals the contact's country
    strategy: round_robin                 # or weighted, or specific (with rep: <key>)
    sla: 4h                               # first touch due within 4 hours
    escalation: {queue: sales-managers}   # where a lapsed SLA's task goes
    queue: emea-leads                     # hand-off task queue (default: the rep's key)

A pool is `reps` (rep keys), `match` (rep attribute -> contact attribute, or `company.<name>`
for an attribute of the contact's company), both (the listed reps that also match) or absent
(every rep). Every rep key is checked against the reps on save, every condition against the
declared fields and stages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import NotFound, ValidationFailed
from cadenza.leads.lifecycle_stages import Declared, check_stage_refs, load_config, parse_when
from cadenza.leads.reps import load_reps
from cadenza.segments import (
    BUILTIN_ATTRIBUTES,
    Condition,
    Needs,
    format_duration,
    parse_duration,
)
from cadenza.store import loads, schema

STRATEGIES = ("round_robin", "weighted", "specific")
MAX_RULES = 200
KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
_FIELDS = ("when", "pool", "strategy", "rep", "sla", "escalation", "queue", "position")
_t = schema.routing_rules


@dataclass(frozen=True)
class RoutingRule:
    """One routing rule (see the module docstring)."""

    key: str
    position: int
    condition: Condition | None = None
    """None routes every contact."""
    reps: tuple[str, ...] | None = None
    """Rep keys of the pool; None for every rep."""
    match: Mapping[str, str] = field(default_factory=dict)
    """Rep attribute -> contact attribute (or `company.<name>`) that must be equal."""
    strategy: str = "round_robin"
    rep: str | None = None
    """The rep of the `specific` strategy."""
    sla_ms: int | None = None
    escalation_queue: str | None = None
    escalation_manager: str | None = None
    queue: str | None = None
    cursor: int = 0

    def needs(self) -> Needs:
        """What the condition needs loaded (attributes for `match`, too)."""
        needs = Needs(attributes=bool(self.match))
        return needs if self.condition is None else needs | self.condition.needs()

    def definition(self) -> dict[str, Any]:
        """Document form (without key and position)."""
        out: dict[str, Any] = {"strategy": self.strategy}
        if self.condition is not None:
            out["when"] = self.condition.to_json()
        pool: dict[str, Any] = {}
        if self.reps is not None:
            pool["reps"] = list(self.reps)
        if self.match:
            pool["match"] = dict(self.match)
        if pool:
            out["pool"] = pool
        if self.rep is not None:
            out["rep"] = self.rep
        if self.sla_ms is not None:
            out["sla"] = format_duration(self.sla_ms)
        escalation = {k: v for k, v in (("queue", self.escalation_queue),
                                        ("manager", self.escalation_manager)) if v}
        if escalation:
            out["escalation"] = escalation
        if self.queue is not None:
            out["queue"] = self.queue
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"key": self.key, "position": self.position, **self.definition(),
                "cursor": self.cursor}


def _queue(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _QUEUE.match(value):
        raise ValidationFailed(where, "must be a queue name of 1 to 128 letters, digits, "
                               "'_', '.', ':', '@' or '-'")
    return value


def parse_rule(key: str, document: Any, *, reps: Sequence[str] | None,
               stages: Sequence[str] | None, declared: Declared | None,
               position: int = 0, cursor: int = 0) -> RoutingRule:
    """A rule from its document; with `reps`/`stages`/`declared`, names are checked."""
    if not isinstance(key, str) or not KEY.match(key):
        raise ValidationFailed("key", "must be 1 to 128 lowercase letters, digits, '_', '.' "
                               "or '-'")
    if not isinstance(document, Mapping):
        raise ValidationFailed("", "must be an object such as {pool: {reps: [ann, bob]}, "
                               "strategy: round_robin}")
    extra = set(document) - set(_FIELDS) - {"key", "cursor"}
    if extra:
        raise ValidationFailed(sorted(extra)[0], f"is not a rule field; use "
                               f"{', '.join(_FIELDS)}")
    condition = None
    if document.get("when") is not None:
        condition = parse_when(document["when"], "when", declared)
        if stages is not None:
            check_stage_refs(condition, "when", stages)
    known = None if reps is None else set(reps)

    def check_rep(value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise ValidationFailed(where, "must be a rep key")
        if known is not None and value not in known:
            raise ValidationFailed(where, f"{value!r} is not a sales rep; add it first "
                                   f"(reps: {', '.join(sorted(known)) or 'none yet'})")
        return value

    pool = document.get("pool") or {}
    if not isinstance(pool, Mapping) or set(pool) - {"reps", "match"}:
        raise ValidationFailed("pool", "must be an object with 'reps' (rep keys) and/or "
                               "'match' ({rep attribute: contact attribute})")
    pool_reps = None
    if "reps" in pool:
        if not isinstance(pool["reps"], list) or not pool["reps"] or len(pool["reps"]) > 500:
            raise ValidationFailed("pool.reps", "must be a list of 1 to 500 rep keys")
        pool_reps = tuple(check_rep(v, f"pool.reps[{i}]") for i, v in enumerate(pool["reps"]))
        if len(set(pool_reps)) != len(pool_reps):
            raise ValidationFailed("pool.reps", "names a rep twice")
    match = pool.get("match") or {}
    if not isinstance(match, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in match.items()):
        raise ValidationFailed("pool.match", "must map rep attributes to contact attributes, "
                               "such as {territory: country} or {segment: company.size_band}")
    for rep_attr, source in match.items():
        if declared is None:
            continue
        if source.startswith("company."):
            known, what = {*declared.company, "name", "domain"}, "company field"
        else:
            known, what = {*declared.fields, *BUILTIN_ATTRIBUTES}, "contact field"
        if source.removeprefix("company.") not in known:
            raise ValidationFailed(f"pool.match.{rep_attr}", f"{source!r} is not a declared "
                                   f"{what}; declare it first, or check the spelling")
    strategy = document.get("strategy", "round_robin")
    if strategy not in STRATEGIES:
        raise ValidationFailed("strategy", f"must be one of {', '.join(STRATEGIES)}")
    rep = None
    if strategy == "specific":
        rep = check_rep(document.get("rep"), "rep")
    elif document.get("rep") is not None:
        raise ValidationFailed("rep", "is only for the 'specific' strategy")
    sla_ms = None
    if document.get("sla") is not None:
        sla_ms = parse_duration(document["sla"], "sla")
        if sla_ms < 60_000:
            raise ValidationFailed("sla", "must be at least 1m")
    escalation = document.get("escalation") or {}
    if not isinstance(escalation, Mapping) or set(escalation) - {"queue", "manager"}:
        raise ValidationFailed("escalation", "must be an object with 'queue' and/or "
                               "'manager' (a rep key)")
    esc_queue = None if escalation.get("queue") is None else \
        _queue(escalation["queue"], "escalation.queue")
    manager = None if escalation.get("manager") is None else \
        check_rep(escalation["manager"], "escalation.manager")
    queue = None if document.get("queue") is None else _queue(document["queue"], "queue")
    return RoutingRule(key, position, condition, pool_reps, dict(match), strategy, rep, sla_ms,
                       esc_queue, manager, queue, cursor)


def _row_rule(row: Any) -> RoutingRule:
    definition = loads(row.definition) if isinstance(row.definition, str) else row.definition
    return parse_rule(str(row.key), definition or {}, reps=None, stages=None, declared=None,
                      position=int(row.position), cursor=int(row.cursor))


def load_rules(conn: Connection, *, lock: bool = False) -> list[RoutingRule]:
    """Every rule in order (locked for update on PostgreSQL when `lock`: the cursors move)."""
    query = sa.select(_t).order_by(_t.c.position, _t.c.id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return [_row_rule(r) for r in conn.execute(query)]


def checked_rule(conn: Connection, key: str, document: Any,
                 declared: Declared | None) -> RoutingRule:
    """Parse a rule checking its reps, stages and fields against the store."""
    return parse_rule(key, document, reps=[r.key for r in load_reps(conn)],
                      stages=load_config(conn).keys(), declared=declared)


def save_rule(conn: Connection, key: str, document: Any, now: int,
              declared: Declared | None) -> tuple[RoutingRule, bool]:
    """Create or replace a rule (at `position`, default last); True when created."""
    rule = checked_rule(conn, key, document, declared)
    rows = load_rules(conn)
    existing = next((r for r in rows if r.key == key), None)
    others = [r for r in rows if r.key != key]
    if existing is None and len(rows) >= MAX_RULES:
        raise ValidationFailed("key", f"at most {MAX_RULES} routing rules")
    position = document.get("position") if isinstance(document, Mapping) else None
    if position is None:
        position = existing.position if existing is not None else len(others)
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValidationFailed("position", "must be a whole number of at least 0")
    order = [r.key for r in sorted(others, key=lambda r: r.position)]
    order.insert(min(position, len(order)), key)
    if existing is None:
        conn.execute(sa.insert(_t).values(key=key, position=0, definition=rule.definition(),
                                          cursor=0, updated_at=now))
    else:
        conn.execute(sa.update(_t).where(_t.c.key == key).values(
            definition=rule.definition(), updated_at=now))
    _renumber(conn, order)
    saved = get_rule(conn, key)
    return saved, existing is None


def _renumber(conn: Connection, order: Sequence[str]) -> None:
    for i, key in enumerate(order):
        conn.execute(sa.update(_t).where(_t.c.key == key).values(position=i))


def get_rule(conn: Connection, key: str) -> RoutingRule:
    """The rule of this key."""
    row = conn.execute(sa.select(_t).where(_t.c.key == key)).first()
    if row is None:
        raise NotFound("routing rule", key)
    return _row_rule(row)


def delete_rule(conn: Connection, key: str) -> None:
    """Remove a rule (its past assignments keep its key)."""
    get_rule(conn, key)
    conn.execute(sa.delete(_t).where(_t.c.key == key))
    _renumber(conn, [r.key for r in load_rules(conn)])
