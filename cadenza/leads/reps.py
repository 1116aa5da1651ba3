"""Sales reps: who leads are routed to, their weight, capacity, attributes and availability.

A rep is `active`, `away` (optionally until a time: past `away_until` the rep counts as back
without anyone touching the row) or `inactive`. `capacity` caps the rep's active assignments
(open, touched or escalated); none means no cap, 0 takes no new leads. `weight` shares leads in
weighted rules (a rep of weight 2 gets twice the leads of a rep of weight 1). `attributes`
(territory, team, segment, ...) let a rule's pool match reps to a contact or its company.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.store import loads, schema

STATUSES = ("active", "away", "inactive")
MAX_WEIGHT = 1000
KEY = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,127}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_r = schema.sales_reps
HOLDING = ("open", "touched", "escalated")
"""Assignment statuses that count against a rep's capacity."""


@dataclass(frozen=True)
class Rep:
    """One sales rep."""

    id: int
    key: str
    name: str
    email: str | None = None
    weight: int = 1
    capacity: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    status: str = "active"
    away_until: int | None = None

    def available(self, now: int) -> bool:
        """Active, or away with a return time that has passed."""
        if self.status == "active":
            return True
        return self.status == "away" and self.away_until is not None \
            and self.away_until <= now

    def why_unavailable(self, now: int) -> str | None:
        """Why the rep takes no leads now (None when available)."""
        if self.available(now):
            return None
        if self.status == "away":
            return "away" if self.away_until is None else f"away until {self.away_until}"
        return self.status

    def to_dict(self, open_count: int | None = None) -> dict[str, Any]:
        """JSON form (with the rep's open assignments when given)."""
        out = {"id": self.id, "key": self.key, "name": self.name, "email": self.email,
               "weight": self.weight, "capacity": self.capacity,
               "attributes": dict(self.attributes), "status": self.status,
               "away_until": self.away_until}
        if open_count is not None:
            out["open_assignments"] = open_count
        return out


_FIELDS = ("key", "name", "email", "weight", "capacity", "attributes", "status", "away_until")


def check_rep(document: Any, *, key: str | None = None,
              base: Rep | None = None) -> dict[str, Any]:
    """The validated columns of a rep document (merged over `base` for an update)."""
    if not isinstance(document, Mapping):
        raise ValidationFailed("", "must be an object such as {key: ann, name: Ann Lee}")
    extra = set(document) - set(_FIELDS) - {"id", "open_assignments"}
    if extra:
        raise ValidationFailed(sorted(extra)[0], f"is not a rep field; use {', '.join(_FIELDS)}")
    merged: dict[str, Any] = {} if base is None else {
        "key": base.key, "name": base.name, "email": base.email, "weight": base.weight,
        "capacity": base.capacity, "attributes": dict(base.attributes),
        "status": base.status, "away_until": base.away_until}
    merged.update({k: v for k, v in document.items() if k in _FIELDS})
    if key is not None:
        if "key" in document and document["key"] != key:
            raise ValidationFailed("key", f"does not match the rep in the path ({key!r})")
        merged["key"] = key
    rep_key = merged.get("key")
    if not isinstance(rep_key, str) or not KEY.match(rep_key):
        raise ValidationFailed("key", "must be 1 to 128 lowercase letters, digits, '_', '.', "
                               "'@' or '-', such as 'ann' or 'ann.lee'")
    name = merged.get("name", rep_key)
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 256:
        raise ValidationFailed("name", "must be a name of 1 to 256 characters")
    email = merged.get("email")
    if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)
                              or len(email) > 320):
        raise ValidationFailed("email", "must be an email address such as ann@example.com")
    weight = merged.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise ValidationFailed("weight", f"must be a whole number from 1 to {MAX_WEIGHT} (a "
                               "rep who should get no leads is 'away' or 'inactive')")
    capacity = merged.get("capacity")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int)
                                 or capacity < 0):
        raise ValidationFailed("capacity", "must be a whole number of at least 0 (open "
                               "assignments at most), or null for no cap")
    attributes = merged.get("attributes") or {}
    if not isinstance(attributes, Mapping) or len(attributes) > 50 or not all(
            isinstance(k, str) and (v is None or isinstance(v, str | int | float | bool))
            for k, v in attributes.items()):
        raise ValidationFailed("attributes", "must be an object of at most 50 names with "
                               "string, number or true/false values")
    status = merged.get("status", "active")
    if status not in STATUSES:
        raise ValidationFailed("status", f"must be one of {', '.join(STATUSES)}")
    away_until = merged.get("away_until")
    if away_until is not None and (isinstance(away_until, bool)
                                   or not isinstance(away_until, int) or away_until < 0):
        raise ValidationFailed("away_until", "must be a time in epoch milliseconds, or null")
    if status != "away":
        away_until = None
    return {"key": rep_key, "name": name.strip(), "email": email, "weight": weight,
            "capacity": capacity, "attributes": dict(attributes), "status": status,
            "away_until": away_until}


def _json(value: Any) -> Any:
    return loads(value) if isinstance(value, str) else value


def _rep(row: Any) -> Rep:
    return Rep(int(row.id), str(row.key), str(row.name), row.email, int(row.weight),
               None if row.capacity is None else int(row.capacity),
               dict(_json(row.attributes) or {}), str(row.status),
               None if row.away_until is None else int(row.away_until))


def load_reps(conn: Connection) -> list[Rep]:
    """Every rep, by id."""
    return [_rep(r) for r in conn.execute(sa.select(_r).order_by(_r.c.id))]


def get_rep(conn: Connection, key: str) -> Rep:
    """The rep of this key."""
    row = conn.execute(sa.select(_r).where(_r.c.key == key)).first()
    if row is None:
        raise NotFound("sales rep", key)
    return _rep(row)


def open_counts(conn: Connection, rep_ids: Sequence[int] | None = None) -> dict[int, int]:
    """Active assignments per rep (capacity use), one grouped statement."""
    a = schema.lead_assignments
    query = sa.select(a.c.rep_id, sa.func.count()).where(
        a.c.status.in_(HOLDING), a.c.rep_id.is_not(None)).group_by(a.c.rep_id)
    if rep_ids is not None:
        query = query.where(a.c.rep_id.in_(list(rep_ids)))
    return {int(r): int(n) for r, n in conn.execute(query).all()}


def save_rep(conn: Connection, key: str, document: Any, now: int) -> tuple[Rep, bool]:
    """Create or update (merging the given fields) the rep of `key`; True when created."""
    row = conn.execute(sa.select(_r).where(_r.c.key == key)).first()
    base = None if row is None else _rep(row)
    values = check_rep(document, key=key, base=base)
    if base is None:
        conn.execute(sa.insert(_r).values(**values, created_at=now, updated_at=now))
    else:
        conn.execute(sa.update(_r).where(_r.c.id == base.id).values(**values, updated_at=now))
    return get_rep(conn, key), base is None


def set_availability(conn: Connection, key: str, status: str, now: int,
                     until: int | None = None) -> Rep:
    """Mark a rep away (until a time, or until told), back (active) or inactive."""
    rep = get_rep(conn, key)
    if status not in STATUSES:
        raise ValidationFailed("status", f"must be one of {', '.join(STATUSES)}")
    if until is not None and until <= now:
        raise ValidationFailed("until", "must be in the future")
    conn.execute(sa.update(_r).where(_r.c.id == rep.id).values(
        status=status, away_until=until if status == "away" else None, updated_at=now))
    return get_rep(conn, key)


def delete_rep(conn: Connection, key: str) -> None:
    """Remove a rep that never had an assignment and that no rule names."""
    rep = get_rep(conn, key)
    a = schema.lead_assignments
    used = conn.execute(sa.select(sa.func.count()).select_from(a)
                        .where(a.c.rep_id == rep.id)).scalar_one()
    if used:
        raise Conflict(f"sales rep {key!r} has {used} assignment(s) on record; mark the rep "
                       "'inactive' instead of deleting it")
    rules = schema.routing_rules
    for rule_key, definition in conn.execute(sa.select(rules.c.key, rules.c.definition)):
        if key in _named_reps(_json(definition) or {}):
            raise Conflict(f"routing rule {rule_key!r} names sales rep {key!r}; change the "
                           "rule first")
    conn.execute(sa.delete(_r).where(_r.c.id == rep.id))


def _named_reps(definition: Mapping[str, Any]) -> set[str]:
    named: set[str] = set()
    pool = definition.get("pool")
    if isinstance(pool, Mapping) and isinstance(pool.get("reps"), list):
        named.update(str(k) for k in pool["reps"])
    for name in ("rep",):
        if isinstance(definition.get(name), str):
            named.add(definition[name])
    escalation = definition.get("escalation")
    if isinstance(escalation, Mapping) and isinstance(escalation.get("manager"), str):
        named.add(escalation["manager"])
    return named
