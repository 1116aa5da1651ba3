"""A tick's cost follows the due enrollments, not the waiting ones; memory with many waiting.

    uv run python bench/engine_tick.py [--waiting 10000000] [--due 10000] [--db PATH]

Builds (untimed) 1,000,000 contacts and `--waiting` enrollments of the reference journey
(spread over copies of the journey so that one contact can wait in several), all waiting at
the 2-day wait with a wake time in the future, then makes `--due` of them due. Times a tick
over those due rows, and the same tick in a store where only `--due` enrollments exist at all.
Prints both, their ratio (bar: at most 2), and the engine process's peak resident memory
(bar: 500 MB with 10,000,000 waiting).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cadenza.clock import FakeClock
from cadenza.engine import Engine, partition
from cadenza.journeys import compile_definition, load_journey
from cadenza.store import Store, dumps, insert_rows, schema, upgrade

DAY = 86_400_000
REFERENCE = (Path(__file__).parents[1] / "docs" / "examples" / "reference-journey.yaml"
             ).read_text(encoding="utf-8")
CHUNK = 200_000


def build(path: Path, waiting: int, due: int, contacts: int) -> Store:
    """A store with `waiting` enrollments at the wait step, `due` of them due now."""
    url = f"sqlite:///{path}"
    upgrade(url)
    store = Store.create(url)
    clock = FakeClock()
    now = clock.now_ms()
    base = load_journey(REFERENCE)
    copies = max(1, -(-waiting // contacts))
    with store.begin() as conn:
        for start in range(0, contacts, CHUNK):
            insert_rows(conn, schema.contacts, ("id", "attributes", "created_at", "updated_at"),
                        [(cid, '{"plan": "pro"}', now, now)
                         for cid in range(start + 1, min(contacts, start + CHUNK) + 1)])
        versions = []
        for copy in range(copies):
            definition = {**base, "journey": f"reference-{copy}"}
            compile_definition(definition)
            jid = conn.execute(schema.journeys.insert().values(
                key=definition["journey"], name="bench", status="live", created_at=now,
                updated_at=now).returning(schema.journeys.c.id)).scalar_one()
            vid = conn.execute(schema.journey_versions.insert().values(
                journey_id=jid, number=1, status="published", definition=definition,
                content_hash="bench", created_at=now, published_at=now,
            ).returning(schema.journey_versions.c.id)).scalar_one()
            conn.execute(schema.journeys.update().where(schema.journeys.c.id == jid)
                         .values(live_version_id=vid))
            versions.append((jid, vid))
    context = dumps({"entry": {}})
    made = 0
    while made < waiting:
        with store.begin() as conn:
            rows = []
            for n in range(made, min(waiting, made + CHUNK)):
                jid, vid = versions[n // contacts]
                cid = n % contacts + 1
                wake = now if n < due else now + 2 * DAY
                rows.append((n + 1, jid, vid, cid, partition(cid), False, "settle", "waiting",
                             wake, None, None, 2, context, 0, None, now, now))
            insert_rows(conn, schema.enrollments, (
                "id", "journey_id", "version_id", "contact_id", "part", "shadow", "node",
                "status", "wake_at", "wait_event", "wait_key", "seq", "context", "active_slot",
                "entry_key", "entered_at", "updated_at"), rows)
            made += len(rows)
        print(f"  {made:,} / {waiting:,} enrollments", end="\r", flush=True)
    print()
    return store


def time_tick(store: Store, due: int) -> float:
    clock = FakeClock()
    engine = Engine(store, clock, batch_size=due)
    engine.start()
    started = time.perf_counter()
    report = engine.tick(due)
    seconds = time.perf_counter() - started
    assert report.runs == due, report
    return seconds


def tick_in_fresh_process(path: Path, due: int) -> tuple[float, float]:
    """(tick seconds, peak resident MB) of a new process that opens the store and ticks:
    the memory of building the data is not counted."""
    out = subprocess.run([sys.executable, __file__, "--tick-only", str(path), "--due",
                          str(due)], check=True, capture_output=True, text=True).stdout
    seconds, rss = out.split()
    return float(seconds), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, default=10_000_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--tick-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tick_only is not None:
        store = Store.create(f"sqlite:///{args.tick_only}")
        seconds = time_tick(store, args.due)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(seconds, rss_mb)
        return
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as scratch:
        small_path = Path(scratch) / "small.db"
        build(small_path, args.due, args.due, args.contacts).dispose()
        small_s, small_mb = tick_in_fresh_process(small_path, args.due)
        big_path = args.db or Path(scratch) / "big.db"
        big_path.unlink(missing_ok=True)
        print(f"building {args.waiting:,} waiting enrollments (untimed)")
        build(big_path, args.waiting, args.due, args.contacts).dispose()
        big_s, big_mb = tick_in_fresh_process(big_path, args.due)
    print(f"tick over {args.due:,} due, {args.due:,} waiting in all: "
          f"{small_s * 1000:8.1f} ms (peak RSS {small_mb:,.0f} MB)")
    print(f"tick over {args.due:,} due, {args.waiting:,} waiting in all: "
          f"{big_s * 1000:8.1f} ms (peak RSS {big_mb:,.0f} MB)")
    print(f"ratio: {big_s / small_s:.2f} (bar: at most 2)")
    print(f"engine process with {args.waiting:,} waiting: peak resident {big_mb:,.0f} MB "
          "(bar: 500 MB)")


if __name__ == "__main__":
    main()
