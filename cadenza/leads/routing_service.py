"""Routing use cases for the API and the CLI: reps, rules, routing on demand, assignments,
first touch and SLA checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.errors import NotFound, ValidationFailed
from cadenza.leads.lifecycle_stages import declared_fields
from cadenza.leads.reps import (
    Rep,
    delete_rep,
    get_rep,
    load_reps,
    open_counts,
    save_rep,
    set_availability,
)
from cadenza.leads.routing_assign import RouteResult, RoutingOptions, route_contacts
from cadenza.leads.routing_rules import (
    RoutingRule,
    checked_rule,
    delete_rule,
    get_rule,
    load_rules,
    save_rule,
)
from cadenza.leads.routing_sla import (
    SlaReport,
    check_slas,
    close,
    find_assignments,
    get_assignment,
    touch,
)
from cadenza.store import Page, Store, schema

MAX_ROUTE = 50_000
"""Contacts one routing call may take (a segment larger than this is refused)."""


class RoutingService:
    """Reps, routing rules, assignments."""

    def __init__(self, store: Store, clock: Clock, options: RoutingOptions | None = None) -> None:
        self.store = store
        self.clock = clock
        self.options = options or RoutingOptions()

    # --- reps --------------------------------------------------------------------------------

    def reps(self) -> list[dict[str, Any]]:
        """Every rep with its open assignments."""
        with self.store.read() as conn:
            counts = open_counts(conn)
            return [r.to_dict(counts.get(r.id, 0)) for r in load_reps(conn)]

    def rep(self, key: str) -> dict[str, Any]:
        """One rep with its open assignments."""
        with self.store.read() as conn:
            rep = get_rep(conn, key)
            return rep.to_dict(open_counts(conn, [rep.id]).get(rep.id, 0))

    def save_rep(self, key: str, document: Any) -> tuple[Rep, bool]:
        """Create or update a rep; True when created."""
        now = self.clock.now_ms()
        return self.store.retry(lambda conn: save_rep(conn, key, document, now))

    def set_availability(self, key: str, status: str, until: int | None = None) -> Rep:
        """away (until a time or until back), active (back) or inactive."""
        now = self.clock.now_ms()
        return self.store.retry(lambda conn: set_availability(conn, key, status, now, until))

    def delete_rep(self, key: str) -> None:
        """Remove a rep that never had a lead and that no rule names."""
        self.store.retry(lambda conn: delete_rep(conn, key))

    # --- rules -------------------------------------------------------------------------------

    def rules(self) -> list[RoutingRule]:
        """Every routing rule, in the order they are tried."""
        with self.store.read() as conn:
            return load_rules(conn)

    def rule(self, key: str) -> RoutingRule:
        """One rule."""
        with self.store.read() as conn:
            return get_rule(conn, key)

    def validate_rule(self, key: str, document: Any) -> RoutingRule:
        """Check a rule as saving would, without saving it."""
        with self.store.read() as conn:
            return checked_rule(conn, key, document, declared_fields(conn))

    def save_rule(self, key: str, document: Any) -> tuple[RoutingRule, bool]:
        """Create or replace a rule; True when created."""
        now = self.clock.now_ms()
        return self.store.retry(lambda conn: save_rule(conn, key, document, now,
                                                       declared_fields(conn)))

    def delete_rule(self, key: str) -> None:
        """Remove a rule."""
        self.store.retry(lambda conn: delete_rule(conn, key))

    # --- routing -----------------------------------------------------------------------------

    def route(self, contact_ids: Sequence[int] = (), segment: str | None = None,
              cause: str = "api") -> RouteResult:
        """Route contacts, or every member of a segment, now."""
        ids = sorted({int(c) for c in contact_ids})
        if segment is not None:
            ids = sorted(set(ids) | set(self._segment_members(segment)))
        elif not ids:
            raise ValidationFailed("contact_ids", "name contacts or a segment to route")
        if len(ids) > MAX_ROUTE:
            raise ValidationFailed("segment", f"routes at most {MAX_ROUTE} contacts at once, "
                                   f"got {len(ids)}")
        now = self.clock.now_ms()
        return self.store.retry(lambda conn: route_contacts(conn, ids, now, self.options,
                                                            cause=cause))

    def _segment_members(self, key: str) -> list[int]:
        s, m = schema.segments, schema.segment_members
        with self.store.read() as conn:
            found = conn.execute(sa.select(s.c.id).where(s.c.key == key)).scalar()
            if found is None:
                raise NotFound("segment", key)
            return [int(c) for c, in conn.execute(sa.select(m.c.contact_id)
                                                   .where(m.c.segment_id == found))]

    # --- assignments -------------------------------------------------------------------------

    def assignments(self, *, rep: str | None = None, status: str | None = None,
                    contact_id: int | None = None, sla: str | None = None,
                    cursor: str | None = None, limit: int = 50) -> Page:
        """Assignments newest first (a rep's queue with `rep`), with their SLA state."""
        now = self.clock.now_ms()
        with self.store.read() as conn:
            return find_assignments(conn, now, self.options.due_soon_ms, rep=rep,
                                    status=status, contact_id=contact_id, sla=sla,
                                    cursor=cursor, limit=limit)

    def assignment(self, assignment_id: int) -> dict[str, Any]:
        """One assignment."""
        with self.store.read() as conn:
            return get_assignment(conn, assignment_id, self.clock.now_ms(),
                                  self.options.due_soon_ms)

    def touch(self, assignment_id: int, note: str | None = None) -> tuple[dict[str, Any], bool]:
        """Record first touch; False when it was touched already."""
        now = self.clock.now_ms()

        def work(conn: Connection) -> tuple[dict[str, Any], bool]:
            changed = touch(conn, assignment_id, now, note)
            return get_assignment(conn, assignment_id, now, self.options.due_soon_ms), changed

        return self.store.retry(work)

    def close(self, assignment_id: int) -> tuple[dict[str, Any], bool]:
        """Close an assignment; False when it was closed already."""
        now = self.clock.now_ms()

        def work(conn: Connection) -> tuple[dict[str, Any], bool]:
            changed = close(conn, assignment_id, now)
            return get_assignment(conn, assignment_id, now, self.options.due_soon_ms), changed

        return self.store.retry(work)

    def check_slas(self, limit: int = 500) -> SlaReport:
        """One SLA round now (the job does this every `routing_sla_check_s`)."""
        now = self.clock.now_ms()
        return self.store.retry(lambda conn: check_slas(conn, now, self.options, limit))
