"""The reference journey against a model: random contacts, signups, purchases, clock jumps
(to random moments and exactly onto due times), clean restarts and crashes, checked after
every step against a few lines of Python that say who should be where and what should have
been sent (SQLite only; kept small so the suite stays fast).

The model, for the journey in `conftest.REFERENCE`: a contact enters on its first signup
(re-entry is never) and gets `welcome`; two days after entering, `pro-tips` or `basics` by
plan, and the wait for a purchase starts then; a purchase during that wait ends the journey;
three days after the wait started, those who did not buy get `last-chance`. Each pass runs
events first, then due timers, at the clock's current time.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cadenza.clock import FakeClock
from cadenza.engine import Engine
from cadenza.events import EventService
from cadenza.journeys import compile_definition, load_journey
from cadenza.store import Store, schema
from tests.engine.conftest import DAY, REFERENCE

LEASE_MS = 15_000


@dataclass
class Person:
    """Where the model says one contact is."""

    cid: int
    plan: str
    node: str | None = None
    """None until the contact enters."""
    status: str | None = None
    wake: int | None = None


class Model:
    """The reference journey in plain Python."""

    def __init__(self) -> None:
        self.people: dict[str, Person] = {}
        self.sent: list[tuple[int, str, int]] = []
        self.pending: list[tuple[str, str]] = []

    def settle(self, now: int) -> None:
        """One engine round at `now`: pending events in order, then due timers."""
        for user, name in self.pending:
            p = self.people[user]
            if name == "signed_up" and p.node is None:
                p.node, p.status, p.wake = "settle", "waiting", now + 2 * DAY
                self.sent.append((p.cid, "welcome", now))
            elif name == "purchased" and (p.node, p.status) == ("wait-buy", "waiting"):
                p.status, p.wake = "completed", None
        self.pending = []
        for p in self.people.values():
            if p.status != "waiting" or p.wake is None or p.wake > now:
                continue
            if p.node == "settle":
                self.sent.append((p.cid, "pro-tips" if p.plan == "pro" else "basics", now))
                p.node, p.wake = "wait-buy", now + 3 * DAY
            elif p.node == "wait-buy":
                self.sent.append((p.cid, "last-chance", now))
                p.node, p.status, p.wake = "last-chance", "completed", None

    def next_due(self) -> int | None:
        wakes = [p.wake for p in self.people.values() if p.status == "waiting" and p.wake]
        return min(wakes) if wakes else None


class ReferenceJourney(RuleBasedStateMachine):
    """Random traffic through the reference journey, one engine round after every step."""

    users = Bundle("users")
    template: Path
    workdir: Path
    _number = 0

    def __init__(self) -> None:
        super().__init__()
        ReferenceJourney._number += 1
        path = self.workdir / f"machine-{self._number}.db"
        shutil.copy(self.template, path)
        self.path = path
        self.store = Store.create(f"sqlite:///{path}")
        self.clock = FakeClock()
        self.events = EventService(self.store, self.clock)
        self.engine = self._engine()
        self.model = Model()
        self.messages = 0
        self.sent_ids: list[tuple[str, str, str]] = []
        self._publish()

    def _engine(self) -> Engine:
        engine = Engine(self.store, self.clock, batch_size=1_000, lease_ms=LEASE_MS)
        engine.start()
        return engine

    def _publish(self) -> None:
        definition = load_journey(REFERENCE)
        compile_definition(definition)
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            jid = conn.execute(schema.journeys.insert().values(
                key="reference", name="reference", status="live", created_at=now,
                updated_at=now).returning(schema.journeys.c.id)).scalar_one()
            vid = conn.execute(schema.journey_versions.insert().values(
                journey_id=jid, number=1, status="published", definition=definition,
                content_hash="x", created_at=now, published_at=now,
            ).returning(schema.journey_versions.c.id)).scalar_one()
            conn.execute(schema.journeys.update().where(schema.journeys.c.id == jid)
                         .values(live_version_id=vid))

    def teardown(self) -> None:
        self.store.dispose()
        self.path.unlink(missing_ok=True)

    def _round(self) -> None:
        self.engine.run_once()
        self.model.settle(self.clock.now_ms())

    def _track(self, user: str, name: str, message_id: str | None = None) -> None:
        if message_id is None:
            self.messages += 1
            message_id = f"m-{self.messages}"
            self.sent_ids.append((user, name, message_id))
            self.model.pending.append((user, name))
        result = self.events.ingest([{"type": "track", "userId": user, "event": name,
                                      "messageId": message_id}])
        assert not result.rejected, result.rejected

    # --- rules -----------------------------------------------------------------------------

    @initialize(target=users)
    def first_contact(self) -> str:
        user = self._add("pro")
        self._track(user, "signed_up")
        self._round()
        return user

    @rule(target=users, plan=st.sampled_from(["pro", "basic"]), signs_up=st.booleans())
    def add_contact(self, plan: str, signs_up: bool) -> str:
        user = self._add(plan)
        if signs_up:
            self._track(user, "signed_up")
            self._round()
        return user

    def _add(self, plan: str) -> str:
        user = f"user-{len(self.model.people)}"
        result = self.events.ingest([{"type": "identify", "userId": user,
                                      "messageId": f"id-{user}", "traits": {"plan": plan}}])
        assert not result.rejected, result.rejected
        self.model.people[user] = Person(int(result.contact_ids[0]), plan)
        self._round()
        return user

    @rule(user=users)
    def sign_up(self, user: str) -> None:
        self._track(user, "signed_up")
        self._round()

    @rule(user=users)
    def purchase(self, user: str) -> None:
        self._track(user, "purchased")
        self._round()

    @precondition(lambda self: bool(self.sent_ids))
    @rule(data=st.data())
    def replay_a_message(self, data: st.DataObject) -> None:
        """The same message id again: ingestion drops it, the journey sees nothing."""
        user, name, message_id = data.draw(st.sampled_from(self.sent_ids))
        self._track(user, name, message_id)
        self._round()

    @rule(ms=st.one_of(st.integers(1, 6 * DAY),
                       st.sampled_from([1, 60_000, DAY, 2 * DAY, 3 * DAY, 2 * DAY - 1])))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self._round()

    @precondition(lambda self: self.model.next_due() is not None)
    @rule(early=st.sampled_from([0, 0, 1]))
    def advance_to_next_due(self, early: int) -> None:
        due = self.model.next_due()
        assert due is not None
        self.clock.set(max(self.clock.now_ms(), due - early))
        self._round()

    @rule(crash=st.booleans())
    def restart(self, crash: bool) -> None:
        """A new worker on the same database, after a clean shutdown or a crash (the old
        worker dies holding its lease: the new one carries on once it expires)."""
        if crash:
            self.engine = Engine(self.store, self.clock, batch_size=1_000, lease_ms=LEASE_MS)
            self.clock.advance(LEASE_MS)
        else:
            self.engine.leases.release()
            self.engine = self._engine()
        self._round()

    # --- what must hold --------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        with self.store.read() as conn:
            enrolled = {int(c): (s, n, w) for c, s, n, w in conn.exec_driver_sql(
                "SELECT contact_id, status, node, wake_at FROM enrollments")}
            total = conn.exec_driver_sql("SELECT count(*) FROM enrollments").scalar_one()
            outbox = [(int(c), t, int(a)) for c, t, a in conn.exec_driver_sql(
                "SELECT contact_id, template, created_at FROM outbox")]
            keys = [k for k, in conn.exec_driver_sql("SELECT idempotency_key FROM outbox")]
            stats = {n: (int(e), int(d)) for n, e, d in conn.exec_driver_sql(
                "SELECT node, entered, departed FROM journey_step_stats")}
        expected = {p.cid: (p.status, p.node, p.wake)
                    for p in self.model.people.values() if p.node is not None}
        assert enrolled == expected
        assert total == len(expected)  # one enrollment per contact, ever
        assert sorted(outbox) == sorted(self.model.sent)
        assert len(keys) == len(set(keys))
        here = Counter(n for s, n, _ in enrolled.values() if s == "waiting")
        for node, (entered, departed) in stats.items():
            assert entered == departed + here[node], (node, entered, departed)


# Passing takes seconds; a failure is shrunk to a minimal sequence of steps, which can take
# a few minutes.
@pytest.mark.timeout(600)
def test_reference_journey_matches_its_model(sqlite_template: Path, tmp_path: Path) -> None:
    ReferenceJourney.template = sqlite_template
    ReferenceJourney.workdir = tmp_path
    run_state_machine_as_test(ReferenceJourney, settings=settings(
        max_examples=25, stateful_step_count=30, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))


@pytest.mark.parametrize("plan", ["pro", "basic"])
def test_model_walks_the_reference_journey(plan: str) -> None:
    # The model itself, on one path, so a wrong model fails here rather than in the machine.
    model = Model()
    model.people["u"] = Person(1, plan)
    model.pending.append(("u", "signed_up"))
    model.settle(0)
    model.settle(2 * DAY - 1)
    model.settle(2 * DAY)
    model.pending.append(("u", "purchased"))
    model.settle(2 * DAY + 1)
    model.settle(9 * DAY)
    branch = "pro-tips" if plan == "pro" else "basics"
    assert model.sent == [(1, "welcome", 0), (1, branch, 2 * DAY)]
    assert (model.people["u"].node, model.people["u"].status) == ("wait-buy", "completed")

