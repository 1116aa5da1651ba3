"""Predictive scoring at scale: train on 1,000,000 contacts (20,000,000 events) and score
them all, on SQLite.

    uv run python bench/predictive.py [--db PATH] [--fresh]

Works on a copy of the shared big store (`bench/_bigdata.py`; the copy is
bench/out/predictive.db, made once, `--fresh` remakes it) because scoring writes a million
rows. Prints seconds per stage, the holdout AUC, and the figures against the bars of issue 6
(training <= 60 s, scoring <= 10 s).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bigdata import NOW, ensure_big
from cadenza.clock import FakeClock
from cadenza.leads.predictive_service import PredictiveService
from cadenza.store import Store, schema

MODEL = {
    "key": "bench-buyers", "name": "Orders within 30 days",
    "outcome": {"event": "Order Completed"}, "horizon_days": 30,
    "features": [
        {"attr": "plan", "type": "enum"},
        {"attr": "industry", "type": "enum"},
        {"attr": "lead_source", "type": "enum"},
        {"attr": "lifetime_value", "type": "number"},
        {"attr": "signup_date", "type": "date"},
        {"count": "Pricing Viewed", "windows": [7, 30, 90]},
        {"count": "Demo Requested", "windows": [30, 90]},
        {"count": "Trial Started", "windows": [90]},
        {"count": "Added To Cart", "windows": [30, 90]},
        {"count": "Feature Used", "windows": [7, 30]},
        {"days_since": "Logged In", "cap": 90},
        {"sum": "Order Completed", "property": "revenue", "windows": [90]},
    ],
}


def working_copy(fresh: bool) -> Path:
    """A private copy of the big store (scoring writes to it)."""
    source = ensure_big()
    target = source.with_name("predictive.db")
    if fresh or not target.exists():
        for stale in (target, target.with_name(target.name + "-wal"),
                      target.with_name(target.name + "-shm")):
            stale.unlink(missing_ok=True)
        started = time.perf_counter()
        shutil.copyfile(source, target)
        print(f"copied {source.name} -> {target.name} in {time.perf_counter() - started:.0f} s")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=None, help="Use this store as it is.")
    parser.add_argument("--fresh", action="store_true", help="Remake the working copy.")
    args = parser.parse_args()
    path = args.db or working_copy(args.fresh)
    store = Store.create(f"sqlite:///{path}")
    clock = FakeClock(NOW)
    service = PredictiveService(store, clock)
    service.define(MODEL)
    with store.begin() as conn:  # a clean slate: the first round below writes every row
        model_id = conn.execute(sa.select(schema.score_models.c.id).where(
            schema.score_models.c.key == MODEL["key"])).scalar_one()
        conn.execute(sa.delete(schema.contact_scores).where(
            schema.contact_scores.c.model_id == model_id))
        conn.execute(sa.delete(schema.contact_changes))

    started = time.perf_counter()
    version = service.train(MODEL["key"])
    train_s = time.perf_counter() - started
    m = version.metrics
    print(f"training: {train_s:.1f} s for {m['rows']['total']:,} rows (features "
          f"{m['timings']['features_s']:.1f} s, fit+report {m['timings']['fit_s']:.1f} s); "
          f"holdout AUC {m['auc']:.4f}, Brier {m['brier']:.4f}, base rate "
          f"{m['base_rate']:.2%}, mean predicted {m['mean_predicted']:.2%}, "
          f"top-decile lift {m['lift'][0]['lift']:.2f}x, {len(m['importances'])} columns")
    service.promote(MODEL["key"], version.version, force=True, note="benchmark")

    for label in ("scoring (first: every row new)", "scoring (again: nothing moved)"):
        started = time.perf_counter()
        run = service.score(MODEL["key"])
        took = time.perf_counter() - started
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
        print(f"{label}: {took:.1f} s for {run.contacts:,} contacts ({stages}); "
              f"{run.written:,} rows written, {run.changed:,} queued for segments and lifecycle")

    started = time.perf_counter()
    shown = service.explain(MODEL["key"], 4242)
    print(f"explain one contact on demand: {1000 * (time.perf_counter() - started):.0f} ms "
          f"(top feature {shown['features'][0]['feature']}, "
          f"effect {shown['features'][0]['effect']:+.3f})")
    print(f"bars: training {'OK' if train_s <= 60 else 'OVER'} (<= 60 s), scoring see above "
          "(<= 10 s)")
    store.dispose()


if __name__ == "__main__":
    main()
