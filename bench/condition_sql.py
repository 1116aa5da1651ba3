"""How fast conditions compiled to SQL select whole sets, on the shared big store.

    uv run python bench/condition_sql.py [--db PATH] [--repeat 3] [--plans]

Each condition is parsed, compiled with `select_matching` and counted (`SELECT count(*)` over
it) on the store of `bench/_bigdata.py` (1,000,000 contacts, 20,000,000 events; built on
first use). Prints the best of `--repeat` runs per condition, and with `--plans` SQLite's
EXPLAIN QUERY PLAN. The issue's bar: a segment of three clauses, one an event count within 30
days, in at most 5 s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench._bigdata import NOW, ensure_big
from cadenza.segments import parse_condition, select_matching
from cadenza.store import Store

CONDITIONS: dict[str, dict[str, Any]] = {
    "three clauses (the issue's bar)": {"all": [
        {"attr": "plan", "eq": "pro"},
        {"count": "Page Viewed", "within": "30d", "gte": 3},
        {"consent": "email", "purpose": "marketing"},
    ]},
    "count within 30d, gte 3": {"count": "Page Viewed", "within": "30d", "gte": 3},
    "no order in 90d (count eq 0)": {"count": "Order Completed", "within": "90d", "eq": 0},
    "attribute number gt": {"attr": "lifetime_value", "gt": 500},
    "company attribute": {"company_attr": "employees", "gte": 100},
    "sum of revenue in 180d": {"sum": "Order Completed", "of": "revenue", "within": "180d",
                               "gte": 100},
    "last seen within 7d (any event)": {"last_seen": "*", "within": "7d"},
    "count between 30d and 7d, where": {"count": "Page Viewed", "between": ["30d", "7d"],
                                        "where": {"event_prop": "path", "eq": "/pricing"},
                                        "gte": 2},
    "any of tag / not consent": {"any": [{"tag": "vip"},
                                         {"not": {"consent": "email",
                                                  "purpose": "marketing"}}]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plans", action="store_true")
    parser.add_argument("--only", default=None, help="run only conditions whose name has this")
    args = parser.parse_args()
    path = ensure_big(args.db)
    store = Store.create(f"sqlite:///{path}")
    try:
        with store.read() as conn:
            for name, shape in CONDITIONS.items():
                if args.only and args.only not in name:
                    continue
                select = select_matching(parse_condition(shape, "condition"), "sqlite", NOW)
                counted = sa.select(sa.func.count()).select_from(select.subquery())
                if args.plans:
                    compiled = select.compile(conn, compile_kwargs={"literal_binds": True})
                    for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"):
                        print("   ", row[-1])
                best = float("inf")
                members = 0
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    members = int(conn.execute(counted).scalar_one())
                    best = min(best, time.perf_counter() - started)
                print(f"{name:40s} {best:7.2f} s  {members:>9,} members")
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
