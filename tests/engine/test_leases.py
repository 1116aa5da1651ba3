"""Partition leases: one worker takes every partition, renews and releases them; a second one
takes over when the first stops renewing (a higher fencing token); a stale worker's pass is
refused (`LeaseLost`) and writes nothing; on PostgreSQL a pass in flight keeps its partitions
until it commits, and a worker stopped with SIGSTOP past its lease writes nothing after
another has taken over."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza.clock import FakeClock
from cadenza.engine import PARTITIONS, Engine, LeaseLost
from cadenza.engine import worker as worker_module
from cadenza.errors import CadenzaError
from cadenza.events import EventService
from cadenza.store import Store, loads
from tests.engine.conftest import DAY, REFERENCE, track

Publish = Callable[[str], int]
LEASE = 15_000


def rows(store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        if conn.dialect.name == "postgresql":
            sql = sql.replace("?", "%s")
        return [tuple(r) for r in conn.exec_driver_sql(sql, tuple(params))]


def leases(store: Store) -> dict[int, tuple[str | None, int, int]]:
    """part -> (owner, token, expires_at)."""
    return {int(p): (o, int(t), int(e)) for p, o, t, e in rows(
        store, "SELECT part, owner, token, expires_at FROM engine_leases")}


def owners(store: Store, now: int) -> Counter[str | None]:
    """How many partitions each owner holds unexpired at `now` (None: free or expired)."""
    return Counter(o if e > now else None for o, _, e in leases(store).values())


def worker(store: Store, clock: FakeClock, owner: str, lease_ms: int = LEASE) -> Engine:
    return Engine(store, clock, owner=owner, lease_ms=lease_ms, batch_size=1_000)


TABLES = ("enrollments", "outbox", "journey_history", "journey_step_stats",
          "journey_edge_stats", "conversions", "engine_cursors", "contact_tags", "events")


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables an engine pass writes."""
    out = {}
    for table in TABLES:
        got = rows(store, f"SELECT * FROM {table}")
        out[table] = sorted(tuple(str(v) for v in r) for r in got)
    return out


# --- one worker ------------------------------------------------------------------------------

def test_one_worker_takes_every_partition_renews_and_releases(
        store: Store, clock: FakeClock) -> None:
    one = worker(store, clock, "one")
    one.start()
    start = clock.now_ms()
    assert leases(store) == dict.fromkeys(range(PARTITIONS), ("one", 1, start + LEASE))
    assert one.leases.held == dict.fromkeys(range(PARTITIONS), 1)
    clock.advance(LEASE // 3 - 1)
    one.run_once()  # not due for renewal yet
    assert {e for _, _, e in leases(store).values()} == {start + LEASE}
    clock.advance(1)
    one.run_once()
    assert {e for _, _, e in leases(store).values()} == {clock.now_ms() + LEASE}
    # Renewing keeps the token: only a change of hands raises it.
    assert {t for _, t, _ in leases(store).values()} == {1}
    one.leases.release()
    assert leases(store) == dict.fromkeys(range(PARTITIONS), (None, 1, 0))
    two = worker(store, clock, "two")
    two.start()
    assert {(o, t) for o, t, _ in leases(store).values()} == {("two", 2)}


def test_a_restarted_worker_carries_on_after_the_lease_expires(
        store: Store, clock: FakeClock, events: EventService, publish: Publish,
        make_contacts: Callable[..., list[int]]) -> None:
    publish(REFERENCE)
    first = worker(store, clock, "first")
    first.start()
    make_contacts(10)
    for i in range(10):
        track(events, f"user-{i}", "signed_up", f"s-{i}")
    first.run_once()
    # It dies without releasing; its successor (another process, another owner) finds every
    # partition taken and does nothing until the lease runs out.
    second = worker(store, clock, "second")
    second.start()
    assert second.leases.held == {}
    track(events, "user-0", "purchased", "p-0")  # waits in the log, not lost
    clock.advance(LEASE - 1)
    assert second.run_once().events == 0
    assert second.leases.held == {}
    clock.advance(LEASE // 3)  # its next renewal finds the lease expired
    second.run_once()
    assert {(o, t) for o, t, _ in leases(store).values()} == {("second", 2)}
    clock.advance(2 * DAY)
    second.run_once()
    counts = Counter(n for n, in rows(store, "SELECT node FROM outbox"))
    assert counts == {"welcome": 10, "pro-tips": 4, "basics": 6}


# --- two workers -----------------------------------------------------------------------------

def test_two_workers_never_hold_the_same_partition(store: Store, clock: FakeClock) -> None:
    a = worker(store, clock, "a")
    b = worker(store, clock, "b")
    a.start()
    b.start()
    for _ in range(6):
        clock.advance(LEASE // 3)
        a.run_once()
        b.run_once()
        assert not set(a.leases.held) & set(b.leases.held)
        for part, token in a.leases.held.items():
            assert leases(store)[part][:2] == ("a", token)
        for part, token in b.leases.held.items():
            assert leases(store)[part][:2] == ("b", token)
    assert len(a.leases.held) + len(b.leases.held) == PARTITIONS


def test_two_workers_share_the_partitions_fairly(store: Store, clock: FakeClock) -> None:
    a = worker(store, clock, "a")
    b = worker(store, clock, "b")
    a.start()
    b.start()
    for _ in range(6):
        clock.advance(LEASE // 3)
        a.run_once()
        b.run_once()
    assert owners(store, clock.now_ms()) == {"a": PARTITIONS // 2, "b": PARTITIONS // 2}


def test_takeover_after_expiry_raises_the_token_and_carries_on(
        store: Store, clock: FakeClock, events: EventService, publish: Publish,
        make_contacts: Callable[..., list[int]]) -> None:
    publish(REFERENCE)
    a = worker(store, clock, "a")
    b = worker(store, clock, "b")
    a.start()
    b.start()
    assert (len(a.leases.held), len(b.leases.held)) == (PARTITIONS, 0)
    make_contacts(20)
    for i in range(20):
        track(events, f"user-{i}", "signed_up", f"s-{i}")
    a.run_once()
    clock.advance(LEASE - 1)  # a stops renewing; its lease still holds for a millisecond
    b.run_once()
    assert b.leases.held == {}
    clock.advance(LEASE // 3)  # b's next renewal
    b.run_once()
    assert {(o, t) for o, t, _ in leases(store).values()} == {("b", 2)}
    assert b.leases.held == dict.fromkeys(range(PARTITIONS), 2)
    clock.advance(2 * DAY)
    b.run_once()
    counts = Counter(n for n, in rows(store, "SELECT node FROM outbox"))
    assert counts == {"welcome": 20, "pro-tips": 7, "basics": 13}
    # The old worker comes back: it finds its partitions gone and takes nothing.
    a.run_once()
    assert a.leases.held == {}
    assert owners(store, clock.now_ms()) == {"b": PARTITIONS}


@pytest.mark.parametrize("stale_pass", ["tick", "process_events"])
def test_a_stale_worker_gets_lease_lost_and_writes_nothing(
        store: Store, clock: FakeClock, events: EventService, publish: Publish,
        make_contacts: Callable[..., list[int]], stale_pass: str) -> None:
    publish(REFERENCE)
    # The stale worker's view of time stops where it was paused: it does not know that its
    # lease has run out, exactly like a process stopped between reading the clock and
    # committing.
    paused_clock = FakeClock(clock.now_ms())
    stale = worker(store, paused_clock, "stale")
    stale.start()
    make_contacts(12)
    for i in range(12):
        track(events, f"user-{i}", "signed_up", f"s-{i}")
    stale.run_once()
    clock.advance(2 * DAY)
    paused_clock.set(clock.now_ms())
    stale.leases.renew()  # fresh lease; now it is paused before its next pass
    for i in range(0, 12, 4):
        track(events, f"user-{i}", "purchased", f"p-{i}")  # work for process_events too
    clock.advance(LEASE + 1)
    taker = worker(store, clock, "taker")
    taker.start()
    assert {(o, t) for o, t, _ in leases(store).values()} == {("taker", 2)}
    before = snapshot(store)
    with pytest.raises(LeaseLost) as lost:
        getattr(stale, stale_pass)()
    assert sorted(lost.value.parts) == list(range(PARTITIONS))
    assert snapshot(store) == before
    assert stale.leases.held == {}
    # The taker does the work once; the stale worker, back in time, stays out.
    taker.run_once()
    taker.run_once()
    paused_clock.set(clock.now_ms())
    stale.run_once()
    assert stale.leases.held == {}
    counts = Counter(n for n, in rows(store, "SELECT node FROM outbox"))
    assert counts == {"welcome": 12, "pro-tips": 4, "basics": 8}
    assert Counter(s for s, in rows(store, "SELECT status FROM enrollments")) == {
        "waiting": 12}


@pytest.mark.postgres
def test_a_pass_in_flight_keeps_its_partitions_until_it_commits(
        store: Store, clock: FakeClock, events: EventService, publish: Publish,
        make_contacts: Callable[..., list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    publish(REFERENCE)
    a = worker(store, clock, "a")
    a.start()
    make_contacts(10)
    for i in range(10):
        track(events, f"user-{i}", "signed_up", f"s-{i}")
    a.run_once()
    clock.advance(2 * DAY)
    a.leases.renew()

    inside, proceed = threading.Event(), threading.Event()
    real = worker_module.follow_enrollments

    def paused(batch: Any, depth: int = 5) -> None:
        if threading.current_thread().name == "worker-a":
            inside.set()
            assert proceed.wait(20)
        real(batch, depth)

    monkeypatch.setattr(worker_module, "follow_enrollments", paused)
    errors: list[BaseException] = []

    def run_a() -> None:
        try:
            a.tick()
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run_a, name="worker-a")
    thread.start()
    try:
        assert inside.wait(20)
        clock.advance(LEASE + 1)  # a's lease has run out while its pass is in flight
        b = worker(store, clock, "b")
        # (Not b.start(): its INSERT ... ON CONFLICT of the lease rows would wait for a.)
        assert b.leases.renew() == {}  # the lease rows are locked by a's pass: skipped
    finally:
        proceed.set()
        thread.join(20)
    assert errors == []
    assert Counter(n for n, in rows(store, "SELECT node FROM outbox")) == {
        "welcome": 10, "pro-tips": 4, "basics": 6}
    clock.advance(LEASE // 3)
    b.run_once()
    assert {(o, t) for o, t, _ in leases(store).values()} == {("b", 2)}
    clock.advance(3 * DAY)
    b.run_once()
    assert Counter(n for n, in rows(store, "SELECT node FROM outbox"))["last-chance"] == 10


# --- a real SIGSTOP --------------------------------------------------------------------------

WALL_JOURNEY = """
journey: wall
entry: {event: signed_up}
steps:
  - {id: one, send: {channel: log, template: one}}
  - {id: pause-1, wait: 1500ms}
  - {id: two, send: {channel: log, template: two}}
  - {id: pause-2, wait: 1500ms}
  - {id: three, send: {channel: log, template: three}}
"""

# The worker that gets stopped. Its clock returns odd milliseconds, the test's worker even
# ones, so every row's time says who wrote it.
STOPPED_WORKER = """
import signal, sys, time
from cadenza.engine import Engine, LeaseLost
from cadenza.store import Store

class OddClock:
    last = 0
    def now_ms(self):
        OddClock.last = (time.time_ns() // 1_000_000) | 1
        return OddClock.last

stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
def committed(report):
    print("commit", OddClock.last, report.runs, report.outbox, flush=True)
engine = Engine(Store.create(sys.argv[1]), OddClock(), owner="stopped",
                lease_ms=int(sys.argv[2]), batch_size=20, event_batch=100,
                after_commit=committed)
engine.start()
print("ready", len(engine.leases.held), flush=True)
while not stop:
    try:
        engine.run_once()
    except LeaseLost as exc:
        print("lost", len(exc.parts), flush=True)
    except Exception as exc:
        print("error", type(exc).__name__, flush=True)
    time.sleep(0.005)
print("held", len(engine.leases.held), flush=True)
"""


class EvenClock:
    """The wall clock, on even milliseconds."""

    def now_ms(self) -> int:
        return (time.time_ns() // 1_000_000) & ~1


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def spawn(store_url: str, tmp_path: Path) -> Iterator[Callable[[int], subprocess.Popen[str]]]:
    """Start the stopped worker's process (its connections named `stopped-worker`); it is
    always continued and ended afterwards."""
    started: list[tuple[subprocess.Popen[str], Any]] = []

    def go(lease_ms: int) -> subprocess.Popen[str]:
        stderr = (tmp_path / "worker.err").open("w")
        url = f"{store_url}&application_name=stopped-worker"
        proc = subprocess.Popen([sys.executable, "-c", STOPPED_WORKER, url, str(lease_ms)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True,
                                cwd=Path(__file__).resolve().parents[2])
        started.append((proc, stderr))
        return proc

    yield go
    for proc, stderr in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        stderr.close()


@pytest.mark.postgres
def test_a_worker_stopped_past_its_lease_writes_nothing_after_takeover(
        store: Store, publish: Publish, spawn: Callable[[int], subprocess.Popen[str]]
        ) -> None:
    from cadenza.clock import SystemClock

    publish(WALL_JOURNEY)
    events = EventService(store, SystemClock())
    n = 400
    result = events.ingest([{"type": "identify", "userId": f"w-{i}", "messageId": f"i-{i}",
                             "traits": {}} for i in range(n)])
    assert not result.rejected

    proc = spawn(1_000)
    assert proc.stdout is not None
    lines: list[tuple[int, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((wall_ms(), line.strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: any(t.startswith("ready") for _, t in lines), 20, "the worker to start")
    assert lines[0][1] == f"ready {PARTITIONS}"
    events.ingest([{"type": "track", "userId": f"w-{i}", "event": "signed_up",
                    "messageId": f"s-{i}"} for i in range(n)])

    def sent(template: str) -> int:
        return int(rows(store, "SELECT count(*) FROM outbox WHERE template = ?",
                        template)[0][0])

    wait_for(lambda: sent("one") == n, 20, "the entries")
    wait_for(lambda: sent("two") > 0, 20, "the first wait to end")
    os.kill(proc.pid, signal.SIGSTOP)  # in the middle of the second wave, most likely
    stopped_at = wall_ms()
    time.sleep(1.2)  # its lease runs out
    # Stopped inside a transaction, it still holds its lease rows locked, so no one can take
    # them over (the fence): end its sessions, as the server's idle-in-transaction timeout
    # or an operator would. Its work in flight is rolled back.
    with store.begin() as conn:
        conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                             "application_name = 'stopped-worker'")

    taker = Engine(store, EvenClock(), owner="taker", lease_ms=1_000, batch_size=100)
    taker.start()
    took_at = None
    deadline = time.monotonic() + 30
    while sent("three") < n or took_at is None:
        assert time.monotonic() < deadline, "the taker did not finish the journey"
        with contextlib.suppress(CadenzaError):  # a lost race on a row: the next round
            taker.run_once()
        if took_at is None and len(taker.leases.held) == PARTITIONS:
            took_at = wall_ms()
        time.sleep(0.01)
    assert took_at is not None
    assert took_at >= stopped_at

    os.kill(proc.pid, signal.SIGCONT)
    resumed_at = wall_ms()
    until = time.monotonic() + 1.5  # let it run: it must find its lease gone, write nothing
    while time.monotonic() < until:
        taker.run_once()  # and the taker keeps its lease alive meanwhile
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    reader.join(5)

    # Nothing twice, nothing missing.
    keys = [k for k, in rows(store, "SELECT idempotency_key FROM outbox")]
    assert len(keys) == len(set(keys)) == 3 * n
    per_contact = Counter(c for c, in rows(store, "SELECT contact_id FROM outbox"))
    assert set(per_contact.values()) == {3}
    assert Counter(s for s, in rows(store, "SELECT status FROM enrollments")) == {
        "completed": n}
    # Each enrollment's history is one unbroken chain of passes, and once the taker wrote
    # a link, the stopped worker never wrote another.
    history: dict[int, list[tuple[int, int, int]]] = {}
    for eid, seq, at, steps in rows(store, "SELECT enrollment_id, seq, at, steps "
                                           "FROM journey_history ORDER BY enrollment_id, seq"):
        history.setdefault(int(eid), []).append((int(seq), int(at), len(loads(steps))))
    final = {int(e): int(s) for e, s in rows(store, "SELECT id, seq FROM enrollments")}
    for eid, chain in history.items():
        expected = 0
        writers = []
        for seq, at, length in chain:
            assert seq == expected, (eid, chain)
            expected = seq + length
            writers.append("stopped" if at % 2 else "taker")
        assert expected == final[eid]
        if "taker" in writers:
            assert "stopped" not in writers[writers.index("taker"):], (eid, writers)
    # The stopped worker began no pass that wrote anything after it was continued (each
    # commit prints the time its pass began), and its rows all come from before it was
    # stopped.
    times = [int(a) for a, in rows(store, "SELECT at FROM journey_history")] + \
        [int(a) for a, in rows(store, "SELECT created_at FROM outbox")]
    assert all(a < stopped_at for a in times if a % 2)
    commits = [t.split() for _, t in lines if t.startswith("commit")]
    assert commits
    assert all(int(c[1]) < resumed_at for c in commits)
    # Continued, it lost its leases; rejoining, it may take back a fair share only after the
    # taker gave those partitions up (each change of hands raises the token again).
    assert lines[-1][1] in ("held 0", f"held {PARTITIONS // 2}"), lines[-5:]
    # Both wrote: the takeover happened in the middle of the journey.
    assert {a % 2 for a in times} == {0, 1}
    final_leases = leases(store).values()
    assert {o for o, _, _ in final_leases} <= {"taker", "stopped", None}
    assert all(t >= 3 if o == "stopped" else t >= 2 for o, t, _ in final_leases)
