"""Sustained ingestion through the in-process `EventService` (no HTTP, no JSON decoding).

    uv run python bench/ingest_service.py [--events 1000000] [--batch 5000] [--db PATH]

Creates a fresh migrated SQLite file (in a temporary directory unless `--db` is given),
pre-generates the messages (mostly track and page from a mix of known and anonymous visitors,
about 5% identify with an email), then times `EventService.ingest` batch by batch and prints
events/s sustained over the whole run with the per-batch p50/p99.

The traffic follows the way real streams look: a visitor is anonymous (page views, client-side
tracks) until their first identify, which carries both ids and adopts the anonymous contact;
after that, client-side events carry both ids and server-side ones the user id only. Activity
is skewed (a few visitors send many events). Message ids are random UUIDs, as client
libraries send them. No identify joins two existing contacts, so no merges happen: this
measures the steady path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cadenza.clock import SystemClock
from cadenza.events import EventService
from cadenza.store import Store, upgrade

TRACKS = {
    "Feature Used": lambda r: {"feature": r.choice(FEATURES), "duration_s": r.randrange(5, 900)},
    "Logged In": lambda r: {"method": r.choice(["password", "google", "sso"])},
    "Product Viewed": lambda r: {"sku": f"sku-{r.randrange(800)}",
                                 "price": round(r.uniform(5, 400), 2), "currency": "USD"},
    "Added To Cart": lambda r: {"sku": f"sku-{r.randrange(800)}", "quantity": r.randrange(1, 4)},
    "Order Completed": lambda r: {"order_id": f"o-{r.getrandbits(40):x}",
                                  "revenue": round(r.uniform(20, 900), 2), "currency": "USD"},
    "Project Created": lambda r: {"template": r.choice(["blank", "onboarding", "win-back"])},
}
TRACK_WEIGHTS = [40, 20, 15, 10, 3, 12]
FEATURES = ["Journey Builder", "Segments", "Email Editor", "Reports", "A/B Tests", "Forms"]
PATHS = ["/", "/pricing", "/features", "/blog/journey-basics", "/blog/consent-101",
         "/docs/getting-started", "/docs/api", "/customers", "/integrations/salesforce"]
REFERRERS = ["https://www.google.com/", "https://www.linkedin.com/", "", "",
             "https://news.ycombinator.com/", "https://www.bing.com/"]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
]
DOMAINS = ["gmail.com", "outlook.com", "northwind-labs.io", "bluepeak.co", "veltrix.com",
           "harbor-health.de", "quorra.ai", "fernhill.fr"]
PLANS = ["free", "starter", "pro", "enterprise"]


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")[
        :-6] + "Z"


def make_messages(total: int, now_ms: int, seed: int = 1, people: int = 150_000
                  ) -> list[dict[str, Any]]:
    """`total` Segment messages in time order over the six hours before `now_ms`."""
    rng = random.Random(seed)
    identified = bytearray(people)
    names = list(TRACKS)
    start = now_ms - 6 * 3600 * 1000
    step = 6 * 3600 * 1000 / total
    messages: list[dict[str, Any]] = []
    for i in range(total):
        # Skewed activity: low person numbers are the power users.
        person = int(people * rng.random() ** 2.2)
        anon = f"anon-{person:07d}-{seed}"
        user = f"user-{person:07d}"
        context: dict[str, Any] = {"ip": f"198.51.100.{person % 250 + 1}",
                                   "userAgent": AGENTS[person % len(AGENTS)],
                                   "library": {"name": "analytics.js", "version": "5.2.0"}}
        # Random UUIDs, as Segment and RudderStack libraries send (sequential ids would make
        # the unique index on message_id look far cheaper than it is).
        message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        base: dict[str, Any] = {"messageId": message_id,
                                "timestamp": _iso(int(start + i * step)), "context": context}
        roll = rng.random()
        if roll < 0.05:
            identified[person] = 1
            traits: dict[str, Any] = {"email": f"person{person}@{DOMAINS[person % 8]}",
                                      "firstName": "Alex", "lastName": f"Doe{person % 97}",
                                      "plan": PLANS[rng.randrange(4)]}
            messages.append({**base, "type": "identify", "userId": user, "anonymousId": anon,
                             "traits": traits})
        elif roll < 0.40:
            path = rng.choice(PATHS)
            context["page"] = {"path": path, "url": f"https://cadenza.example{path}",
                               "referrer": rng.choice(REFERRERS)}
            ids = {"userId": user, "anonymousId": anon} if identified[person] else {
                "anonymousId": anon}
            messages.append({**base, "type": "page", "name": path, **ids,
                             "properties": {"path": path, "title": path.strip("/") or "Home"}})
        else:
            event = rng.choices(names, TRACK_WEIGHTS)[0]
            if identified[person]:
                ids = ({"userId": user} if rng.random() < 0.5
                       else {"userId": user, "anonymousId": anon})
            else:
                ids = {"anonymousId": anon}
            messages.append({**base, "type": "track", "event": event, **ids,
                             "properties": TRACKS[event](rng)})
    return messages


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run(db: Path, total: int, batch: int) -> None:
    url = f"sqlite:///{db}"
    upgrade(url)
    store = Store.create(url)
    clock = SystemClock()
    service = EventService(store, clock)
    started = time.perf_counter()
    messages = make_messages(total, clock.now_ms())
    print(f"generated {len(messages):,} messages in {time.perf_counter() - started:.1f}s")
    # The pre-generated corpus is millions of objects that a server would never hold at once;
    # keep the cyclic GC from walking them on every full collection (an artefact of the
    # benchmark, not a cost of ingestion).
    gc.freeze()
    # Warm-up on a throwaway id range (imports, first connection, statement caches).
    service.ingest(make_messages(2_000, clock.now_ms(), seed=99, people=1_000), source="bench")
    timings: list[float] = []
    accepted = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    for offset in range(0, len(messages), batch):
        chunk = messages[offset : offset + batch]
        t0 = time.perf_counter()
        result = service.ingest(chunk, source="bench")
        timings.append((time.perf_counter() - t0) * 1000)
        if result.rejected or result.duplicates:
            raise RuntimeError(f"batch at {offset}: {result.rejected[:3]} "
                               f"{len(result.duplicates)} duplicates")
        accepted += result.accepted
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    store.dispose()
    half = len(timings) // 2
    first = sum(timings[:half]) / 1000
    second = sum(timings[half:]) / 1000
    size = db.stat().st_size / 2**20
    print(f"in-process ingestion: {accepted:,} events in {elapsed:.1f}s = "
          f"{accepted / elapsed:,.0f} events/s sustained (batch {batch}; "
          f"per batch p50 {percentile(timings, 50):.0f} ms, p99 {percentile(timings, 99):.0f} ms; "
          f"first half {half * batch / first:,.0f}/s, second half "
          f"{(accepted - half * batch) / second:,.0f}/s; database {size:,.0f} MB)")
    # On a shared machine wall time includes waiting for a core; CPU time does not.
    print(f"process CPU time {cpu:.1f}s = {accepted / cpu:,.0f} events per CPU-second "
          f"({cpu / accepted * 1e6:.1f} us/event)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--db", type=Path, help="SQLite file to create (default: a temp dir)")
    args = parser.parse_args()
    if args.db is not None:
        if args.db.exists():
            parser.error(f"{args.db} exists; the benchmark needs a fresh file")
        run(args.db, args.events, args.batch)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp) / "bench.db", args.events, args.batch)


if __name__ == "__main__":
    main()
