"""Simulation: a synthetic population through one journey over simulated time.

The real engine runs on a `FakeClock` against a scratch database: nothing is sent (the
dispatcher never runs), every decision and outbox row is made as it would be live. Time jumps
from one moment of interest to the next (the earliest due enrollment or behaviour event), so
weeks pass in seconds. The behaviour model gives contacts attributes, background event rates
and conversion probabilities.

Contacts and behaviour events are written straight into the tables in bulk (set-oriented,
like the engine): a simulation of a million contacts must not spend its time on ingestion.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadenza.clock import FakeClock
from cadenza.engine.worker import Engine, PassReport
from cadenza.errors import CadenzaError
from cadenza.journeys.spec import (
    ApiTrigger,
    AttributeTrigger,
    EventTrigger,
    JourneySpec,
)
from cadenza.store import Store, dumps, insert_rows, schema

DAY_MS = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Behaviour:
    """How the synthetic contacts behave."""

    attributes: dict[str, dict[Any, float]] = field(default_factory=dict)
    """Attribute name -> {value: share}; each contact draws one value per attribute."""
    rates: dict[str, float] = field(default_factory=dict)
    """Event name -> events per contact per day (a Poisson process)."""
    conversions: dict[str, float] = field(default_factory=dict)
    """Event name -> probability that a contact does it once, at a uniform moment."""
    timezones: tuple[str, ...] = ("UTC",)
    """Time zones drawn uniformly for the contacts."""
    conversion_window_days: tuple[float, float] | None = None
    """When conversions may happen (days after the start); default: the whole run."""

    def __post_init__(self) -> None:
        for name, shares in self.attributes.items():
            if not shares or any(s < 0 for s in shares.values()) or sum(shares.values()) <= 0:
                raise ValueError(f"attribute {name!r}: shares must be non-negative and not "
                                 "all zero, e.g. plan=pro:0.3,basic:0.7")
        for name, rate in self.rates.items():
            if rate < 0:
                raise ValueError(f"rate of {name!r} must be at least 0 events per day")
        for name, p in self.conversions.items():
            if not 0 <= p <= 1:
                raise ValueError(f"conversion probability of {name!r} must be within 0..1")


@dataclass
class SimulationResult:
    """What happened."""

    contacts: int
    days: float
    steps: int
    seconds: float
    step_stats: dict[str, tuple[int, int]]
    """Step -> (entered, departed)."""
    waiting: Counter[str]
    messages: Counter[str]
    """Step -> outbox rows written."""
    conversions: Counter[str]
    outcomes: Counter[str]
    edges: dict[tuple[str, str], int]


Progress = Callable[[int, int], None]


class Simulation:
    """One journey, a population, a behaviour model, a scratch store and a fake clock."""

    def __init__(self, store: Store, spec: JourneySpec, definition: dict[str, Any],
                 behaviour: Behaviour, *, seed: int = 7, batch_size: int = 20_000,
                 resolution_ms: int = 60_000) -> None:
        self.store = store
        self.spec = spec
        self.definition = definition
        self.behaviour = behaviour
        self.rng = random.Random(seed)
        self.clock = FakeClock(START_MS)
        # One worker on a scratch store: a lease that outlives any simulated span, so that
        # jumps of the fake clock do not send it renewing.
        self.engine = Engine(store, self.clock, compile_definition=lambda _d: spec,
                             batch_size=batch_size, event_batch=batch_size,
                             lease_ms=100 * 365 * DAY_MS)
        self.resolution_ms = resolution_ms
        """Time moves in steps of at least this much: what falls due within one step is done
        together (timers fire up to this late, never early)."""
        self.contact_ids: list[int] = []
        self._pending: list[tuple[int, int, str]] = []  # (at, contact, event)
        self._events = 0

    # --- setup -------------------------------------------------------------------------------

    def setup(self, contacts: int, days: float) -> None:
        """Create the contacts, publish the journey, plan every behaviour event."""
        now = self.clock.now_ms()
        rng = self.rng
        attrs = self.behaviour.attributes
        picks = {name: (list(shares), list(shares.values())) for name, shares in attrs.items()}
        tzs = self.behaviour.timezones
        with self.store.begin() as conn:
            start = int(conn.exec_driver_sql(
                "SELECT coalesce(max(id), 0) FROM contacts").scalar_one())
            ids = list(range(start + 1, start + 1 + contacts))
            for chunk in range(0, contacts, 50_000):
                insert_rows(conn, schema.contacts, (
                    "id", "user_id", "attributes", "timezone", "created_at", "updated_at"), [
                    (cid, f"sim-{cid}",
                     dumps({n: rng.choices(v, w)[0] for n, (v, w) in picks.items()}),
                     tzs[cid % len(tzs)], now, now) for cid in ids[chunk:chunk + 50_000]])
            jid = conn.execute(schema.journeys.insert().values(
                key=self.spec.key, name=self.spec.name, status="live", created_at=now,
                updated_at=now).returning(schema.journeys.c.id)).scalar_one()
            vid = conn.execute(schema.journey_versions.insert().values(
                journey_id=jid, number=1, status="published", definition=self.definition,
                content_hash="simulation", created_at=now, published_at=now,
            ).returning(schema.journey_versions.c.id)).scalar_one()
            conn.execute(schema.journeys.update().where(schema.journeys.c.id == jid)
                         .values(live_version_id=vid))
        self.contact_ids = ids
        self.engine.start()
        self.engine.process_events()  # the engine's cursors start here
        end = now + int(days * DAY_MS)
        pending: list[tuple[int, int, str]] = []
        for name, rate in self.behaviour.rates.items():
            per_contact = rate * days
            for cid in ids:
                count = _poisson(rng, per_contact)
                pending.extend((rng.randrange(now, end), cid, name) for _ in range(count))
        window = self.behaviour.conversion_window_days
        low, high = (now, end) if window is None else (
            now + int(window[0] * DAY_MS), now + int(window[1] * DAY_MS))
        for name, p in self.behaviour.conversions.items():
            pending.extend((rng.randrange(low, high), cid, name)
                           for cid in ids if rng.random() < p)
        heapq.heapify(pending)
        self._pending = pending

    def enter_all(self) -> PassReport:
        """Bring every contact in through the journey's trigger at the start."""
        trigger = self.spec.triggers[0]
        if isinstance(trigger, EventTrigger):
            self._insert_events([(cid, trigger.event) for cid in self.contact_ids])
        elif isinstance(trigger, AttributeTrigger):
            self._insert_events([(cid, "identify") for cid in self.contact_ids],
                                {trigger.attr: (trigger.values or ["x"])[0]})
        elif isinstance(trigger, ApiTrigger):
            for chunk in range(0, len(self.contact_ids), 20_000):
                self.engine.enroll(self.spec.key, self.contact_ids[chunk:chunk + 20_000])
        # date, schedule and segment triggers enter by themselves as time passes
        return self._drain()

    # --- running -----------------------------------------------------------------------------

    def run(self, days: float, progress: Progress | None = None) -> PassReport:
        """Advance simulated time to `days` after the start, doing what falls due."""
        end = START_MS + int(days * DAY_MS)
        total = PassReport()
        while True:
            nxt = self.engine.next_wake()
            if self._pending:
                first = self._pending[0][0]
                nxt = first if nxt is None else min(nxt, first)
            if nxt is None or nxt > end:
                break
            self.clock.set(max(nxt, self.clock.now_ms() + self.resolution_ms))
            due: list[tuple[int, str]] = []
            while self._pending and self._pending[0][0] <= self.clock.now_ms():
                _, cid, name = heapq.heappop(self._pending)
                due.append((cid, name))
            if due:
                self._insert_events(due)
            total += self.engine.run_once()  # it runs until what is due now is done
            if progress is not None:
                progress(self.clock.now_ms() - START_MS, end - START_MS)
        self.clock.set(max(self.clock.now_ms(), end))
        total += self._drain()
        return total

    def start_checkpointer(self) -> threading.Event:
        """Checkpoint SQLite's log from a background thread, as `cadenza serve` does, so
        that commits do not pay for it; set the returned event to stop."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(0.5):
                with contextlib.suppress(CadenzaError):
                    self.store.checkpoint()

        threading.Thread(target=loop, name="cadenza-checkpoint", daemon=True).start()
        return stop

    def _drain(self) -> PassReport:
        total = PassReport()
        while True:
            report = self.engine.run_once()
            total += report
            if not report.runs and not report.events:
                return total

    def _insert_events(self, items: list[tuple[int, str]],
                       traits: dict[str, Any] | None = None) -> None:
        now = self.clock.now_ms()
        props = dumps(traits or {})
        with self.store.begin() as conn:
            rows = []
            for cid, name in items:
                self._events += 1
                kind = "identify" if name == "identify" else "track"
                rows.append((f"sim-{self._events}", cid, kind, name, props, "{}", "simulation",
                             now, now))
            insert_rows(conn, schema.events, (
                "message_id", "contact_id", "type", "name", "properties", "context", "source",
                "timestamp", "received_at"), rows)

    # --- results -----------------------------------------------------------------------------

    def result(self, steps: int, seconds: float, days: float) -> SimulationResult:
        """Per-step counts, messages and conversions from the tables."""
        with self.store.read() as conn:
            stats = {n: (int(e), int(d)) for n, e, d in conn.exec_driver_sql(
                "SELECT node, entered, departed FROM journey_step_stats WHERE shadow = "
                + ("false" if conn.dialect.name == "postgresql" else "0"))}
            waiting = Counter({n: int(c) for n, c in conn.exec_driver_sql(
                "SELECT node, count(*) FROM enrollments WHERE status IN ('ready', 'waiting') "
                "GROUP BY node")})
            messages = Counter({n: int(c) for n, c in conn.exec_driver_sql(
                "SELECT node, count(*) FROM outbox GROUP BY node")})
            conversions = Counter({g: int(c) for g, c in conn.exec_driver_sql(
                "SELECT goal, count(*) FROM conversions GROUP BY goal")})
            outcomes = Counter({o or "active": int(c) for o, c in conn.exec_driver_sql(
                "SELECT outcome, count(*) FROM enrollments GROUP BY outcome")})
            edges = {(a, b): int(c) for a, b, c in conn.exec_driver_sql(
                "SELECT source, target, count FROM journey_edge_stats")}
        return SimulationResult(len(self.contact_ids), days, steps, seconds, stats, waiting,
                                messages, conversions, outcomes, edges)

    def paths(self) -> dict[int, list[str]]:
        """Each contact's path through the journey: the steps in the order it ran them."""
        out: dict[int, list[str]] = {}
        with self.store.read() as conn:
            for cid, steps in conn.exec_driver_sql(
                    "SELECT contact_id, steps FROM journey_history ORDER BY enrollment_id, seq"):
                from cadenza.store import loads

                path = out.setdefault(int(cid), [])
                for step in loads(steps):
                    if not path or path[-1] != step[0]:  # a wait and its end: one visit
                        path.append(step[0])
        return out


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method for small means, a normal approximation above 30)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, mean ** 0.5)))
    limit = pow(2.718281828459045, -mean)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
