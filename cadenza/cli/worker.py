"""`cadenza worker`: the journey engine and the outbox dispatcher without the API."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from cadenza.cli.common import console, load_settings, open_store


def worker(
    dispatch: Annotated[bool, typer.Option("--dispatch/--no-dispatch",
                                           help="Also deliver the outbox.")] = True,
) -> None:
    """Run the engine (and the dispatcher) until interrupted: on PostgreSQL, run as many
    as you like; they share the contacts by leasing partitions."""
    from cadenza.clock import SystemClock
    from cadenza.engine import run_worker

    settings = load_settings()
    store = open_store(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(store, SystemClock(), settings, stop, dispatch=dispatch,
                         started=lambda r: console.print(
                             f"Worker {r.engine.owner} running; Ctrl+C stops."))

    asyncio.run(main())
    console.print("Stopped; partitions released.")
