"""Event to outbox row on the live clock, at a steady rate of events, server in its own process.

    uv run python bench/engine_latency.py [--rate 1000] [--seconds 20] [--per-request 1]

A fresh SQLite store with the reference journey live and 100,000 contacts; `cadenza serve`
runs in its own process with the engine and dispatcher inside, as in production. The load
generator sends `signed_up` events at `--rate` events/s, one `track` call per event or
`--per-request` events per `batch` call as Segment's libraries do (open loop: each event is
due at a fixed time and a request leaves when its last event is due; lateness counts); a
reader polls the outbox every millisecond. Latency runs from the moment the event was due to
be sent to the moment its welcome row is visible in the outbox: HTTP, ingestion, the engine
pass and both commits.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from _rawhttp import RawPool
from _server import fresh_db, percentile, serving

from cadenza.clock import SystemClock
from cadenza.store import Store, insert_rows, loads, schema

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


async def load(base: str, write_key: str, rate: int, seconds: float, contacts: int,
               due_at: dict[int, float], per_request: int) -> int:
    host, port = base.removeprefix("http://").split(":")
    pool = RawPool(host, int(port), write_key)
    total = int(rate * seconds)
    errors = 0

    async def one(path: str, body: bytes) -> None:
        nonlocal errors
        if await pool.post(path, body) != 200:
            errors += 1

    tasks = []
    start = time.perf_counter() + 0.2
    pending: list[dict[str, Any]] = []
    for n in range(total):
        due = start + n / rate
        due_at[n] = due
        pending.append({"type": "track", "userId": f"u-{n % contacts + 1}",
                        "event": "signed_up", "properties": {"n": n}})
        if len(pending) < per_request and n < total - 1:
            continue
        # A request leaves when its last event is due (a client batching events waits for
        # them; that wait counts in their latency).
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if per_request == 1:
            body = orjson.dumps({k: v for k, v in pending[0].items() if k != "type"})
            tasks.append(asyncio.create_task(one("/v1/track", body)))
        else:
            body = orjson.dumps({"batch": pending})
            tasks.append(asyncio.create_task(one("/v1/batch", body)))
        pending = []
    await asyncio.gather(*tasks)
    pool.close()
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--per-request", type=int, default=1,
                        help="events per request: 1 sends /v1/track calls, more /v1/batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cadenza-bench-") as tmp:
        directory = Path(tmp)
        url, write, _admin = fresh_db(directory)
        store = Store.create(url)
        setup(store, args.contacts)
        due_at: dict[int, float] = {}
        seen: dict[int, float] = {}
        done = threading.Event()

        def read() -> None:
            last = 0
            while not (done.is_set() and len(seen) >= len(due_at)):
                with store.read() as conn:
                    rows = conn.exec_driver_sql(
                        "SELECT id, payload FROM outbox WHERE id > ? AND node = 'welcome' "
                        "ORDER BY id", (last,)).all()
                now = time.perf_counter()
                for rid, payload in rows:
                    seen[int(loads(payload)["entry"]["n"])] = now
                    last = rid
                if done.is_set() and not rows:
                    done.wait(0.2)
                    if not rows and len(seen) < len(due_at):
                        break
                time.sleep(0.001)

        with serving(url, directory) as base:
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            errors = asyncio.run(load(base, write, args.rate, args.seconds, args.contacts,
                                      due_at, args.per_request))
            deadline = time.monotonic() + 30
            while len(seen) < len(due_at) and time.monotonic() < deadline:
                time.sleep(0.05)
            done.set()
            reader.join(timeout=5)
        store.dispose()
    total = len(due_at)
    latencies = sorted((seen[n] - due_at[n]) * 1000 for n in due_at if n in seen)
    print(f"{total:,} events at {args.rate:,}/s over HTTP, {args.per_request} per request; "
          f"{len(latencies):,} welcome rows "
          f"seen, {total - len(latencies)} missing, {errors} HTTP errors")
    print(f"event to outbox row: p50 {percentile(latencies, 50):.1f} ms, "
          f"p99 {percentile(latencies, 99):.1f} ms, max {latencies[-1]:.1f} ms "
          "(bar: p99 at most 50 ms)")


if __name__ == "__main__":
    main()
