"""Property: the real-time listener, fed a random event stream in random batches, leaves
exactly the scores `score_all` computes — for random rules, caps, decay and bounds."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.clock import FakeClock
from cadenza.leads.score_service import ScoreService
from cadenza.leads.scoring import ScoreListener
from cadenza.store import Store, fetch, schema
from tests.leads.scoring_support import DAY, NOW, add_contacts, add_events, declare

PARTS = list(range(schema.PARTITIONS))
EVENTS = ("Page Viewed", "Demo Requested", "Email Opened")
PATHS = ("/", "/pricing")
_keys = itertools.count()

event_rules = st.lists(st.tuples(st.sampled_from(EVENTS), st.sampled_from((None, *PATHS)),
                                 st.integers(-20, 40).filter(bool),
                                 st.one_of(st.none(), st.tuples(st.integers(1, 60),
                                                                st.sampled_from(("1d", "1w"))))),
                       min_size=1, max_size=4)
models = st.fixed_dictionaries({
    "rules": event_rules,
    "plan_points": st.integers(-10, 30),
    "half_life": st.sampled_from((None, "1d", "7d")),
    "cap": st.one_of(st.none(), st.tuples(st.integers(10, 80), st.sampled_from(("1d", "1w")))),
    "floor": st.sampled_from((None, -10, 0)),
})
streams = st.lists(st.tuples(st.integers(1, 6), st.sampled_from(EVENTS),
                             st.integers(0, 10 * DAY), st.sampled_from(PATHS)),
                   min_size=1, max_size=40)


def _document(spec: dict[str, Any]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for i, (event, path, points, cap) in enumerate(spec["rules"]):
        rule: dict[str, Any] = {"id": f"r{i}", "event": event, "points": points,
                                "stack": True}  # random rules overlap: stack them
        if path:
            rule["where"] = {"path": path}
        if cap:
            rule["cap"] = {"points": cap[0], "per": cap[1]}
        rules.append(rule)
    rules.append({"id": "pro", "when": {"attr": "plan", "eq": "pro"},
                  "points": spec["plan_points"] or 1})
    document: dict[str, Any] = {"key": f"m{next(_keys)}", "rules": rules,
                                "grades": [{"grade": "A", "min": 30}, {"grade": "B"}],
                                "thresholds": [25]}
    for name in ("half_life", "floor"):
        if spec[name] is not None:
            document[name] = spec[name]
    if spec["cap"]:
        document["cap"] = {"points": spec["cap"][0], "per": spec["cap"][1]}
    return document


def _scores(store: Store, key: str) -> dict[int, tuple[float, str | None]]:
    with store.read() as conn:
        mark = "?" if store.is_sqlite else "%s"
        rows = fetch(conn, "SELECT s.contact_id, s.score, s.grade FROM contact_scores s JOIN "
                     f"score_models m ON m.id = s.model_id WHERE m.key = {mark}", (key,))
    return {int(c): (round(float(s), 2), g) for c, s, g in rows}


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=models, stream=streams, batch=st.integers(1, 15))
def test_incremental_equals_score_all(store: Store, spec: dict[str, Any],
                                      stream: list[tuple[int, str, int, str]],
                                      batch: int) -> None:
    clock = FakeClock(NOW)
    with store.begin() as conn:
        conn.exec_driver_sql("DELETE FROM contact_scores")
        conn.exec_driver_sql("DELETE FROM score_ledger")
        conn.exec_driver_sql("DELETE FROM score_models")
        conn.exec_driver_sql("DELETE FROM events")
        conn.exec_driver_sql("DELETE FROM engine_cursors")
        conn.exec_driver_sql("DELETE FROM contacts")
        conn.exec_driver_sql("DELETE FROM fields")
    declare(store, plan="string")
    add_contacts(store, {i: {"plan": "pro" if i % 2 else "free"} for i in range(1, 7)})
    service = ScoreService(store, clock)
    document = _document(spec)
    service.save(document)
    with store.begin() as conn:
        ScoreListener().apply(conn, PARTS, clock.now_ms(), 100)
    service.score_all()  # everyone starts scored, as after a first `score now`
    for start in range(0, len(stream), batch):
        add_events(store, [(cid, name, NOW + at, {"path": path})
                           for cid, name, at, path in stream[start:start + batch]])
        clock.advance(DAY // 3)
        with store.begin() as conn:
            while ScoreListener().apply(conn, PARTS, clock.now_ms(), batch):
                pass
    incremental = _scores(store, document["key"])
    touched = {cid for cid, *_ in stream}
    # Each contact was last re-scored at the clock of the pass that touched it: score
    # everyone in batch at each of those moments and compare the contacts of that moment.
    with store.read() as conn:
        mark = "?" if store.is_sqlite else "%s"
        as_of = dict(fetch(conn, "SELECT contact_id, as_of FROM contact_scores WHERE "
                                 f"model_id = (SELECT id FROM score_models WHERE key = {mark})",
                           (document["key"],)))
    for moment in sorted({as_of[c] for c in touched}):
        clock.set(int(moment))
        service.score_all()
        batch_scores = _scores(store, document["key"])
        due = [c for c in touched if as_of[c] == moment]
        assert {c: incremental[c] for c in due} == {c: batch_scores[c] for c in due}
