"""Listeners ride on the engine's passes; jobs run between them, one worker at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.clock import FakeClock
from cadenza.engine import Engine, claim_job, run_due_jobs
from cadenza.events import EventService
from cadenza.store import Store, changes, cursors, fetch, schema


@dataclass
class Recorder:
    """A listener that records the events after its cursors and the contacts queued for it."""

    name: str = "recorder"
    seen: list[tuple[int, str]] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    fail: bool = False

    def apply(self, conn: Connection, parts: Sequence[int], now: int, limit: int) -> int:
        positions = cursors.cursor_positions(conn, self.name, parts, now)
        low = min(positions.values())
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        rows = fetch(conn, f"SELECT id, contact_id, name FROM events WHERE id > {mark} "
                     f"ORDER BY id LIMIT {int(limit)}", (low,))
        self.seen.extend((cid, name) for eid, cid, name in rows
                         if eid > positions[cid % schema.PARTITIONS])
        self.changed.extend(changes.take_changed(conn, self.name, parts, limit))
        if self.fail:
            raise RuntimeError("listener failed")
        if rows:
            cursors.move_cursors(conn, self.name, parts, rows[-1][0], now)
        return len(rows)


@dataclass
class Counter:
    """A job that counts its runs."""

    name: str = "counter"
    interval_ms: int = 60_000
    runs: list[int] = field(default_factory=list)
    fail: bool = False

    def run(self, store: Store, now: int) -> Any:
        self.runs.append(now)
        if self.fail:
            raise RuntimeError("job failed")


def _track(events: EventService, user: str, name: str) -> None:
    events.ingest([{"type": "track", "userId": user, "event": name,
                    "messageId": f"{user}-{name}"}])


def test_a_listener_reads_each_event_once_in_the_engine_pass(
        store: Store, clock: FakeClock, events: EventService) -> None:
    _track(events, "before", "Old News")  # before the listener's cursors exist: not read
    recorder = Recorder()
    engine = Engine(store, clock, listeners=[recorder])
    engine.start()
    engine.run_once()
    assert recorder.seen == []
    _track(events, "ann", "Signed Up")
    _track(events, "bob", "Logged In")
    report = engine.run_once()
    assert report.listened == 2
    assert sorted(name for _, name in recorder.seen) == ["Logged In", "Signed Up"]
    engine.run_once()
    assert len(recorder.seen) == 2  # the cursor moved with the pass: nothing read twice


def test_a_failing_listener_rolls_back_the_pass_and_its_cursor(
        store: Store, clock: FakeClock, events: EventService) -> None:
    recorder = Recorder()
    engine = Engine(store, clock, listeners=[recorder])
    engine.start()
    engine.step()  # the listener's cursors now exist
    _track(events, "ann", "Signed Up")
    recorder.fail = True
    with contextlib.suppress(RuntimeError):
        engine.step()
    recorder.fail = False
    recorder.seen.clear()
    engine.step()
    assert [name for _, name in recorder.seen] == ["Signed Up"]  # read again after the failure


def test_changed_contacts_are_queued_once_per_consumer(store: Store, clock: FakeClock) -> None:
    now = clock.now_ms()
    with store.begin() as conn:
        ids = [conn.execute(schema.contacts.insert().values(
            attributes={}, created_at=now, updated_at=now).returning(schema.contacts.c.id)
        ).scalar_one() for _ in range(3)]
        changes.mark_changed(conn, [ids[0], ids[1], ids[0]], now)
        changes.mark_changed(conn, [ids[1], ids[2]], now + 1, consumers=("segments",))
    parts = list(range(schema.PARTITIONS))
    with store.begin() as conn:
        assert sorted(changes.take_changed(conn, "segments", parts, 10)) == sorted(ids)
        assert changes.take_changed(conn, "segments", parts, 10) == []
        assert sorted(changes.take_changed(conn, "scores", parts, 1)) in ([ids[0]], [ids[1]])
        assert len(changes.take_changed(conn, "scores", parts, 10)) == 1
        only = [ids[0] % schema.PARTITIONS]
        assert changes.take_changed(conn, "lifecycle", only, 10) == [ids[0]]


def test_a_job_runs_once_per_interval_and_on_one_worker(store: Store, clock: FakeClock) -> None:
    job = Counter()
    start = clock.now_ms()
    assert run_due_jobs(store, [job], start) == ["counter"]
    assert not claim_job(store, job, start + 1)  # another worker, same moment: not due
    assert run_due_jobs(store, [job], start + 59_999) == []
    assert run_due_jobs(store, [job], start + 60_000) == ["counter"]
    assert job.runs == [start, start + 60_000]


def test_a_failing_job_is_logged_and_waits_for_its_next_interval(
        store: Store, clock: FakeClock) -> None:
    broken, fine = Counter(name="broken", fail=True), Counter(name="fine")
    now = clock.now_ms()
    assert run_due_jobs(store, [broken, fine], now) == ["broken", "fine"]
    assert run_due_jobs(store, [broken, fine], now + 1) == []
    assert len(broken.runs) == 1
    assert len(fine.runs) == 1


def test_the_engine_runs_due_jobs_after_its_round(store: Store, clock: FakeClock) -> None:
    job = Counter(interval_ms=1_000)
    engine = Engine(store, clock, jobs=[job])
    engine.start()
    engine.run_once()
    clock.advance(500)
    engine.run_once()
    clock.advance(500)
    engine.run_once()
    assert len(job.runs) == 2
    with store.read() as conn:
        (position,) = fetch(conn, "SELECT position FROM engine_cursors WHERE name = "
                            "'job:counter'")[0]
    assert position == job.runs[-1]




def test_a_large_set_is_queued_in_one_statement_per_consumer(store: Store,
                                                             clock: FakeClock) -> None:
    now = clock.now_ms()
    with store.begin() as conn:
        conn.execute(schema.contacts.insert(), [
            {"attributes": {}, "created_at": now, "updated_at": now} for _ in range(2_500)])
        ids = [r[0] for r in conn.execute(sa.select(schema.contacts.c.id))]
        changes.mark_changed(conn, ids[:10], now, consumers=("segments",))
        changes.mark_changed(conn, ids + ids[:5], now, consumers=("segments", "scores"))
    parts = list(range(schema.PARTITIONS))
    with store.begin() as conn:
        queued = changes.take_changed(conn, "segments", parts, 10_000)
        assert sorted(queued) == sorted(ids)
        assert sorted(changes.take_changed(conn, "scores", parts, 10_000)) == sorted(ids)
        one = [ids[7] % schema.PARTITIONS]
        assert changes.take_changed(conn, "lifecycle", one, 10) == []
