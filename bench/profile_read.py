"""Contact profile reads with millions of events in the store.

    uv run python bench/profile_read.py [--events 10000000] [--contacts 200000] [--db PATH]

Builds (once, reused when --db exists) a SQLite store with CONTACTS contacts and EVENTS events
(heavy-tailed: a few contacts have tens of thousands of events), written straight through the
driver for speed. Then reads profiles of random contacts — in process through
`ContactService.profile`, and over HTTP (`GET /api/contacts/{id}`, server in its own process) —
and prints p50/p99.
"""

from __future__ import annotations

import argparse
import gc
import random
import sqlite3
import time
from pathlib import Path

import httpx
import orjson
from _server import SECRET, percentile, serving
from rich.progress import Progress

from cadenza.clock import SystemClock
from cadenza.contacts import ContactService
from cadenza.governance import KeyKind, create_key
from cadenza.store import Store, upgrade

NAMES = ["Page Viewed", "Product Viewed", "Added To Cart", "Feature Used", "Logged In",
         "Email Opened", "Email Link Clicked", "Order Completed"]
NOW = 1_795_000_000_000


def build(path: Path, contacts: int, events: int, seed: int = 3) -> None:
    """Fill a fresh store; events per contact follow a Pareto-like distribution."""
    url = f"sqlite:///{path}"
    upgrade(url)
    rng = random.Random(seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO contacts (id, email, user_id, attributes, timezone, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(i, f"user{i}@example.com", f"u{i}", '{"plan": "pro", "employees": 40}',
          "Europe/Paris", NOW, NOW) for i in range(1, contacts + 1)])
    db.executemany(
        "INSERT INTO identities (kind, value, contact_id, source, created_at) "
        "VALUES (?, ?, ?, 'bench', ?)",
        [(kind, f"{prefix}{i}", i, NOW) for i in range(1, contacts + 1)
         for kind, prefix in (("user_id", "u"), ("email", "user"))])
    db.executemany(
        "INSERT INTO consents (contact_id, channel, purpose, status, source, updated_at) "
        "VALUES (?, 'email', 'marketing', 'opted_in', 'bench', ?)",
        [(i, NOW) for i in range(1, contacts + 1)])
    db.execute("COMMIT")
    weights = [1 / (i ** 0.8) for i in range(1, contacts + 1)]
    chunk = 200_000
    props = orjson.dumps({"path": "/pricing", "value": 12.5}).decode()
    context = orjson.dumps({"ip": "203.0.113.7", "library": {"name": "analytics.js"}}).decode()
    with Progress() as progress:
        task = progress.add_task("events", total=events)
        for start in range(0, events, chunk):
            owners = rng.choices(range(1, contacts + 1), weights=weights,
                                 k=min(chunk, events - start))
            rows = [(f"m{start + n}", owner, "track", rng.choice(NAMES), props, context, "web",
                     NOW - rng.randrange(90 * 86_400_000), NOW)
                    for n, owner in enumerate(owners)]
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO events (message_id, contact_id, type, name, properties, context, "
                "source, timestamp, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
            progress.update(task, completed=start + len(rows))
    db.execute("ANALYZE")
    db.close()


def settle(path: Path) -> None:
    """Fold the write-ahead log into the database, as a running server's checkpointer does."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=5_000)
    parser.add_argument("--db", type=Path, default=Path("bench/out/profile.db"))
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    if not args.db.exists():
        build(args.db, args.contacts, args.events)
    settle(args.db)
    url = f"sqlite:///{args.db.resolve()}"
    store = Store.create(url)
    service = ContactService(store, SystemClock())
    total = service.counts()
    rng = random.Random(11)
    ids = [rng.randrange(1, total["contacts"] + 1) for _ in range(args.reads)]
    ids[:50] = list(range(1, 51))  # the heaviest contacts are read too
    gc.freeze()
    for contact_id in ids[:200]:
        service.profile(contact_id)  # warm the page cache
    timings = []
    for contact_id in ids:
        started = time.perf_counter()
        service.profile(contact_id)
        timings.append((time.perf_counter() - started) * 1000)
    print(f"profile read, in process, {total['events']:,} events / {total['contacts']:,} "
          f"contacts: p50 {percentile(timings, 50):.2f} ms, p99 {percentile(timings, 99):.2f} ms")
    with store.begin() as conn:
        _, admin = create_key(conn, SECRET, KeyKind.ADMIN, "bench", SystemClock().now_ms())
    store.dispose()
    with serving(url, args.db.parent.resolve()) as base, httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin}"}) as client:
        for contact_id in ids[:200]:
            client.get(f"/api/contacts/{contact_id}")
        timings = []
        for contact_id in ids[:2000]:
            started = time.perf_counter()
            response = client.get(f"/api/contacts/{contact_id}")
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    print(f"profile read, HTTP GET /api/contacts/{{id}}: p50 {percentile(timings, 50):.2f} ms, "
          f"p99 {percentile(timings, 99):.2f} ms")


if __name__ == "__main__":
    main()
