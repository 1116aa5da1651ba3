"""Other readers that ride on the engine's passes, and periodic jobs between them.

A `Listener` follows the event log (after its own cursors, `cadenza.store.cursors`) and the
contacts queued for it (`cadenza.store.changes`) for the partitions this worker leases, inside
the engine's pass transaction: fenced by the same lease, committed with the engine's effects,
so a crash repeats nothing and loses nothing. Listeners run before the engine applies the
pass's events, so the events they write (a segment entered, a stage changed, a score
threshold crossed) start journeys in the same pass. Segments (real-time membership) and lead scoring
(event points) are listeners.

A `Job` runs every `interval_ms` on one worker at a time (the full segment recompute with
its drift report, score decay, scheduled retraining, routing SLAs). Its last run time is a
row `job:<name>` in `engine_cursors`; a worker claims a due run with one conditional update,
so two workers never run the same job at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from cadenza.store import Store, insert_rows, schema

log = logging.getLogger("cadenza.engine")


class Listener(Protocol):
    """Reads events and queued contact changes in the engine's pass."""

    name: str

    def apply(self, conn: Connection, parts: Sequence[int], now: int, limit: int) -> int:
        """Apply up to `limit` new events (and queued changes) of `parts`; return how many
        were read (a full batch makes the engine go round again at once)."""
        ...


class Job(Protocol):
    """Periodic work outside the pass transaction."""

    name: str
    interval_ms: int

    def run(self, store: Store, now: int) -> Any:
        """Do one round (it opens its own transactions)."""
        ...


def claim_job(store: Store, job: Job, now: int) -> bool:
    """Whether this worker runs `job` now: its last run is `interval_ms` old and this worker
    moved the mark first."""
    name = f"job:{job.name}"
    with store.begin() as conn:
        insert_rows(conn, schema.engine_cursors, ("name", "position", "updated_at"),
                    [(name, 0, now)], ignore_conflicts_on=("name",))
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        moved = conn.exec_driver_sql(
            f"UPDATE engine_cursors SET position = {mark}, updated_at = {mark} "
            f"WHERE name = {mark} AND position <= {mark}",
            (now, now, name, now - job.interval_ms)).rowcount
    return bool(moved)


def run_due_jobs(store: Store, jobs: Sequence[Job], now: int) -> list[str]:
    """Run every due job once; return the names of those that ran. A failing job is logged
    and retried at its next interval; it never stops the engine."""
    ran = []
    for job in jobs:
        if job.interval_ms <= 0 or not claim_job(store, job, now):
            continue
        try:
            job.run(store, now)
        except Exception:
            log.exception("job %s failed; it runs again in %d ms", job.name, job.interval_ms)
        ran.append(job.name)
    return ran


def listeners_from_settings(settings: Any) -> tuple[list[Listener], list[Job]]:
    """The listeners and jobs of every domain that has some, in the order a pass runs them:
    scores, then lifecycle rules (which read scores), then segments (which read both)."""
    from cadenza.leads import lead_listeners
    from cadenza.segments import segment_listeners

    listeners: list[Listener] = []
    jobs: list[Job] = []
    for found_listeners, found_jobs in (lead_listeners(settings), segment_listeners(settings)):
        listeners.extend(found_listeners)
        jobs.extend(found_jobs)
    return listeners, jobs
