"""Event to outbox row on the live clock, at a steady rate of events.

    uv run python bench/engine_latency.py [--rate 1000] [--seconds 20]

A fresh SQLite store with the reference journey live and 100,000 contacts. The engine runs
on its own thread as in `cadenza serve` (woken by each ingestion commit). The load generator
ingests one `signed_up` event per call at `--rate` calls/s (open loop: each call is due at a
fixed time, lateness counts); a reader thread polls the outbox every millisecond. Latency is
from the moment the event was due to be sent to the moment its welcome row is visible in the
outbox — ingestion, the engine pass and both commits included.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from cadenza.clock import SystemClock
from cadenza.engine import EngineRunner
from cadenza.events import EventService
from cadenza.store import Store, insert_rows, loads, schema, upgrade

REFERENCE = (Path(__file__).parents[1] / "docs" / "examples" / "reference-journey.yaml"
             ).read_text(encoding="utf-8")


def setup(store: Store, contacts: int) -> None:
    from cadenza.contacts import FieldSpec, declare_field
    from cadenza.journeys import JourneyService, load_journey

    now = SystemClock().now_ms()
    with store.begin() as conn:
        insert_rows(conn, schema.contacts, ("id", "user_id", "attributes", "created_at",
                                            "updated_at"),
                    [(cid, f"u-{cid}", '{"plan": "pro"}', now, now)
                     for cid in range(1, contacts + 1)])
        insert_rows(conn, schema.identities, ("kind", "value", "contact_id", "source",
                                              "created_at"),
                    [("user_id", f"u-{cid}", cid, "bench", now)
                     for cid in range(1, contacts + 1)])
        insert_rows(conn, schema.templates, ("key", "channel", "subject", "body", "created_at",
                                             "updated_at"),
                    [(key, "log", key, "hello", now, now)
                     for key in ("welcome", "pro-tips", "basics", "last-chance")])
        declare_field(conn, FieldSpec(name="plan", type="string"), now)
    journeys = JourneyService(store, SystemClock())
    journeys.save_draft(load_journey(REFERENCE))
    journeys.publish("reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'latency.db'}"
        upgrade(url)
        store = Store.create(url)
        setup(store, args.contacts)
        clock = SystemClock()
        events = EventService(store, clock)
        runner = EngineRunner(store, clock)
        events.after_commit.append(runner.wake)
        runner.start()
        total = int(args.rate * args.seconds)
        due_at: dict[int, float] = {}
        seen: dict[int, float] = {}
        done = threading.Event()

        def read() -> None:
            last = 0
            while not done.is_set() or len(seen) < len(due_at):
                with store.read() as conn:
                    rows = conn.exec_driver_sql(
                        "SELECT id, payload FROM outbox WHERE id > ? AND node = 'welcome' "
                        "ORDER BY id", (last,)).all()
                now = time.perf_counter()
                for rid, payload in rows:
                    seen[int(loads(payload)["entry"]["n"])] = now
                    last = rid
                if done.is_set() and len(seen) >= len(due_at):
                    break
                time.sleep(0.001)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        start = time.perf_counter() + 0.5
        for n in range(total):
            due = start + n / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            due_at[n] = due
            events.ingest([{"type": "track", "userId": f"u-{n % args.contacts + 1}",
                            "event": "signed_up", "properties": {"n": n}}])
        done.set()
        reader.join(timeout=30)
        runner.stop()
        store.dispose()
    latencies = sorted((seen[n] - due_at[n]) * 1000 for n in due_at if n in seen)
    missing = total - len(latencies)
    q = statistics.quantiles(latencies, n=100)
    print(f"{total:,} events at {args.rate:,}/s; {len(latencies):,} welcome rows seen, "
          f"{missing} missing")
    print(f"event to outbox row: p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, "
          f"max {latencies[-1]:.1f} ms (bar: p99 at most 50 ms)")


if __name__ == "__main__":
    main()
