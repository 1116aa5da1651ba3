"""The engine: passes over due enrollments and new events, each in one transaction.

    tick            due rows (wake_at <= now) of the leased partitions, in wake order
    process_events  events after the partitions' cursors: entries, waits, goals
    scan_dates      date-relative and recurring-schedule entries whose moment has come
    enroll          API entries

The clock is injected; nothing here reads the wall clock. `run_once` does one round of all
of them; `run_forever` repeats it, sleeping until woken (an ingest commit sets `wake`) or
until the next due row, never longer than `idle_ms`.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.engine.batch import PARTITIONS, RUN_COLUMNS, Batch, partition, run_from_row
from cadenza.engine.catalog import CatalogLoader, Compile, Target
from cadenza.engine.events import apply_events, ensure_cursors
from cadenza.engine.leases import LeaseLost, Leases
from cadenza.engine.listeners import Job, Listener, run_due_jobs
from cadenza.engine.schedule import scan_entries
from cadenza.errors import Conflict, NotFound, StoreBusy, ValidationFailed
from cadenza.journeys.spec import ApiTrigger
from cadenza.segments import Facts, load_facts
from cadenza.store import Store, fetch, select_in

log = logging.getLogger("cadenza.engine")
T = TypeVar("T")


@dataclass
class PassReport:
    """What one pass did."""

    steps: int = 0
    runs: int = 0
    entered: int = 0
    outbox: int = 0
    events: int = 0
    listened: int = 0
    """Events and queued changes read by the listeners (segments, scores)."""
    due: int = 0

    def __iadd__(self, other: PassReport) -> PassReport:
        self.steps += other.steps
        self.runs += other.runs
        self.entered += other.entered
        self.outbox += other.outbox
        self.events += other.events
        self.listened += other.listened
        self.due += other.due
        return self


def _default_compile() -> Compile:
    from cadenza.journeys import compile_definition

    return compile_definition


class Engine:
    """The durable executor for one worker (one per process; any number on PostgreSQL)."""

    def __init__(self, store: Store, clock: Clock, *, compile_definition: Compile | None = None,
                 owner: str | None = None, batch_size: int = 5_000, event_batch: int = 2_000,
                 lease_ms: int = 15_000,
                 after_commit: Callable[[PassReport], None] | None = None,
                 listeners: Sequence[Listener] = (), jobs: Sequence[Job] = ()) -> None:
        self.store = store
        self.clock = clock
        self.loader = CatalogLoader(compile_definition or _default_compile())
        self.batch_size = batch_size
        self.event_batch = event_batch
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.leases = Leases(store, clock, self.owner, lease_ms)
        self.after_commit = after_commit
        self.listeners = list(listeners)
        self.jobs = list(jobs)
        self._started = False

    # --- passes ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create lease rows and take this worker's share of partitions."""
        self.leases.ensure_rows()
        with self.store.begin() as conn:
            ensure_cursors(conn, range(PARTITIONS), self.clock.now_ms())
        self.leases.renew()
        self._started = True

    def _ensure(self) -> None:
        if not self._started:
            self.start()
        elif self.leases.due_for_renewal():
            self.leases.renew()

    def tick(self, limit: int | None = None) -> PassReport:
        """Run the due enrollments (at most `limit`, default the batch size)."""
        return self.step(events=False, due=limit or self.batch_size)

    def step(self, *, events: bool = True, due: int | None = None) -> PassReport:
        """One pass in one transaction: the new events (they may end waits that a timer
        would otherwise end), then the due enrollments not already moved by them."""
        self._ensure()
        now = self.clock.now_ms()
        limit = self.batch_size if due is None else due

        def work(conn: Connection) -> PassReport:
            parts = self.leases.fence(conn)
            catalog = self.loader.refresh(conn)
            batch = Batch(conn, catalog, now)
            # Listeners first: the events they write (segment entries, stage changes, score
            # thresholds) reach journeys in this same pass, and branches see fresh state.
            heard = self._listen(conn, parts, now) if events else 0
            seen = apply_events(batch, parts, self.event_batch) if events else 0
            rows = self._due(conn, catalog.paused, parts, now, limit) if limit else []
            taken = {r.id for r in batch.runs}
            runs = [run_from_row(r, "timer" if r[7] == "waiting" else "run") for r in rows
                    if r[0] not in taken]
            runs = [r for r in runs if r.version_id in catalog.specs]
            batch.load(runs)
            batch.advance(runs)
            follow_enrollments(batch)
            batch.write()
            report = _report(batch)
            report.events = seen
            report.listened = heard
            report.due = len(rows)
            return report

        return self._commit(work)

    def _listen(self, conn: Connection, parts: list[int], now: int) -> int:
        """Let every listener read its share of the log in this pass's transaction; the
        largest batch read decides whether the engine goes round again at once."""
        return max((listener.apply(conn, parts, now, self.event_batch)
                    for listener in self.listeners), default=0)

    def _due(self, conn: Connection, paused: set[int], parts: list[int], now: int,
             limit: int) -> list[tuple[Any, ...]]:
        if not parts:
            return []
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        # The same predicate as the partial index `ix_enrollments_due`, so that it is used.
        sql = (f"SELECT {RUN_COLUMNS} FROM enrollments WHERE status IN ('ready', 'waiting') "
               f"AND wake_at IS NOT NULL AND wake_at <= {mark}")
        if paused:
            sql += f" AND journey_id NOT IN ({', '.join(str(j) for j in paused)})"
        if len(parts) < PARTITIONS:
            sql += f" AND part IN ({', '.join(str(p) for p in parts)})"
        sql += f" ORDER BY wake_at LIMIT {int(limit)}"
        return fetch(conn, sql, [now])

    def process_events(self, limit: int | None = None) -> PassReport:
        """Apply the events after the cursors of this worker's partitions."""
        self._ensure()
        now = self.clock.now_ms()
        limit = limit or self.event_batch

        def work(conn: Connection) -> PassReport:
            parts = self.leases.fence(conn)
            catalog = self.loader.refresh(conn)
            batch = Batch(conn, catalog, now)
            heard = self._listen(conn, parts, now)
            seen = apply_events(batch, parts, limit)
            follow_enrollments(batch)
            batch.write()
            report = _report(batch)
            report.events = seen
            report.listened = heard
            return report

        return self._commit(work)

    def scan_dates(self) -> PassReport:
        """Enter contacts whose date-relative or scheduled entry moment has come."""
        self._ensure()
        now = self.clock.now_ms()

        def work(conn: Connection) -> PassReport:
            parts = self.leases.fence(conn)
            catalog = self.loader.refresh(conn)
            batch = Batch(conn, catalog, now)
            scan_entries(batch, set(parts))
            follow_enrollments(batch)
            batch.write()
            return _report(batch)

        return self._commit(work)

    def enroll(self, journey: str, contact_ids: Iterable[int],
               payload: dict[str, Any] | None = None, entry_key: str | None = None
               ) -> list[int]:
        """Enroll contacts into `journey` through its API trigger; returns the new
        enrollment ids (contacts its entry rules keep out get none)."""
        now = self.clock.now_ms()
        ids = list(dict.fromkeys(contact_ids))

        def work(conn: Connection) -> list[int]:
            catalog = self.loader.refresh(conn)
            if journey not in catalog.ids:
                raise NotFound("journey", journey)
            targets = catalog.api_targets(journey)
            if not targets:
                raise ValidationFailed("journey", f"journey {journey!r} is not live or has no "
                                       "`api` entry trigger; add `entry: {api: true}` and "
                                       "publish it")
            known = {r[0] for r in select_in(conn, "SELECT id FROM contacts WHERE id IN "
                                             "({marks}) AND merged_into IS NULL", ids)}
            missing = [c for c in ids if c not in known]
            if missing:
                raise NotFound("contact", missing[0])
            batch = Batch(conn, catalog, now)
            created: list[int] = []
            entry = payload or {}
            for target in targets:
                allowed = _api_filter(conn, target, ids, entry, now)
                runs = batch.admit(target, [(c, {"entry": entry}, entry_key, 0)
                                            for c in allowed], "api")
                if not target.shadow:
                    created.extend(r.id for r in runs)
                batch.advance(runs)
            follow_enrollments(batch)
            batch.write()
            return created

        return _without_gc(self.store, work)

    def segment_changed(self, segment: str, entered: Iterable[int],
                        exited: Iterable[int]) -> int:
        """The hook the segments domain calls: enter journeys triggered by entering (or
        exiting) `segment`. Returns how many enrollments it created."""
        now = self.clock.now_ms()
        moves = {"enter": list(entered), "exit": list(exited)}

        def work(conn: Connection) -> int:
            catalog = self.loader.refresh(conn)
            batch = Batch(conn, catalog, now)
            count = 0
            for target, trigger in catalog.entry_segments.get(segment, []):
                runs = batch.admit(target, [(c, {"entry": {"segment": segment,
                                                           "on": trigger.on}}, None, 0)
                                            for c in moves[trigger.on]], "segment")
                count += len(runs)
                batch.advance(runs)
            follow_enrollments(batch)
            batch.write()
            return count

        return _without_gc(self.store, work)

    # --- loops -------------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        """Passes until the events read so far and the enrollments due now are done."""
        total = PassReport()
        while True:
            report = self.step()
            total += report
            full = (report.due >= self.batch_size or report.events >= self.event_batch
                    or report.listened >= self.event_batch)
            if not full or (not report.runs and not report.events and not report.listened):
                break  # caught up (or stuck on rows this worker cannot run: no spinning)
        catalog = self.loader.catalog  # refreshed by the pass above
        if catalog.entry_dates or catalog.entry_schedules:
            total += self.scan_dates()
        if self.jobs:
            run_due_jobs(self.store, self.jobs, self.clock.now_ms())
        return total

    def next_wake(self) -> int | None:
        """The earliest wake time among this worker's enrollments (None when none)."""
        paused = self.loader.catalog.paused
        sql = ("SELECT min(wake_at) FROM enrollments WHERE status IN ('ready', 'waiting') "
               "AND wake_at IS NOT NULL")
        if paused:
            sql += f" AND journey_id NOT IN ({', '.join(str(j) for j in paused)})"
        with self.store.read() as conn:
            value = conn.exec_driver_sql(sql).scalar()
        return int(value) if value is not None else None

    def run_forever(self, stop: threading.Event, wake: threading.Event,
                    idle_ms: int = 1_000) -> None:
        """Run rounds until `stop` is set; sleep until `wake`, the next due row or `idle_ms`."""
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    report = self.run_once()
                except (LeaseLost, StoreBusy, Conflict):
                    report = PassReport()
                except Exception:  # a bug must not stop every journey: log, back off, retry
                    log.exception("engine round failed; retrying in %d ms", idle_ms)
                    wake.wait(idle_ms / 1000)
                    continue
                # `run_once` has already gone round while batches came back full; anything
                # that arrived since then has set `wake`.
                nxt = self.next_wake()
                delay = idle_ms
                if nxt is not None:
                    delay = max(0, min(idle_ms, nxt - self.clock.now_ms()))
                    if delay == 0 and not report.runs:
                        delay = idle_ms  # due rows this worker cannot run: do not spin
                wake.wait(delay / 1000)
        finally:
            self.leases.release()

    # --- helpers -----------------------------------------------------------------------------

    def _commit(self, work: Callable[[Connection], PassReport]) -> PassReport:
        report = _without_gc(self.store, work)
        if self.after_commit is not None and (report.runs or report.outbox):
            self.after_commit(report)
        return report



def follow_enrollments(batch: Batch, depth: int = 5) -> None:
    """Carry out `enroll` steps: admit into the target journeys and advance, a few levels
    deep (entry rules stop loops between journeys; the depth cap is a safety net)."""
    for _ in range(depth):
        pending = batch.effects.enroll
        if not pending:
            return
        batch.effects.enroll = []
        by_journey: dict[str, list[tuple[int, dict[str, Any], str | None, int]]] = \
            defaultdict(list)
        for key, cid, context, entry_key in pending:
            by_journey[key].append((cid, context, entry_key, 0))
        for key, candidates in by_journey.items():
            jid = batch.catalog.ids.get(key)
            targets: list[Target] = batch.catalog.targets.get(jid, []) if jid else []
            for target in targets:
                batch.advance(batch.admit(target, candidates, "enroll"))


def _api_filter(conn: Connection, target: Target, ids: list[int], entry: dict[str, Any],
                now: int) -> list[int]:
    """The contacts that pass the `where` of the target's API trigger (all when it has none)."""
    where = next((t.where for t in target.spec.triggers if isinstance(t, ApiTrigger)), None)
    if where is None:
        return ids
    facts = load_facts(conn, ids, where.needs(), now)
    return [c for c in ids
            if where.evaluate(dataclasses.replace(facts.get(c) or Facts(c), entry=entry))]


def _without_gc(store: Store, work: Callable[[Connection], T]) -> T:
    """Run a pass in a transaction with the cyclic garbage collector off. A pass makes
    hundreds of thousands of short-lived objects and no reference cycles; the collector would
    walk them again and again (a third of the CPU of a large pass, measured). Collection
    resumes when the pass ends."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return store.retry(work)
    finally:
        if collecting:
            gc.enable()


def _report(batch: Batch) -> PassReport:
    return PassReport(steps=batch.effects.steps, runs=len(batch.runs),
                      entered=sum(1 for r in batch.runs if r.new),
                      outbox=len(batch.effects.outbox))


__all__ = ["Engine", "PassReport", "follow_enrollments", "partition"]
