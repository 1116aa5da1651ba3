"""Loading facts for a batch: right values, both dialects, one statement per kind of need."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from cadenza.clock import FakeClock
from cadenza.contacts import ConsentChange, ConsentStatus, record_consent
from cadenza.events.service import EventService
from cadenza.segments import Facts, Needs, load_facts, parse_condition
from cadenza.store import Store, select_in
from tests.segments.conftest import NOW, Seed

DAY = 86_400_000
ALL = Needs(attributes=True, tags=True,
            counts=frozenset({("purchased", 30 * DAY), ("purchased", 0), ("opened", DAY)}),
            consents=frozenset({("email", "marketing"), ("sms", "marketing")}))


def load(store: Store, ids: Sequence[int], needs: Needs = ALL,
         now: int = NOW) -> dict[int, Facts]:
    with store.read() as conn:
        return load_facts(conn, ids, needs, now)


def test_every_kind_of_fact(seed: Seed, store: Store) -> None:
    ann = seed.contact(1, {"plan": "pro", "age": 41, "interests": ["golf"]},
                       email="ann@example.com", phone="+14155550100", user_id="u1",
                       timezone="Europe/Oslo", locale="nb-NO")
    bob = seed.contact(2)
    for days_ago in (1, 10, 29, 31, 400):
        seed.event(ann, "purchased", NOW - days_ago * DAY)
    seed.event(ann, "opened", NOW - 3_600_000)
    seed.event(ann, "opened", NOW - 2 * DAY)
    seed.event(bob, "viewed", NOW)
    seed.consent(ann, "email", "marketing", "opted_in")
    seed.consent(ann, "sms", "marketing", "opted_out")
    seed.consent(ann, "email", "newsletter", "opted_in")  # not needed: not loaded
    seed.tag(ann, "vip")
    seed.tag(ann, "beta")
    seed.write()

    found = load(store, [ann, bob])
    assert found[ann] == Facts(
        ann,
        attributes={"plan": "pro", "age": 41, "interests": ["golf"],
                    "email": "ann@example.com", "phone": "+14155550100", "user_id": "u1",
                    "timezone": "Europe/Oslo", "locale": "nb-NO"},
        counts={("purchased", 30 * DAY): 3, ("purchased", 0): 5, ("opened", DAY): 1},
        consents={("email", "marketing"): "opted_in", ("sms", "marketing"): "opted_out"},
        tags=frozenset({"vip", "beta"}),
    )
    assert found[bob] == Facts(bob)


def test_the_window_starts_exactly_window_ms_ago(seed: Seed, store: Store) -> None:
    cid = seed.contact(1)
    seed.event(cid, "purchased", NOW - 30 * DAY)
    seed.event(cid, "purchased", NOW - 30 * DAY - 1)
    seed.write()
    found = load(store, [cid], Needs(counts=frozenset({("purchased", 30 * DAY)})))
    assert found[cid].counts == {("purchased", 30 * DAY): 1}


def test_columns_are_the_truth_for_built_in_names(seed: Seed, store: Store) -> None:
    cid = seed.contact(1, {"email": "stale@example.com", "phone": "+1", "plan": "free"},
                       email="ann@example.com")
    seed.write()
    assert load(store, [cid])[cid].attributes == {"email": "ann@example.com", "plan": "free"}


def test_unknown_and_repeated_ids_and_empty_batches(seed: Seed, store: Store) -> None:
    cid = seed.contact(1, {"plan": "pro"})
    seed.write()
    found = load(store, [cid, 999, cid])
    assert sorted(found) == [cid, 999]
    assert found[999] == Facts(999)
    assert load(store, []) == {}


def test_nothing_needed_runs_nothing(seed: Seed, store: Store,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_statements(monkeypatch)
    assert load(store, [1, 2], Needs()) == {1: Facts(1), 2: Facts(2)}
    assert calls == Counter()


def count_statements(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count select_in calls by the table they read, and the chunks they run."""
    calls: Counter[str] = Counter()

    def counting(conn: Any, sql: str, values: Sequence[Any], **kwargs: Any) -> Any:
        table = sql.split(" FROM ")[1].split()[0]
        calls[table] += 1
        calls["chunks"] += -(-len(values) // 500)
        return select_in(conn, sql, values, **kwargs)

    monkeypatch.setattr("cadenza.segments.facts.select_in", counting)
    return calls


def test_one_statement_per_kind_of_need(seed: Seed, store: Store,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [seed.contact(cid, {"n": cid}) for cid in range(1, 1201)]
    for cid in ids[::7]:
        seed.event(cid, "purchased", NOW - DAY)
        seed.tag(cid, "vip")
        seed.consent(cid, "email", "marketing", "opted_in")
    seed.write()
    calls = count_statements(monkeypatch)
    found = load(store, ids)
    # One statement per kind, whatever the number of contacts and of count pairs; each
    # runs in chunks of 500 ids.
    assert calls == Counter(contacts=1, events=1, consents=1, contact_tags=1, chunks=12)
    assert sum(f.counts.get(("purchased", 0), 0) for f in found.values()) == len(ids[::7])
    assert sum("vip" in f.tags for f in found.values()) == len(ids[::7])


def test_many_count_pairs_are_split_into_bounded_statements(seed: Seed, store: Store,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    cid = seed.contact(1)
    for day in range(1, 61):
        seed.event(cid, f"e{day % 3}", NOW - day * DAY + 1)
    seed.write()
    pairs = frozenset((f"e{n}", days * DAY) for n in range(3) for days in range(1, 41))
    calls = count_statements(monkeypatch)
    found = load(store, [cid], Needs(counts=pairs))
    assert calls["events"] == 3  # 120 pairs, at most 50 per statement
    for name, window in pairs:
        expected = sum(1 for day in range(1, 61)
                       if f"e{day % 3}" == name and day * DAY - 1 <= window)
        assert found[cid].counts.get((name, window), 0) == expected


@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_sqlite_runs_one_query_per_chunk(seed: Seed, store: Store) -> None:
    ids = [seed.contact(cid) for cid in range(1, 1001)]
    seed.write()
    statements: list[str] = []
    with store.read() as conn:
        driver: Any = conn.connection.dbapi_connection
        driver.set_trace_callback(statements.append)
        try:
            load_facts(conn, ids, ALL, NOW)
        finally:
            driver.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 4 * 2  # four kinds, two chunks of 500 each


def test_agrees_with_a_python_model_on_random_data(seed: Seed, store: Store) -> None:
    rng = random.Random(20260101)
    names = ("purchased", "opened", "viewed")
    ids = [seed.contact(cid, {"score": rng.randint(0, 9)}) for cid in range(1, 301)]
    events: list[tuple[int, str, int]] = []
    for _ in range(3000):
        event = (rng.choice(ids), rng.choice(names), NOW - rng.randint(0, 60 * DAY))
        seed.event(*event)
        events.append(event)
    statuses = ("opted_in", "opted_out", "pending")
    consents: dict[tuple[int, str, str], str] = {}
    for cid in rng.sample(ids, 150):
        for channel in rng.sample(("email", "sms"), rng.randint(1, 2)):
            consents[(cid, channel, "marketing")] = rng.choice(statuses)
            seed.consent(cid, channel, "marketing", consents[(cid, channel, "marketing")])
    tags = {(cid, tag) for cid in rng.sample(ids, 100) for tag in rng.sample("abc", 2)}
    for cid, tag in tags:
        seed.tag(cid, tag)
    seed.write()

    windows = (0, DAY, 7 * DAY, 30 * DAY)
    needs = Needs(attributes=True, tags=True,
                  counts=frozenset((n, w) for n in names for w in windows),
                  consents=frozenset({("email", "marketing"), ("sms", "marketing")}))
    asked = [*rng.sample(ids, 200), 10_000]
    found = load(store, asked, needs)
    for cid in asked:
        expected_counts = {}
        for name in names:
            for window in windows:
                n = sum(1 for c, e, at in events
                        if c == cid and e == name and (not window or at >= NOW - window))
                if n:
                    expected_counts[(name, window)] = n
        assert found[cid].counts == expected_counts
        assert found[cid].consents == {(ch, p): s for (c, ch, p), s in consents.items()
                                       if c == cid}
        assert found[cid].tags == {t for c, t in tags if c == cid}
        assert set(found[cid].attributes) == ({"score"} if cid <= 300 else set())


@pytest.fixture
def ingest(events: EventService, clock: FakeClock) -> EventService:
    """The ingestion service, its clock ten days before NOW."""
    clock.set(NOW - 10 * DAY)
    return events


def test_end_to_end_from_ingested_traffic(ingest: EventService, clock: FakeClock,
                                          store: Store) -> None:
    result = ingest.ingest([
        {"type": "identify", "userId": "u1", "messageId": "m1",
         "traits": {"email": "Ann@Example.com", "plan": "pro", "seats": 12}},
        {"type": "track", "userId": "u1", "event": "purchased", "messageId": "m2",
         "properties": {"total": 120}},
    ])
    cid = result.contact_ids[0]
    clock.advance(9 * DAY)
    ingest.ingest([{"type": "track", "userId": "u1", "event": "purchased", "messageId": "m3"}])
    with store.begin() as conn:
        record_consent(conn, [ConsentChange(cid, "email", "marketing", ConsentStatus.OPTED_IN,
                                            "form", clock.now_ms())])
    condition = parse_condition({"all": [
        {"attr": "email", "eq": "ann@example.com"},
        {"attr": "plan", "in": ["pro", "enterprise"]},
        {"attr": "seats", "gte": 10},
        {"count": "purchased", "within": "7d", "eq": 1},
        {"count": "purchased", "gte": 2},
        {"consent": "email", "purpose": "marketing"},
    ]}, "when")
    found = load(store, [cid], condition.needs(), now=clock.now_ms())
    seen: dict[str, Any] = {}
    assert condition.evaluate(found[cid], seen), seen
    assert seen["count.purchased.7d"] == 1
