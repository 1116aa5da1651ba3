"""The crash loop of issue 4, shared by `test_crash_loop.py` and `bench/crash_loop.py`.

A journey over many contacts (an email, a short wait, a branch on `plan`, a webhook, another
short wait, a last email) runs in `cadenza worker` subprocesses against a real SMTP server and
a real HTTP receiver on loopback. The contacts enter in waves of entry events, so that entries,
timers and sends overlap. The worker is SIGKILLed at random moments (a seeded RNG picks how
long each one lives) and restarted, until every enrollment has completed. `Outcome` holds what
the database, the SMTP server and the HTTP receiver ended up with; `assert_books` checks it
against what the journey implies.

Duplicates are accounted per claim: after each kill the harness records the outbox claims the
dead worker left unrecorded, as (row, attempt). A message may arrive once more for each of its
row's lost claims (a kill between the server's acceptance and the commit), never beyond, and
always with its key: the same Message-ID, the same Idempotency-Key. Email, whose receiver
cannot drop a repeat, is recorded message by message: at most one SMTP duplicate per kill.
A webhook batch is recorded after its sends, so a kill may repeat a batch of requests, each
with its Idempotency-Key (the receiver applies each key once).

Between a kill and the restart the harness lets the dead worker's leases lapse: its partition
leases (15 s) and its outbox claims (120 s) are set to expire now. That is what waiting them
out would do, minus the wait: the worker is dead and reaped, nobody else holds them, and
neither duration can be shortened from the environment of `cadenza worker`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.channels import TemplateService
from cadenza.channels.email import message_id
from cadenza.clock import SystemClock
from cadenza.contacts import FieldSpec, declare_field
from cadenza.engine.dispatch import DEFAULT_CONCURRENCY
from cadenza.journeys import JourneyService
from cadenza.store import Store, allocate_ids, dumps, insert_rows, schema
from tests.channels.servers import HttpReceiver, SmtpSink, http_receiver

JOURNEY_KEY = "crash-loop"
ENTRY_EVENT = "crash_loop_started"
SECRET = "crash-loop-secret-0123456789-0123456789-abcdef"
"""CADENZA_SECRET_KEY of the workers (otherwise each would write a secret file)."""


def journey_text(hook_url: str, pause: str) -> str:
    """The journey: email, wait, branch on plan, webhook, wait, email."""
    return f"""
journey: {JOURNEY_KEY}
entry: {{event: {ENTRY_EVENT}}}
steps:
  - {{id: hello, send: {{channel: email, template: crash-hello}}}}
  - {{id: first-pause, wait: {pause}}}
  - id: by-plan
    branch:
      - {{when: {{attr: plan, eq: pro}}, goto: notify-pro}}
      - {{goto: notify-basic}}
  - id: notify-pro
    send: {{channel: webhook, url: "{hook_url}/pro", data: {{plan: pro}}}}
    goto: second-pause
  - id: notify-basic
    send: {{channel: webhook, url: "{hook_url}/basic", data: {{plan: basic}}}}
  - {{id: second-pause, wait: {pause}}}
  - {{id: goodbye, send: {{channel: email, template: crash-goodbye}}}}
"""


@dataclass(frozen=True)
class Scenario:
    """How big the run is and how the worker dies."""

    contacts: int
    """Contacts that enter the journey (in `waves`)."""
    kills: int
    """SIGKILLs to land while work remains; then the last worker finishes."""
    seed: int = 4
    """Seeds the plans and the kill moments."""
    pause: str = "2s"
    """Each of the journey's two waits."""
    waves: int = 4
    """The contacts enter in this many waves of entry events, so that entries, timers and
    sends overlap and the kills land in all of them."""
    wave_every_s: float = 1.0
    """Seconds between waves, from the first worker's start."""
    life_s: tuple[float, float] = (0.2, 2.0)
    """A killed worker lives a uniform draw from this range after it took its leases."""
    pro_share: float = 0.3
    """Share of contacts on the pro plan (the branch's first arm)."""
    timeout_s: float = 90.0
    """The whole loop, from the first start to the last completion."""

    def __post_init__(self) -> None:
        if self.contacts < 1 or self.kills < 0:
            raise ValueError("a crash loop needs at least one contact and no negative kills")
        low, high = self.life_s
        if not 0 < low <= high:
            raise ValueError(f"life_s must be a range of positive seconds, got {self.life_s}")
        if not 1 <= self.waves <= self.contacts or self.wave_every_s < 0:
            raise ValueError("waves must be between 1 and the number of contacts, "
                             "wave_every_s at least 0")


@dataclass(frozen=True)
class Kill:
    """One SIGKILL and what it left behind."""

    at_s: float
    """Seconds since the loop started."""
    lived_s: float
    """How long the worker ran after taking its leases."""
    claims: frozenset[tuple[int, int]]
    """(outbox row, attempt) of every claim left unrecorded ('sending') at the kill."""
    open_enrollments: int
    """Enrollments not yet completed at the kill."""


@dataclass
class Outcome:
    """What the run left: the books (database) and what the receivers saw."""

    scenario: Scenario
    plans: dict[int, str]
    """Contact id -> plan."""
    emails: dict[int, str]
    """Contact id -> address."""
    kills: list[Kill]
    seconds: float
    enrollments: Counter[str]
    """Enrollments by status."""
    rows: list[dict[str, Any]]
    """Every outbox row: id, key, contact_id, node, channel, status, attempts, last_error."""
    http: Counter[str]
    """Requests per Idempotency-Key that the HTTP receiver answered."""
    http_effects: Counter[str]
    """Effects applied per key (the receiver applies a key once)."""
    mails: list[tuple[str, str, str]]
    """(recipient, Message-ID, X-Cadenza-Key) of every message the SMTP server accepted."""
    most_live_claims: int
    """The most rows seen claimed by the running worker at once (its batch)."""
    logs: list[Path] = field(default_factory=list)

    @staticmethod
    def fresh_claims(kills: list[Kill]) -> list[int]:
        """Per kill, the claims it lost (those not already left unrecorded by an earlier
        kill and still waiting to be taken over)."""
        seen: set[tuple[int, int]] = set()
        fresh = []
        for kill in kills:
            fresh.append(len(kill.claims - seen))
            seen |= kill.claims
        return fresh

    @property
    def lost_claims(self) -> Counter[int]:
        """Outbox row -> how many of its claims a kill left unrecorded."""
        claims: set[tuple[int, int]] = set().union(*(k.claims for k in self.kills))
        return Counter(row for row, _ in claims)

    @property
    def smtp_duplicates(self) -> int:
        """Accepted messages beyond the first per Message-ID."""
        return len(self.mails) - len({m[1] for m in self.mails})

    @property
    def http_repeats(self) -> int:
        """Requests beyond the first per Idempotency-Key."""
        return sum(self.http.values()) - len(self.http)

    def figures(self) -> dict[str, Any]:
        """The numbers a report quotes."""
        return {
            "contacts": self.scenario.contacts, "kills": len(self.kills),
            "kills_that_lost_claims": sum(1 for n in self.fresh_claims(self.kills) if n),
            "claims_lost": sum(self.lost_claims.values()),
            "most_live_claims": self.most_live_claims,
            "outbox_rows": len(self.rows), "smtp_messages": len(self.mails),
            "smtp_duplicates": self.smtp_duplicates,
            "http_requests": sum(self.http.values()), "http_repeats": self.http_repeats,
            "seconds": round(self.seconds, 1),
        }


# --- the HTTP receiver ---------------------------------------------------------------------


@contextmanager
def busy_http_receiver() -> Iterator[HttpReceiver]:
    """The channel tests' receiver (its listen backlog takes a busy dispatcher)."""
    with http_receiver() as receiver:
        yield receiver


# --- setting up ----------------------------------------------------------------------------


def seed_workspace(store: Store, scenario: Scenario, hook_url: str
                   ) -> tuple[dict[int, str], dict[int, str]]:
    """Declare `plan`, save the templates, publish the journey and create the contacts
    (without their entry events); return plans and addresses by contact id."""
    clock = SystemClock()
    with store.begin() as conn:
        declare_field(conn, FieldSpec("plan", "enum", values=("basic", "pro")), clock.now_ms())
    templates = TemplateService(store, clock)
    templates.save("crash-hello", "email", "Hello", "Hello {{ contact.email }}, welcome.")
    templates.save("crash-goodbye", "email", "Goodbye", "That was all, {{ contact.email }}.")
    journeys = JourneyService(store, clock)
    journeys.save_draft(journey_text(hook_url, scenario.pause))
    journeys.publish(JOURNEY_KEY)

    rng = random.Random(scenario.seed)
    now = clock.now_ms()
    with store.begin() as conn:
        ids = allocate_ids(conn, schema.contacts, scenario.contacts)
        plans = {cid: "pro" if rng.random() < scenario.pro_share else "basic" for cid in ids}
        emails = {cid: f"c{cid}@crash.test" for cid in ids}
        insert_rows(conn, schema.contacts,
                    ("id", "email", "user_id", "attributes", "created_at", "updated_at"),
                    [(cid, emails[cid], f"crash-{cid}", dumps({"plan": plans[cid]}), now, now)
                     for cid in ids])
    return plans, emails


def send_entry_events(store: Store, contact_ids: list[int]) -> None:
    """Every contact sends the entry event (one bulk insert, as ingestion would store it)."""
    now = SystemClock().now_ms()
    with store.begin() as conn:
        insert_rows(conn, schema.events, (
            "message_id", "contact_id", "type", "name", "properties", "context", "source",
            "timestamp", "received_at"),
            [(f"crash-entry-{cid}", cid, "track", ENTRY_EVENT, "{}", "{}", "crash-loop",
              now, now) for cid in contact_ids])


# --- the workers ---------------------------------------------------------------------------


class Workers:
    """`cadenza worker` subprocesses, each in a process group of its own: only those groups
    are ever signalled, and `close` ends whatever is still running."""

    def __init__(self, database_url: str, smtp_port: int, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith("CADENZA_")}
        self.env.update(CADENZA_DATABASE_URL=database_url, CADENZA_SMTP_HOST="127.0.0.1",
                        CADENZA_SMTP_PORT=str(smtp_port), CADENZA_SMTP_TIMEOUT_S="10",
                        CADENZA_SECRET_KEY=SECRET, CADENZA_LOG_LEVEL="warning",
                        CADENZA_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8")  # the receiver
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> subprocess.Popen[bytes]:
        """A new worker; its output goes to worker-N.log in the work directory."""
        log = self.workdir / f"worker-{len(self.started)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "cadenza", "worker"],
                                    cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.started.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker's process group and reap it."""
        if proc.returncode is None:
            # The group exists until its leader is reaped: the id cannot be someone else's.
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
        """SIGTERM (a clean stop that releases the partitions); SIGKILL if it hangs."""
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            Workers.kill(proc)
            raise

    def close(self) -> None:
        """Kill and reap every worker still running (teardown)."""
        for proc in self.started:
            if proc.poll() is None:
                self.kill(proc)

    def tail(self, chars: int = 3000) -> str:
        """The end of the latest worker's output, for failure messages."""
        if not self.logs or not self.logs[-1].exists():
            return "(no worker output)"
        return self.logs[-1].read_text(errors="replace")[-chars:] or "(empty worker output)"


@contextmanager
def workers(database_url: str, smtp_port: int, workdir: Path) -> Iterator[Workers]:
    """Workers that are all gone when the block ends, however it ends."""
    pool = Workers(database_url, smtp_port, workdir)
    try:
        yield pool
    finally:
        pool.close()


# --- reading the database ------------------------------------------------------------------


def _mark(store: Store) -> str:
    return "?" if store.is_sqlite else "%s"


def _scalar(store: Store, sql: str, *params: Any) -> int:
    with store.read() as conn:
        return int(conn.exec_driver_sql(sql.replace("?", _mark(store)), params).scalar_one())


def holds_leases(store: Store, pid: int) -> bool:
    """True once the worker with this process id holds partitions (it is running)."""
    return _scalar(store, "SELECT count(*) FROM engine_leases WHERE owner LIKE ?",
                   f"%:{pid}:%") > 0


@dataclass
class Progress:
    """Polls the database for what is left to do, and watches the size of claims."""

    store: Store
    contacts: int
    most_live_claims: int = 0

    def open_work(self) -> int:
        """Enrollments not completed plus outbox rows not yet delivered (0: all done)."""
        mark = _mark(self.store)
        with self.store.read() as conn:
            completed, rows, undelivered, live = conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM enrollments WHERE status = 'completed'), "
                "(SELECT count(*) FROM outbox), "
                "(SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')), "
                "(SELECT count(*) FROM outbox WHERE status = 'sending' "
                f"AND claimed_until > {mark})", (SystemClock().now_ms(),)).one()
        # Claims of killed workers have lapsed (claimed_until in the past): `live` counts
        # the running worker's claims only.
        self.most_live_claims = max(self.most_live_claims, int(live))
        # The last email's row is written in the transaction that completes the enrollment.
        return self.contacts - int(completed) + int(undelivered) + \
            (0 if rows >= 3 * self.contacts else 1)

    def completed(self) -> int:
        """Enrollments completed."""
        return _scalar(self.store, "SELECT count(*) FROM enrollments WHERE status = 'completed'")


def unrecorded_claims(store: Store) -> frozenset[tuple[int, int]]:
    """(row, attempt) of outbox rows in 'sending': claimed, not recorded."""
    with store.read() as conn:
        return frozenset((int(r[0]), int(r[1])) for r in conn.exec_driver_sql(
            "SELECT id, attempts FROM outbox WHERE status = 'sending'"))


def lapse_leases(store: Store) -> None:
    """Let the (dead) worker's partition leases and outbox claims expire now."""
    mark = _mark(store)
    now = SystemClock().now_ms()
    with store.begin() as conn:
        conn.exec_driver_sql("UPDATE engine_leases SET expires_at = 0 WHERE owner IS NOT NULL")
        conn.exec_driver_sql(f"UPDATE outbox SET claimed_until = {mark}, "
                             f"next_attempt_at = {mark} WHERE status = 'sending'",
                             (now - 1, now - 1))


def read_outcome_rows(store: Store) -> tuple[Counter[str], list[dict[str, Any]]]:
    """Enrollments by status, and every outbox row."""
    with store.read() as conn:
        statuses = Counter({str(s): int(n) for s, n in conn.exec_driver_sql(
            "SELECT status, count(*) FROM enrollments GROUP BY status")})
        rows = [dict(r) for r in conn.exec_driver_sql(
            "SELECT id, idempotency_key AS key, contact_id, node, channel, status, attempts, "
            "last_error FROM outbox ORDER BY id").mappings()]
    return statuses, rows


# --- the loop ------------------------------------------------------------------------------


class _Run:
    """One crash loop in progress: the worker of the moment, the entry waves still to send,
    and the deadline; `wait` polls the database and fails with the worker's output."""

    def __init__(self, store: Store, scenario: Scenario, pool: Workers,
                 contact_ids: list[int]) -> None:
        self.store = store
        self.pool = pool
        self.began = time.monotonic()
        self.deadline = self.began + scenario.timeout_s
        self.scenario = scenario
        self.contact_ids = contact_ids
        self.waves: list[tuple[float, list[int]]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def plan_entries(self) -> None:
        """Send the entry events in waves from now on. Call it once the first worker runs:
        its event cursors start at the end of the log, so earlier events would not count."""
        size = -(-len(self.contact_ids) // self.scenario.waves)
        now = time.monotonic()
        self.waves = [(now + i * self.scenario.wave_every_s, self.contact_ids[i * size:][:size])
                      for i in range(self.scenario.waves)]

    def start_worker(self) -> None:
        """A new worker, once it holds its partitions."""
        proc = self.proc = self.pool.start()
        self.wait(lambda: holds_leases(self.store, proc.pid), "the worker to start")

    def wait(self, condition: Callable[[], bool], what: str, until: float | None = None,
             poll_s: float = 0.05) -> bool:
        """Poll until `condition` holds (True) or `until` passes (False), sending the entry
        waves that fall due; fail at the deadline or if the worker died by itself."""
        while True:
            while self.waves and self.waves[0][0] <= time.monotonic():
                send_entry_events(self.store, self.waves.pop(0)[1])
            if condition():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the worker exited by itself ({self.proc.returncode}) "
                                     f"while waiting for {what}:\n{self.pool.tail()}")
            now = time.monotonic()
            if now > self.deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.pool.tail()}")
            if until is not None and now >= until:
                return False
            time.sleep(poll_s if until is None else max(0.0, min(poll_s, until - now)))


def run_crash_loop(store: Store, database_url: str, smtp: SmtpSink, http: HttpReceiver,
                   scenario: Scenario, workdir: Path,
                   progress: Callable[[str], None] | None = None) -> Outcome:
    """Seed, run, kill and restart the worker, let the last one finish; the outcome."""
    plans, emails = seed_workspace(store, scenario, http.url)
    rng = random.Random(scenario.seed)
    kills: list[Kill] = []
    say = progress or (lambda _text: None)
    books = Progress(store, scenario.contacts)

    with workers(database_url, smtp.port, workdir) as pool:
        run = _Run(store, scenario, pool, list(plans))
        run.start_worker()
        run.plan_entries()
        while len(kills) < scenario.kills:
            up = time.monotonic()
            life = rng.uniform(*scenario.life_s)
            if run.wait(lambda: books.open_work() == 0, "the next kill", until=up + life):
                break  # finished before this kill: it would not land on any work
            assert run.proc is not None
            Workers.kill(run.proc)
            kill = Kill(time.monotonic() - run.began, time.monotonic() - up,
                        unrecorded_claims(store), scenario.contacts - books.completed())
            kills.append(kill)
            say(f"kill {len(kills)} after {kill.lived_s:.2f}s: "
                f"{Outcome.fresh_claims(kills)[-1]} claims lost "
                f"({len(kill.claims)} unrecorded), {kill.open_enrollments} enrollments open")
            lapse_leases(store)
            run.start_worker()
        run.wait(lambda: books.open_work() == 0,
                 "every enrollment to complete and every row to be delivered", poll_s=0.1)
        seconds = time.monotonic() - run.began
        assert run.proc is not None
        code = Workers.stop(run.proc)
        assert code == 0, f"the last worker did not stop cleanly ({code}):\n{pool.tail()}"
        logs = list(pool.logs)

    statuses, rows = read_outcome_rows(store)
    with http.lock:
        requests = Counter(r.key for r in http.requests if r.key is not None)
        effects = Counter(http.effects)
    mails = [(m.rcpt, m.message_id, str(m.mime["X-Cadenza-Key"])) for m in smtp.mails]
    return Outcome(scenario, plans, emails, kills, seconds, statuses, rows, requests, effects,
                   mails, books.most_live_claims, logs)


# --- the checks ----------------------------------------------------------------------------

DISPATCH_BATCH = 100
"""Rows one dispatch batch claims at most (`Dispatcher.run_forever`'s default limit)."""


class OversizedClaim(AssertionError):
    """A dispatcher held more rows than one batch: a kill then loses all of them."""


def expected_rows(outcome: Outcome) -> Counter[tuple[int, str, str]]:
    """(contact, step, channel) of every row the journey implies, once each."""
    expected: Counter[tuple[int, str, str]] = Counter()
    for cid, plan in outcome.plans.items():
        expected[(cid, "hello", "email")] += 1
        expected[(cid, f"notify-{plan}", "webhook")] += 1
        expected[(cid, "goodbye", "email")] += 1
    return expected


def assert_books(outcome: Outcome) -> None:
    """Nothing missing, nothing doubled in the outbox, every receiver's effect once, and
    every repeated delivery carries its key and is paid for by a claim that a kill lost."""
    n = outcome.scenario.contacts
    assert outcome.enrollments == Counter({"completed": n}), outcome.enrollments

    rows = outcome.rows
    found = Counter((r["contact_id"], r["node"], r["channel"]) for r in rows)
    expected = expected_rows(outcome)
    assert found == expected, (f"missing: {list((expected - found).items())[:5]}, "
                               f"unexpected: {list((found - expected).items())[:5]}")
    keys = Counter(r["key"] for r in rows)
    assert max(keys.values()) == 1, [k for k, c in keys.items() if c > 1][:5]
    assert Counter(r["status"] for r in rows) == Counter({"sent": len(rows)}), \
        [r for r in rows if r["status"] != "sent"][:5]
    failed = [r for r in rows if r["last_error"]]
    assert failed == [], (len(failed), failed[:3])

    # Every attempt after the first took over a claim that a kill left unrecorded.
    lost = outcome.lost_claims
    unexplained = [r for r in rows if r["attempts"] - 1 > lost[r["id"]]]
    assert unexplained == [], unexplained[:5]

    hooks = {r["key"]: r for r in rows if r["channel"] == "webhook"}
    assert set(outcome.http_effects) == set(hooks), "webhook effects missing or unknown"
    assert set(outcome.http_effects.values()) == {1}
    assert set(outcome.http) == set(hooks)
    repeats = {k: c for k, c in outcome.http.items() if c - 1 > lost[hooks[k]["id"]]}
    assert repeats == {}, f"requests repeated beyond the claims kills lost: {repeats}"

    mails = {r["key"]: r for r in rows if r["channel"] == "email"}
    by_id = {message_id(key): row for key, row in mails.items()}
    copies = Counter(mid for _, mid, _ in outcome.mails)
    assert set(copies) == set(by_id), "messages missing, or with unknown Message-IDs"
    strays = [(rcpt, mid, key) for rcpt, mid, key in outcome.mails
              if key != by_id[mid]["key"] or rcpt != outcome.emails[by_id[mid]["contact_id"]]]
    assert strays == [], strays[:5]
    duplicates = {m: c for m, c in copies.items() if c - 1 > lost[by_id[m]["id"]]}
    assert duplicates == {}, f"messages duplicated beyond the claims kills lost: {duplicates}"
    # The dispatcher records each accepted email at once (in small groups): only a kill that
    # lands between the SMTP server's acceptance and that commit repeats a message, and then
    # at most the sends in flight (the dispatcher's concurrency; each holds its place until
    # its record commits).
    assert sum(c - 1 for c in copies.values()) <= len(outcome.kills) * DEFAULT_CONCURRENCY, (
        f"{sum(c - 1 for c in copies.values())} SMTP duplicates from {len(outcome.kills)} "
        "kills")


def assert_claims_within_batch(outcome: Outcome) -> None:
    """The worker never held more than one batch of claims, so a kill lost at most that."""
    if outcome.most_live_claims > DISPATCH_BATCH:
        raise OversizedClaim(f"the worker held {outcome.most_live_claims} rows claimed at "
                             f"once; a dispatch batch claims at most {DISPATCH_BATCH}")
    fresh = Outcome.fresh_claims(outcome.kills)
    if max(fresh, default=0) > DISPATCH_BATCH:
        raise OversizedClaim(f"kills left {fresh} fresh claims unrecorded; a dispatch batch "
                             f"claims at most {DISPATCH_BATCH}")


__all__ = ["DISPATCH_BATCH", "Kill", "Outcome", "OversizedClaim", "Scenario", "Workers",
           "assert_books", "assert_claims_within_batch", "busy_http_receiver",
           "run_crash_loop", "workers"]
