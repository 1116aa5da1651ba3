"""Single `track` calls at a fixed arrival rate (open loop), server in its own process.

    uv run python bench/track_latency.py [--rate 500] [--seconds 20]

Requests are sent on schedule whether or not earlier ones have answered (no coordinated
omission); latency is measured from the scheduled send time to the response.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from _rawhttp import RawPool
from _server import fresh_db, percentile, serving


async def run(base: str, write_key: str, rate: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    host, port = base.removeprefix("http://").split(":")
    pool = RawPool(host, int(port), write_key)
    bodies = [orjson.dumps({"userId": f"u{n % 5000}", "event": "Button Clicked",
                            "messageId": str(uuid.uuid4()),
                            "properties": {"button": "signup", "n": n}})
              for n in range(int(rate * seconds))]

    async def one(scheduled: float, body: bytes) -> None:
        nonlocal errors
        status = await pool.post("/v1/track", body)
        latencies.append((time.perf_counter() - scheduled) * 1000)
        if status != 200:
            errors += 1

    tasks = []
    start = time.perf_counter()
    for number, body in enumerate(bodies):
        scheduled = start + number / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, body)))
    await asyncio.gather(*tasks)
    pool.close()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        url, write, _admin = fresh_db(directory)
        with serving(url, directory) as base:
            asyncio.run(run(base, write, 100, 2))  # warm-up, not counted
            latencies, errors = asyncio.run(run(base, write, args.rate, args.seconds))
    print(f"single track at {args.rate} req/s for {args.seconds:.0f}s: "
          f"p50 {percentile(latencies, 50):.2f} ms, p99 {percentile(latencies, 99):.2f} ms, "
          f"max {max(latencies):.1f} ms, {errors} errors of {len(latencies)}")


if __name__ == "__main__":
    main()
