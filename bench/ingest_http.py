"""Sustained ingestion through the HTTP `batch` endpoint (server in its own process).

    uv run python bench/ingest_http.py [--events 400000] [--batch 200] [--concurrency 8]

Prints events/s over the whole run and the request latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
from _server import fresh_db, percentile, serving

EVENTS = ["Page Viewed", "Product Viewed", "Added To Cart", "Feature Used", "Logged In"]


def make_bodies(total: int, batch: int, seed: int = 1) -> list[bytes]:
    """Pre-encoded batch bodies: mostly track/page, a few identify, known and anonymous ids."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(total // batch):
        messages = []
        for _ in range(batch):
            user = rng.randrange(200_000)
            roll = rng.random()
            base = {"messageId": str(uuid.uuid4()), "timestamp": "2026-11-20T10:00:00Z",
                    "context": {"ip": "203.0.113.9", "library": {"name": "bench"}}}
            if roll < 0.05:
                messages.append({**base, "type": "identify", "userId": f"u{user}",
                                 "traits": {"email": f"user{user}@example.com", "plan": "pro"}})
            elif roll < 0.35:
                messages.append({**base, "type": "page", "anonymousId": f"a{user}",
                                 "name": "Pricing", "properties": {"path": "/pricing"}})
            else:
                messages.append({**base, "type": "track", "userId": f"u{user}",
                                 "event": rng.choice(EVENTS),
                                 "properties": {"sku": f"sku-{rng.randrange(500)}",
                                                "price": round(rng.random() * 100, 2)}})
        bodies.append(orjson.dumps({"batch": messages, "sentAt": "2026-11-20T10:00:00Z"}))
    return bodies


async def run(base: str, write_key: str, bodies: list[bytes], concurrency: int
              ) -> tuple[float, list[float]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, auth=(write_key, ""), limits=limits,
                                 timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/v1/batch", content=body,
                                             headers={"content-type": "application/json"})
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200 or response.json()["rejected"]:
                    raise RuntimeError(response.text[:500])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    args = parser.parse_args()
    bodies = make_bodies(args.events, args.batch)
    size = sum(len(b) for b in bodies) / len(bodies)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        url, write, _admin = fresh_db(directory)
        with serving(url, directory, args.workers) as base:
            # Warm up (imports, first connections), not counted.
            asyncio.run(run(base, write, make_bodies(2_000, args.batch, seed=99), 2))
            elapsed, latencies = asyncio.run(run(base, write, bodies, args.concurrency))
    total = len(bodies) * args.batch
    print(f"HTTP batch ingestion: {total:,} events in {elapsed:.1f}s = "
          f"{total / elapsed:,.0f} events/s sustained "
          f"(batch {args.batch} events, {size / 1024:.0f} KB; concurrency {args.concurrency}; "
          f"{args.workers} server process(es); "
          f"request p50 {percentile(latencies, 50):.1f} ms, "
          f"p99 {percentile(latencies, 99):.1f} ms)")


if __name__ == "__main__":
    main()
