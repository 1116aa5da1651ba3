"""Real time against recomputing from scratch: random events, attribute and tag changes,
clock jumps and listener runs; after every run, each segment's members are exactly who its
condition matches (SQLite; kept small so the suite stays fast)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from cadenza.clock import FakeClock
from cadenza.events import EventService
from cadenza.segments import SegmentService, parse_condition
from cadenza.segments.matching import matching_ids
from cadenza.segments.sql import select_matching
from cadenza.store import Store, changes, schema
from tests.segments.segment_support import declare, engine_with_listener, members

HOUR = 3_600_000
USERS = ("ann", "bob", "cat")
SEGMENTS = {
    "buyers": {"count": "purchased", "within": "2d"},
    "pros": {"attr": "plan", "eq": "pro"},
    "vips": {"tag": "vip"},
    "pro-buyers": {"all": [{"segment": "pros"}, {"segment": "buyers"}]},
    "not-vip-or-viewer": {"any": [{"not": {"segment": "vips"}},
                                  {"count": "viewed", "within": "1d", "lt": 1}]},
}


class RealTime(RuleBasedStateMachine):
    """Drive the listener; compare with the Python path from scratch."""

    template: Path
    workdir: Path
    _number = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        path = self.workdir / f"machine-{next(self._number)}.db"
        shutil.copy(self.template, path)
        self.store = Store.create(f"sqlite:///{path}")
        self.clock = FakeClock()
        self.events = EventService(self.store, self.clock)
        self.messages = itertools.count()
        declare(self.store, self.clock, plan="string")
        self.ids: dict[str, int] = {}
        for user in USERS:
            result = self.events.ingest([{"type": "identify", "userId": user,
                                          "messageId": f"seed-{user}",
                                          "traits": {"plan": "basic"}}])
            self.ids[user] = int(result.contact_ids[0])
        self.engine, self.listener = engine_with_listener(self.store, self.clock,
                                                          window_scan_ms=1)
        service = SegmentService(self.store, self.clock)
        for key, condition in SEGMENTS.items():
            service.create({"key": key, "condition": condition})

    def teardown(self) -> None:
        self.store.dispose()

    @rule(user=st.sampled_from(USERS), name=st.sampled_from(["purchased", "viewed", "other"]))
    def track(self, user: str, name: str) -> None:
        self.events.ingest([{"type": "track", "userId": user, "event": name,
                             "messageId": f"m{next(self.messages)}"}])

    @rule(name=st.sampled_from(["viewed", "other"]))
    def newcomer(self, name: str) -> None:
        user = f"new-{next(self.messages)}"
        result = self.events.ingest([{"type": "track", "userId": user, "event": name,
                                      "messageId": f"m{next(self.messages)}"}])
        self.ids[user] = int(result.contact_ids[0])

    @rule(user=st.sampled_from(USERS), plan=st.sampled_from(["pro", "basic"]))
    def identify(self, user: str, plan: str) -> None:
        self.events.ingest([{"type": "identify", "userId": user, "traits": {"plan": plan},
                             "messageId": f"m{next(self.messages)}"}])

    @rule(user=st.sampled_from(USERS), on=st.booleans())
    def tag(self, user: str, on: bool) -> None:
        cid = self.ids[user]
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            t = schema.contact_tags
            conn.execute(t.delete().where(t.c.contact_id == cid, t.c.tag == "vip"))
            if on:
                conn.execute(t.insert().values(contact_id=cid, tag="vip", created_at=now))
            changes.mark_changed(conn, [cid], now)

    @rule(hours=st.integers(min_value=0, max_value=60))
    def wait(self, hours: int) -> None:
        self.clock.advance(hours * HOUR)

    @rule()
    def listen(self) -> None:
        self.engine.run_once()
        now = self.clock.now_ms()
        with self.store.read() as conn:
            for key, shape in SEGMENTS.items():
                # Referenced segments are read from the stored members.
                condition = parse_condition(shape, key)
                expected = set(conn.execute(select_matching(condition, "sqlite", now))
                               .scalars())
                assert expected == set(matching_ids(conn, condition, now))
                assert members(self.store, key) == expected, (key, now)

    @invariant()
    def counts_match(self) -> None:
        s = schema.segments
        with self.store.read() as conn:
            stored = dict(conn.execute(sa.select(s.c.key, s.c.member_count)).all())
        for key in SEGMENTS:
            assert stored[key] == len(members(self.store, key)), key


def test_real_time_matches_a_recompute(sqlite_template: Path, tmp_path: Path) -> None:
    RealTime.template = sqlite_template
    RealTime.workdir = tmp_path
    run_state_machine_as_test(RealTime, settings=settings(
        max_examples=20, stateful_step_count=30, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))
