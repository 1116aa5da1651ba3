"""Rule scoring of every contact, and the listener's re-scoring of a few, on the big store.

    uv run python bench/scoring.py [--db PATH] [--touched 1000]

Defines a `fit` model (six attribute rules), an `engagement` model (six event rules with a
property filter, caps per day and per week and a 30-day half-life; `--model-cap` adds a
model-wide cap) and their
`lead` matrix on the shared 1,000,000-contact / 20,000,000-event store (bench/_bigdata.py),
builds the engagement ledger from the log (what saving the model does), scores all contacts
in each (`score_models`, the statements `score_all` runs) twice — a first round, where every
score is new, and a steady-state round — then re-scores `--touched` random contacts as the
real-time listener does. Everything runs in one
transaction that is rolled back: the shared file is left as it was.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _bigdata import NOW, ensure_big

from cadenza.leads.models import RulesModel, parse_model
from cadenza.leads.score_queries import catch_up_ledger
from cadenza.leads.score_service import StoredModel, load_models, score_models
from cadenza.store import Store, schema

FIT: dict[str, Any] = {
    "key": "fit", "name": "Fit", "rules": [
        {"id": "paid-plan", "when": {"attr": "plan", "in": ["pro", "enterprise"]}, "points": 25},
        {"id": "free-plan", "when": {"attr": "plan", "eq": "free"}, "points": -5},
        {"id": "decision-maker", "when": {"attr": "job_title", "in": ["CEO", "CTO",
                                                                     "Head of Growth"]},
         "points": 20},
        {"id": "student", "when": {"attr": "job_title", "eq": "Student"}, "points": -20},
        {"id": "target-industry", "when": {"attr": "industry", "in": ["software",
                                                                      "financial_services"]},
         "points": 10},
        {"id": "high-value", "when": {"attr": "lifetime_value", "gte": 500}, "points": 15}],
    "grades": [{"grade": "A", "min": 40}, {"grade": "B", "min": 15}, {"grade": "C"}]}
ENGAGEMENT: dict[str, Any] = {
    "key": "engagement", "name": "Engagement", "half_life": "30d", "rules": [
        {"id": "pricing-page", "event": "Page Viewed", "where": {"path": "/pricing"},
         "points": 3, "cap": {"points": 15, "per": "1d"}},
        {"id": "pricing", "event": "Pricing Viewed", "points": 5,
         "cap": {"points": 20, "per": "1d"}},
        {"id": "demo", "event": "Demo Requested", "points": 25},
        {"id": "trial", "event": "Trial Started", "points": 15},
        {"id": "clicked", "event": "Email Link Clicked", "points": 2,
         "cap": {"points": 10, "per": "1w"}},
        {"id": "cancelled", "event": "Subscription Cancelled", "points": -30}],
    "grades": [{"grade": "1", "min": 40}, {"grade": "2", "min": 10}, {"grade": "3"}]}
LEAD: dict[str, Any] = {"key": "lead", "kind": "matrix", "rows": "fit",
                        "columns": "engagement"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--touched", type=int, default=1000)
    parser.add_argument("--model-cap", action="store_true",
                        help="give engagement a model-wide cap of 60 points a day too")
    args = parser.parse_args()
    if args.model_cap:
        ENGAGEMENT["cap"] = {"points": 60, "per": "1d"}
    path = ensure_big(args.db)
    store = Store.create(f"sqlite:///{path}")
    with store.engine.connect() as conn:
        for pragma in ("PRAGMA cache_size=-2000000", "PRAGMA temp_store=MEMORY"):
            conn.exec_driver_sql(pragma)
        conn.commit()
        trans = conn.begin()
        try:
            columns = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(score_ledger)")]
            if "period" not in columns:  # a store built before the ledger's final layout
                conn.exec_driver_sql("DROP TABLE score_ledger")
                schema.score_ledger.create(conn)
            for document in (FIT, ENGAGEMENT, LEAD):
                model = parse_model(document)
                conn.execute(sa.insert(schema.score_models).values(
                    key=model.key, name=model.name, kind=model.kind,
                    definition=model.to_json(), status="active", created_at=NOW,
                    updated_at=NOW))
            models = load_models(conn)
            for stored in models:
                if isinstance(stored.model, RulesModel) and stored.model.event_rules:
                    started = time.perf_counter()
                    added = catch_up_ledger(conn, stored.model, stored.id, NOW)
                    print(f"{stored.key}: ledger built from the whole log ({added} scored "
                          f"events; once, when the model is saved): "
                          f"{time.perf_counter() - started:.2f} s")
            total = 0.0
            for stored in models:
                total += _timed(conn, [stored], None)
            print(f"all three models, every contact: {total:.2f} s")
            total = sum(_timed(conn, [stored], None) for stored in models)
            print(f"again, nothing changed since: {total:.2f} s")
            rng = random.Random(6)
            touched = rng.sample(range(1, 1_000_001), args.touched)
            _timed(conn, models, touched)
            one = rng.sample(range(1, 1_000_001), 1)
            _timed(conn, models, one)
            grades = conn.exec_driver_sql(
                "SELECT m.key, s.grade, count(*) FROM contact_scores s JOIN score_models m "
                "ON m.id = s.model_id GROUP BY m.key, s.grade ORDER BY m.key, s.grade").all()
            print("grades:", ", ".join(f"{k}/{g}: {n}" for k, g, n in grades))
        finally:
            trans.rollback()
    store.dispose()


def _timed(conn: sa.Connection, models: list[StoredModel], ids: list[int] | None) -> float:
    started = time.perf_counter()
    outcomes = score_models(conn, models, NOW, ids)
    seconds = time.perf_counter() - started
    scope = "every contact" if ids is None else f"{len(ids)} touched contacts"
    names = ", ".join(f"{o.model} ({o.scored} scored)" for o in outcomes)
    print(f"{names}, {scope}: {seconds:.2f} s")
    return seconds


if __name__ == "__main__":
    main()
