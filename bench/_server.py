"""Shared by the HTTP benchmarks: a fresh database, keys, and `cadenza serve` in a child
process (so the load generator and the server do not share a core or a GIL)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from cadenza.clock import SystemClock
from cadenza.governance import KeyKind, create_key
from cadenza.store import Store, upgrade

SECRET = "bench-secret-key-0123456789-0123456789-abcdef"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_db(directory: Path) -> tuple[str, str, str]:
    """A migrated SQLite database with a write and an admin key: (url, write, admin)."""
    url = f"sqlite:///{directory / 'bench.db'}"
    upgrade(url)
    store = Store.create(url)
    with store.begin() as conn:
        _, write = create_key(conn, SECRET, KeyKind.WRITE, "bench", SystemClock().now_ms())
        _, admin = create_key(conn, SECRET, KeyKind.ADMIN, "bench", SystemClock().now_ms())
    store.dispose()
    return url, write, admin


@contextlib.contextmanager
def serving(url: str, directory: Path, workers: int = 1) -> Iterator[str]:
    """Run `python -m cadenza serve` on a free port; yield its base URL."""
    port = free_port()
    env = {**os.environ, "CADENZA_DATABASE_URL": url, "CADENZA_SECRET_KEY": SECRET,
           "CADENZA_PORT": str(port), "CADENZA_LOG_LEVEL": "warning"}
    log = (directory / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cadenza", "serve", "--workers",
                             str(workers)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start; see " + str(directory / "server.log"))
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
