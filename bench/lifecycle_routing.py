"""Lifecycle stage rules and routing on the big store.

    uv run python bench/lifecycle_routing.py [--db PATH] [--touched 1000] [--route 10000]

On the shared 1,000,000-contact / 20,000,000-event store (bench/_bigdata.py): saves three
stages with rules (lead: any pricing view; mql: a demo request in the last 30 days, and mql
routes; customer: an order), twenty reps (two per country, territory = country) and one
territory rule with round robin and a 4h SLA. Then it measures

1. the rules' matching sets, each computed in SQL (`select_matching`);
2. applying them to `--contacts` contacts (default 200,000: the rolled-back transaction stays
   a few hundred MB) a chunk of 5,000 at a time: moves, history, events, the change queue,
   and the routing (assignment, hand-off task, event) of every mql entrant;
3. the real-time listener re-evaluating `--touched` queued contacts, 100 per pass
   (p50 / p99 per pass);
4. routing `--route` random contacts on demand in one call (after closing the assignments
   made by step 2, so every one of them is routed).

Everything runs in one transaction that is rolled back: the shared file is left as it was.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import sqlalchemy as sa
from _bigdata import NOW, ensure_big

from cadenza.leads import LifecycleListener
from cadenza.leads.lifecycle import stage_router
from cadenza.leads.lifecycle_service import apply_matched
from cadenza.leads.lifecycle_stages import parse_config, save_config
from cadenza.leads.reps import save_rep
from cadenza.leads.routing_assign import RoutingOptions, route_contacts
from cadenza.leads.routing_rules import save_rule
from cadenza.segments import select_matching
from cadenza.store import Store, schema
from cadenza.store.changes import mark_changed

COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "BR", "IN")
STAGES = {"stages": [
    {"key": "subscriber"},
    {"key": "lead", "rules": [{"name": "pricing", "when": {"count": "Pricing Viewed",
                                                            "gte": 1}}]},
    {"key": "mql", "route": True,
     "rules": [{"name": "demo", "when": {"count": "Demo Requested", "within": "30d",
                                         "gte": 1}}]},
    {"key": "customer", "rules": [{"name": "order", "when": {"count": "Order Completed",
                                                              "gte": 1}}]}]}
CHUNK = 5000


class RolledBack(Exception):
    """Ends the benchmark's transaction without committing it."""


def _upgrade_0007(conn: sa.Connection) -> None:
    """A big store built before migration 0007 gained `lifecycle_stages.routes` and the one
    active assignment per contact index lacks them: add them (rolled back with the rest)."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns("lifecycle_stages")}
    if "routes" not in columns:
        conn.exec_driver_sql("ALTER TABLE lifecycle_stages ADD COLUMN routes BOOLEAN NOT NULL "
                             "DEFAULT 0")
        conn.exec_driver_sql(
            "CREATE UNIQUE INDEX ux_lead_assignments_active ON lead_assignments (contact_id) "
            f"WHERE {schema.ACTIVE_ASSIGNMENT_SQL}")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--touched", type=int, default=1000)
    parser.add_argument("--route", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=200_000,
                        help="contacts the rules are applied to (the first ones by id); the "
                        "matching sets always cover all of them")
    args = parser.parse_args()
    store = Store.create(f"sqlite:///{ensure_big(args.db)}")
    options = RoutingOptions()
    router = stage_router(options)
    try:
        with store.begin() as conn:
            _upgrade_0007(conn)
            config = parse_config(STAGES)
            save_config(conn, config, NOW)
            for i, country in enumerate(COUNTRIES * 2):
                save_rep(conn, f"rep-{i}", {"name": f"Rep {i}",
                                            "attributes": {"territory": country}}, NOW)
            save_rule(conn, "territory", {"pool": {"match": {"territory": "country"}},
                                          "sla": "4h"}, NOW, None)
            started = time.perf_counter()
            matched = {}
            for stage, rule in config.rules():
                query = select_matching(rule.condition, "sqlite", NOW)
                matched[(stage.key, rule.name)] = {int(r[0]) for r in conn.execute(query)}
            sets_s = time.perf_counter() - started
            sizes = {k[0]: len(v) for k, v in matched.items()}
            print(f"matching sets in SQL: {sets_s:.2f} s ({sizes})")

            every = [int(i) for i, in conn.execute(sa.select(schema.contacts.c.id).where(
                schema.contacts.c.merged_into.is_(None)).order_by(schema.contacts.c.id))]
            ids = every[:args.contacts]
            started = time.perf_counter()
            moved = 0
            for start in range(0, len(ids), CHUNK):
                moved += apply_matched(conn, config, matched, ids[start:start + CHUNK], NOW,
                                        router)
            apply_s = time.perf_counter() - started
            routed = conn.execute(sa.select(sa.func.count()).select_from(
                schema.lead_assignments)).scalar_one()
            print(f"apply to {len(ids):,} contacts: {apply_s:.2f} s, {moved:,} moved, "
                  f"{routed:,} routed (total with the sets: {sets_s + apply_s:.2f} s)")

            rng = random.Random(7)
            touched = rng.sample(every, args.touched)
            listener = LifecycleListener(options)
            parts = list(range(schema.PARTITIONS))
            listener.apply(conn, parts, NOW, 100)  # cursors at the end of the log
            passes = []
            for start in range(0, len(touched), 100):
                mark_changed(conn, touched[start:start + 100], NOW + 1,
                             consumers=("lifecycle",))
                began = time.perf_counter()
                listener.apply(conn, parts, NOW + 1, 100)
                passes.append((time.perf_counter() - began) * 1000)
            passes.sort()
            p99 = passes[min(len(passes) - 1, int(len(passes) * 0.99))]
            print(f"listener, {args.touched} queued contacts in passes of 100: "
                  f"p50 {statistics.median(passes):.1f} ms, p99 {p99:.1f} ms per pass")

            conn.execute(sa.update(schema.lead_assignments).values(status="closed"))
            chosen = rng.sample(every, args.route)
            began = time.perf_counter()
            result = route_contacts(conn, chosen, NOW + 2, options, cause="bench")
            route_s = time.perf_counter() - began
            print(f"route {args.route:,} contacts on demand: {route_s:.2f} s "
                  f"({len(result.assigned):,} assigned, {len(result.unassigned):,} "
                  f"unassigned)")
            raise RolledBack
    except RolledBack:
        pass
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
