"""What journeys do, step kind by step kind and rule by rule: goals and exits, keyed and
filtered waits, re-entry, the database's one-active-enrollment key, splits, contact actions,
tasks, API, attribute and segment entries, pause and resume, shadow versions, and the step
and edge counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from cadenza.clock import FakeClock
from cadenza.engine import Engine
from cadenza.errors import NotFound, ValidationFailed
from cadenza.events import EventService
from cadenza.journeys import compile_definition, load_journey
from cadenza.store import Store, loads, schema
from tests.engine.conftest import DAY, REFERENCE, track

Publish = Callable[[str], int]
MakeContacts = Callable[..., list[int]]


# --- helpers ---------------------------------------------------------------------------------

def rows(store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Every row of a query (`?` marks, rewritten for PostgreSQL)."""
    with store.read() as conn:
        if conn.dialect.name == "postgresql":
            sql = sql.replace("?", "%s")
        return [tuple(r) for r in conn.exec_driver_sql(sql, tuple(params))]


def enrollments(store: Store, journey: str) -> dict[int, list[tuple[str, str, str | None]]]:
    """(status, node, outcome) of each contact's enrollments in `journey` (live only)."""
    out: dict[int, list[tuple[str, str, str | None]]] = {}
    for cid, status, node, outcome in rows(
            store, "SELECT e.contact_id, e.status, e.node, e.outcome FROM enrollments e "
            "JOIN journeys j ON j.id = e.journey_id WHERE j.key = ? AND e.shadow = ? "
            "ORDER BY e.id", journey, False):
        out.setdefault(cid, []).append((status, node, outcome))
    return out


def sent(store: Store, shadow: bool = False) -> Counter[str]:
    """Outbox rows by template (or node, for rows without a template)."""
    return Counter(t or n for t, n in rows(
        store, "SELECT template, node FROM outbox WHERE shadow = ?", shadow))


def sent_to(store: Store, contact_id: int) -> list[str]:
    """Templates sent to one contact, in order."""
    return [t for t, in rows(store, "SELECT template FROM outbox WHERE contact_id = ? "
                             "AND shadow = ? ORDER BY id", contact_id, False)]


def identify(events: EventService, user: str, message_id: str, **traits: Any) -> int:
    """One identify call; returns the contact id."""
    result = events.ingest([{"type": "identify", "userId": user, "messageId": message_id,
                             "traits": traits}])
    assert not result.rejected, result.rejected
    return int(result.contact_ids[0])


def track_many(events: EventService, calls: list[tuple[str, str, str, dict[str, Any]]]
               ) -> None:
    """Several track calls in one ingest: (user, event, message id, properties)."""
    result = events.ingest([{"type": "track", "userId": u, "event": n, "messageId": m,
                             "properties": p} for u, n, m, p in calls])
    assert not result.rejected, result.rejected


def add_version(store: Store, clock: FakeClock, journey_id: int, text: str, number: int
                ) -> int:
    """Insert another published version of a journey; returns its id."""
    definition = load_journey(text)
    compile_definition(definition)
    now = clock.now_ms()
    with store.begin() as conn:
        return int(conn.execute(schema.journey_versions.insert().values(
            journey_id=journey_id, number=number, status="published", definition=definition,
            content_hash=f"x{number}", created_at=now, published_at=now,
        ).returning(schema.journey_versions.c.id)).scalar_one())


def set_journey(store: Store, clock: FakeClock, journey_id: int, **values: Any) -> None:
    """Change a journey row directly (status, live or shadow version)."""
    with store.begin() as conn:
        conn.execute(schema.journeys.update().where(schema.journeys.c.id == journey_id)
                     .values(updated_at=clock.now_ms(), **values))


# --- several admissions in one pass -----------------------------------------------------------

def test_one_event_enters_two_journeys(
        store: Store, events: EventService, engine: Engine, publish: Publish,
        make_contacts: MakeContacts) -> None:
    publish(REFERENCE)
    publish(REFERENCE.replace("journey: reference", "journey: second"))
    ids = make_contacts(2)
    track(events, "user-0", "signed_up", "s-0")
    track(events, "user-1", "signed_up", "s-1")
    engine.run_once()
    assert set(enrollments(store, "reference")) == set(enrollments(store, "second")) == set(ids)
    assert sent(store) == {"welcome": 4}


# --- goals and exit criteria -----------------------------------------------------------------

TRIAL = """
journey: trial
entry: {event: signed_up}
exit_when:
  - {event: purchased, name: bought}
goals:
  - {event: opened_app}
steps:
  - id: welcome
    send: {channel: log, template: welcome}
  - {id: settle, wait: 2d}
  - id: nudge
    send: {channel: log, template: nudge}
"""


def test_exit_goal_records_one_conversion_and_exits(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    publish(TRIAL)
    ids = make_contacts(2)
    track(events, "user-0", "signed_up", "s-0")
    track(events, "user-1", "signed_up", "s-1")
    engine.run_once()
    track(events, "user-0", "purchased", "p-0")
    engine.run_once()
    assert enrollments(store, "trial")[ids[0]] == [("exited", "settle", "goal:bought")]
    track(events, "user-0", "purchased", "p-0b")  # the same goal again: nothing more
    engine.run_once()
    clock.advance(2 * DAY)
    engine.run_once()
    assert rows(store, "SELECT contact_id, goal FROM conversions") == [(ids[0], "bought")]
    assert sent_to(store, ids[0]) == ["welcome"]
    assert sent_to(store, ids[1]) == ["welcome", "nudge"]
    assert enrollments(store, "trial")[ids[1]] == [("completed", "nudge", "completed")]
    steps = [loads(s) for s, in rows(
        store, "SELECT steps FROM journey_history WHERE contact_id = ? ORDER BY seq", ids[0])]
    assert steps[-1][-1][:2] == ["settle", "goal"]


def test_goal_without_exit_records_once_and_keeps_going(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    publish(TRIAL)
    ids = make_contacts(1)
    track(events, "user-0", "signed_up", "s-0")
    engine.run_once()
    track(events, "user-0", "opened_app", "o-1")
    engine.run_once()
    assert enrollments(store, "trial")[ids[0]] == [("waiting", "settle", None)]
    track(events, "user-0", "opened_app", "o-2")
    engine.run_once()
    clock.advance(2 * DAY)
    engine.run_once()
    assert rows(store, "SELECT goal FROM conversions") == [("opened_app",)]
    assert sent_to(store, ids[0]) == ["welcome", "nudge"]
    assert enrollments(store, "trial")[ids[0]] == [("completed", "nudge", "completed")]


def test_goal_before_entry_does_not_count(
        store: Store, events: EventService, engine: Engine, publish: Publish,
        make_contacts: MakeContacts) -> None:
    publish(TRIAL)
    make_contacts(1)
    track(events, "user-0", "purchased", "p-0")
    track(events, "user-0", "signed_up", "s-0")
    engine.run_once()
    assert rows(store, "SELECT count(*) FROM conversions") == [(0,)]
    assert [s for s, _, _ in next(iter(enrollments(store, "trial").values()))] == ["waiting"]


# --- waits for events ------------------------------------------------------------------------

CART = """
journey: cart
entry: {event: cart_abandoned}
re_entry: always
allow_multiple: true
steps:
  - id: wait-order
    wait_for: {event: purchased, match: [order_id], timeout: 1d}
    on_event: end
    on_timeout: remind
  - id: remind
    send: {channel: log, template: cart-reminder}
"""


def test_keyed_wait_wakes_only_for_its_own_order(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    publish(CART)
    ids = make_contacts(2)
    track(events, "user-0", "cart_abandoned", "c-1", order_id="A1")
    track(events, "user-0", "cart_abandoned", "c-2", order_id="A2")
    track(events, "user-1", "cart_abandoned", "c-3", order_id="B1")
    engine.run_once()
    assert [s for s, _, _ in enrollments(store, "cart")[ids[0]]] == ["waiting", "waiting"]
    track(events, "user-0", "purchased", "p-1", order_id="ZZ")  # another order
    track(events, "user-1", "purchased", "p-2", order_id="A1")  # another contact's key
    engine.run_once()
    assert [s for s, _, _ in enrollments(store, "cart")[ids[0]]] == ["waiting", "waiting"]
    assert [s for s, _, _ in enrollments(store, "cart")[ids[1]]] == ["waiting"]
    track(events, "user-0", "purchased", "p-3", order_id="A2")
    engine.run_once()
    assert enrollments(store, "cart")[ids[0]] == [
        ("waiting", "wait-order", None), ("completed", "wait-order", "completed")]
    clock.advance(DAY)
    engine.run_once()
    assert sent(store) == {"cart-reminder": 2}  # A1 and B1, not A2
    assert sorted(sent_to(store, ids[0]) + sent_to(store, ids[1])) == [
        "cart-reminder", "cart-reminder"]


def test_keyed_wait_sees_a_purchase_in_the_same_batch_as_the_entry(
        store: Store, events: EventService, engine: Engine, publish: Publish,
        make_contacts: MakeContacts) -> None:
    publish(CART)
    ids = make_contacts(1)
    track(events, "user-0", "purchased", "p-0", order_id="A1")  # before: not awaited
    track(events, "user-0", "cart_abandoned", "c-1", order_id="A1")
    track(events, "user-0", "purchased", "p-1", order_id="A1")
    engine.run_once()
    assert enrollments(store, "cart")[ids[0]] == [("completed", "wait-order", "completed")]


BIG_SPENDER = """
journey: big-spender
entry: {event: signed_up}
steps:
  - id: wait-big
    wait_for: {event: purchased, timeout: 5d, where: {event_prop: total, gte: 100}}
    on_event: thanks
    on_timeout: end
  - id: thanks
    send: {channel: log, template: thanks}
"""


def test_wait_for_where_filters_the_awaited_event(
        store: Store, events: EventService, engine: Engine, publish: Publish,
        make_contacts: MakeContacts) -> None:
    publish(BIG_SPENDER)
    ids = make_contacts(1)
    track(events, "user-0", "signed_up", "s-0")
    engine.run_once()
    track(events, "user-0", "purchased", "p-1", total=50)
    engine.run_once()
    assert enrollments(store, "big-spender")[ids[0]] == [("waiting", "wait-big", None)]
    track(events, "user-0", "purchased", "p-2", total=150)
    engine.run_once()
    assert enrollments(store, "big-spender")[ids[0]] == [("completed", "thanks", "completed")]
    assert sent(store) == {"thanks": 1}


# --- re-entry and the one active enrollment --------------------------------------------------

def _once(policy: str, allow_multiple: bool = False, wait: str | None = None) -> str:
    steps = "  - {id: hi, send: {channel: log, template: hi}}\n"
    if wait:
        steps += f"  - {{id: pause, wait: {wait}}}\n"
    return (f"journey: again\nentry: {{event: signed_up}}\nre_entry: {policy}\n"
            f"allow_multiple: {str(allow_multiple).lower()}\nsteps:\n{steps}")


def _signups(events: EventService, engine: Engine, n: int, prefix: str) -> None:
    for i in range(n):
        track(events, "user-0", "signed_up", f"{prefix}-{i}")
        engine.run_once()


@pytest.mark.parametrize(("policy", "expected"), [("never", 1), ("always", 3)])
def test_re_entry_never_and_always(
        store: Store, events: EventService, engine: Engine, publish: Publish,
        make_contacts: MakeContacts, policy: str, expected: int) -> None:
    publish(_once(policy))
    ids = make_contacts(1)
    _signups(events, engine, 3, "s")
    assert [s for s, _, _ in enrollments(store, "again")[ids[0]]] == ["completed"] * expected
    assert sent(store) == {"hi": expected}


def test_re_entry_always_waits_for_the_active_enrollment_to_end(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    publish(_once("always", wait="1d"))
    ids = make_contacts(1)
    _signups(events, engine, 2, "a")  # the second comes while the first is active
    assert [s for s, _, _ in enrollments(store, "again")[ids[0]]] == ["waiting"]
    clock.advance(DAY)
    engine.run_once()
    _signups(events, engine, 1, "b")
    assert [s for s, _, _ in enrollments(store, "again")[ids[0]]] == ["completed", "waiting"]


def test_re_entry_cooldown(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    publish(_once("{cooldown: 1d}"))
    ids = make_contacts(1)
    _signups(events, engine, 1, "a")
    clock.advance(DAY - 1)
    _signups(events, engine, 1, "b")  # a millisecond too early
    assert len(enrollments(store, "again")[ids[0]]) == 1
    clock.advance(1)
    _signups(events, engine, 1, "c")
    assert len(enrollments(store, "again")[ids[0]]) == 2
    clock.advance(DAY // 2)
    _signups(events, engine, 1, "d")
    assert len(enrollments(store, "again")[ids[0]]) == 2


def test_allow_multiple_runs_several_at_once(
        store: Store, events: EventService, engine: Engine, publish: Publish,
        make_contacts: MakeContacts) -> None:
    publish(_once("always", allow_multiple=True, wait="1d"))
    ids = make_contacts(1)
    _signups(events, engine, 3, "s")
    assert [s for s, _, _ in enrollments(store, "again")[ids[0]]] == ["waiting"] * 3
    # A duplicate message id is one event: it enters once.
    track(events, "user-0", "signed_up", "s-0")
    engine.run_once()
    assert len(enrollments(store, "again")[ids[0]]) == 3


def test_the_database_refuses_a_second_active_enrollment(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    jid = publish(_once("always", wait="1d"))
    ids = make_contacts(1)
    _signups(events, engine, 1, "s")
    (vid, part), = rows(store, "SELECT version_id, part FROM enrollments")
    now = clock.now_ms()
    row = {"journey_id": jid, "version_id": vid, "contact_id": ids[0], "part": part,
           "shadow": False, "node": "pause", "status": "waiting", "wake_at": now + DAY,
           "seq": 2, "context": {}, "active_slot": 0, "entry_key": "manual",
           "entered_at": now, "updated_at": now}
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(schema.enrollments.insert().values(**row))
    # Ended enrollments free the slot (NULL), and so does a shadow row.
    with store.engine.begin() as conn:
        conn.execute(schema.enrollments.insert().values(**{**row, "shadow": True}))
        conn.execute(schema.enrollments.insert().values(**{
            **row, "status": "completed", "active_slot": None, "entry_key": "old"}))
    # The same entry (entry key) twice is refused as well, active or not.
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(schema.enrollments.insert().values(**{
            **row, "status": "completed", "active_slot": None, "entry_key": "old"}))


# --- splits ----------------------------------------------------------------------------------

SPLIT = """
journey: ab
entry: {api: true}
re_entry: always
steps:
  - id: pick
    split:
      - {name: a, weight: 70, goto: send-a}
      - {name: b, weight: 30, goto: send-b}
  - id: send-a
    send: {channel: log, template: a}
    end: true
  - id: send-b
    send: {channel: log, template: b}
"""


def _variants(store: Store, enrollment_ids: list[int]) -> dict[int, str]:
    wanted = set(enrollment_ids)
    return {cid: t for eid, cid, t in rows(
        store, "SELECT enrollment_id, contact_id, template FROM outbox") if eid in wanted}


def test_split_is_stable_and_holds_its_weights(
        store: Store, clock: FakeClock, engine: Engine, publish: Publish,
        make_contacts: MakeContacts) -> None:
    jid = publish(SPLIT)
    ids = make_contacts(2_000)
    first = _variants(store, engine.enroll("ab", ids))
    assert len(first) == 2_000
    share = Counter(first.values())["a"] / 2_000
    assert abs(share - 0.7) < 0.04, share  # 4 standard deviations is 0.041
    # The same contacts again, and on a new version of the same journey: the same variants.
    clock.advance(1)
    again = _variants(store, engine.enroll("ab", ids[:500]))
    assert again == {c: first[c] for c in ids[:500]}
    vid = add_version(store, clock, jid, SPLIT, 2)
    set_journey(store, clock, jid, live_version_id=vid)
    clock.advance(1)
    new = engine.enroll("ab", ids[500:1000])
    assert {v for v, in rows(store, "SELECT DISTINCT version_id FROM enrollments WHERE id IN "
                             f"({', '.join(map(str, new))})")} == {vid}
    assert _variants(store, new) == {c: first[c] for c in ids[500:1000]}
    # The decision is explained.
    (steps,), = rows(store, "SELECT steps FROM journey_history WHERE enrollment_id = ?", new[0])
    assert loads(steps)[0] == ["pick", f"variant:{first[ids[500]]}",
                               {"variant": first[ids[500]]}]


# --- actions on the contact, emitted events, enroll steps, tasks -----------------------------

ACTIONS = """
journey: actions
entry: {event: signed_up}
steps:
  - id: mark
    update: {stage: trial, score: 5}
  - id: label
    tag: {add: [trial, new], remove: [lead]}
  - id: shout
    emit: {event: trial_started, properties: {source: journey}}
  - id: handoff
    enroll: {journey: followup}
"""
FOLLOWUP = """
journey: followup
entry: {api: true}
steps:
  - {id: hello, send: {channel: log, template: followup}}
"""
LISTENER = """
journey: listener
entry: {event: trial_started, where: {prop: source, eq: journey}}
steps:
  - {id: heard, send: {channel: log, template: heard}}
"""


def test_update_tag_emit_and_enroll_steps(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    publish(ACTIONS)
    publish(FOLLOWUP)
    publish(LISTENER)
    ids = make_contacts(2)
    with store.begin() as conn:
        conn.execute(schema.contact_tags.insert().values(contact_id=ids[0], tag="lead",
                                                         created_at=0))
    track(events, "user-0", "signed_up", "s-0")
    engine.run_once()
    (attributes,), = rows(store, "SELECT attributes FROM contacts WHERE id = ?", ids[0])
    attributes = loads(attributes)
    assert (attributes["stage"], attributes["score"], attributes["plan"]) == ("trial", 5, "pro")
    assert sorted(t for t, in rows(store, "SELECT tag FROM contact_tags WHERE contact_id = ?",
                                   ids[0])) == ["new", "trial"]
    emitted = rows(store, "SELECT contact_id, name, source, properties FROM events "
                          "WHERE name = 'trial_started'")
    assert [(c, n, s, loads(p)) for c, n, s, p in emitted] == [
        (ids[0], "trial_started", "journey", {"source": "journey"})]
    assert enrollments(store, "followup")[ids[0]] == [("completed", "hello", "completed")]
    (payload,), = rows(store, "SELECT payload FROM outbox WHERE template = 'followup'")
    assert loads(payload)["entry"] == {}  # the signup had no properties
    # The emitted event reaches the other journey on the next round, once.
    engine.run_once()
    engine.run_once()
    assert sent(store) == {"followup": 1, "heard": 1}
    assert ids[1] not in enrollments(store, "actions")


def test_task_step_writes_a_task_row_to_the_outbox(
        store: Store, events: EventService, engine: Engine, publish: Publish,
        make_contacts: MakeContacts, clock: FakeClock) -> None:
    publish("""
journey: tasks
entry: {event: signed_up}
steps:
  - id: call
    task: {title: "Call {{ contact.email }}", queue: sales, due: 1d, details: {why: trial}}
""")
    ids = make_contacts(1)
    track(events, "user-0", "signed_up", "s-0", plan_seen="pro")
    engine.run_once()
    (channel, node, key, payload), = rows(
        store, "SELECT channel, node, idempotency_key, payload FROM outbox")
    payload = loads(payload)
    assert (channel, node) == ("task", "call")
    assert key.split(":")[1] == "call"
    assert payload["params"] == {"title": "Call {{ contact.email }}", "queue": "sales",
                                 "details": {"why": "trial"}, "due_at": clock.now_ms() + DAY}
    assert payload["entry"] == {"plan_seen": "pro"}
    assert enrollments(store, "tasks")[ids[0]] == [("completed", "call", "completed")]


# --- entries: API, attribute, segment --------------------------------------------------------

API = """
journey: api-entry
entry: {api: true}
steps:
  - {id: hello, send: {channel: log, template: hello}}
  - {id: later, wait: 1d}
"""


def test_api_entry_carries_its_payload(
        store: Store, engine: Engine, publish: Publish, make_contacts: MakeContacts) -> None:
    publish(API)
    ids = make_contacts(3)
    created = engine.enroll("api-entry", [ids[0], ids[1], ids[0]], payload={"coupon": "X1"})
    assert len(created) == 2
    payloads = {c: loads(p) for c, p in rows(store, "SELECT contact_id, payload FROM outbox")}
    assert {c: p["entry"] for c, p in payloads.items()} == {ids[0]: {"coupon": "X1"},
                                                             ids[1]: {"coupon": "X1"}}
    assert payloads[ids[0]]["journey"] == "api-entry"
    # Already active: the entry rules keep them out.
    assert engine.enroll("api-entry", [ids[0]]) == []


def test_api_entry_errors(
        store: Store, engine: Engine, publish: Publish, make_contacts: MakeContacts) -> None:
    publish(API)
    publish(REFERENCE)
    ids = make_contacts(1)
    with pytest.raises(NotFound) as missing:
        engine.enroll("nope", ids)
    assert missing.value.kind == "journey"
    with pytest.raises(ValidationFailed, match="api"):
        engine.enroll("reference", ids)
    with pytest.raises(NotFound) as nobody:
        engine.enroll("api-entry", [ids[0], 987_654])
    assert (nobody.value.kind, nobody.value.key) == ("contact", 987_654)
    assert rows(store, "SELECT count(*) FROM enrollments") == [(0,)]
    assert rows(store, "SELECT count(*) FROM outbox") == [(0,)]


def test_api_entry_where_filter(
        store: Store, engine: Engine, publish: Publish, make_contacts: MakeContacts) -> None:
    publish("""
journey: pro-only
entry: {api: {where: {attr: plan, eq: pro}}}
steps:
  - {id: hello, send: {channel: log, template: hello}}
""")
    ids = make_contacts(3)  # user-0 is pro, user-1 and user-2 basic
    assert engine.enroll("pro-only", ids) != []
    assert set(enrollments(store, "pro-only")) == {ids[0]}


def test_attribute_trigger_enters_on_identify(
        store: Store, events: EventService, engine: Engine, publish: Publish) -> None:
    publish("""
journey: went-pro
entry: {attribute: plan, to: pro}
steps:
  - {id: congrats, send: {channel: log, template: congrats}}
""")
    basic = identify(events, "u-basic", "i-1", plan="basic")
    other = identify(events, "u-other", "i-2", color="red")
    engine.run_once()
    assert enrollments(store, "went-pro") == {}
    identify(events, "u-basic", "i-3", plan="pro")
    identify(events, "u-other", "i-4", plan="pro", color="blue")
    engine.run_once()
    assert set(enrollments(store, "went-pro")) == {basic, other}
    (payload,), = rows(store, "SELECT payload FROM outbox WHERE contact_id = ?", basic)
    assert loads(payload)["entry"]["plan"] == "pro"


def test_segment_hook_enters_on_enter_and_exit(
        store: Store, engine: Engine, publish: Publish, make_contacts: MakeContacts) -> None:
    publish("""
journey: vip-welcome
entry: {segment: vip}
steps:
  - {id: hello, send: {channel: log, template: vip-hello}}
""")
    publish("""
journey: vip-lost
entry: {segment: vip, on: exit}
steps:
  - {id: bye, send: {channel: log, template: vip-bye}}
""")
    ids = make_contacts(4)
    assert engine.segment_changed("vip", [ids[0], ids[1]], [ids[2]]) == 3
    assert engine.segment_changed("other", [ids[3]], []) == 0
    assert engine.segment_changed("vip", [ids[0]], []) == 0  # re-entry: never
    assert set(enrollments(store, "vip-welcome")) == {ids[0], ids[1]}
    assert set(enrollments(store, "vip-lost")) == {ids[2]}
    payloads = [loads(p)["entry"] for p, in rows(store, "SELECT payload FROM outbox "
                                                 "WHERE template = 'vip-bye'")]
    assert payloads == [{"segment": "vip", "on": "exit"}]


# --- pause and resume ------------------------------------------------------------------------

def test_paused_journey_neither_enters_nor_moves_and_resumes(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    jid = publish(REFERENCE)
    ids = make_contacts(4)
    track(events, "user-0", "signed_up", "s-0")
    track(events, "user-1", "signed_up", "s-1")
    engine.run_once()
    set_journey(store, clock, jid, status="paused")
    track(events, "user-2", "signed_up", "s-2")
    clock.advance(3 * DAY)
    report = engine.run_once()
    assert (report.runs, report.entered, report.outbox) == (0, 0, 0)
    assert set(enrollments(store, "reference")) == {ids[0], ids[1]}
    assert sent(store) == {"welcome": 2}
    assert [s for s, _, _ in enrollments(store, "reference")[ids[0]]] == ["waiting"]

    set_journey(store, clock, jid, status="live")
    engine.run_once()
    assert sent(store) == {"welcome": 2, "basics": 1, "pro-tips": 1}
    track(events, "user-3", "signed_up", "s-3")
    engine.run_once()
    assert ids[3] in enrollments(store, "reference")
    assert sent(store)["welcome"] == 3


# --- shadow versions -------------------------------------------------------------------------

SHADOW = REFERENCE.replace("{id: settle, wait: 2d}", "{id: settle, wait: 1d}").replace(
    "template: welcome}", "template: welcome-v2}")


def test_shadow_version_runs_alongside_live(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    jid = publish(REFERENCE)
    vid = add_version(store, clock, jid, SHADOW, 2)
    set_journey(store, clock, jid, shadow_version_id=vid)
    make_contacts(6)
    for i in range(6):
        track(events, f"user-{i}", "signed_up", f"s-{i}")
    engine.run_once()
    assert sent(store) == {"welcome": 6}
    assert sent(store, shadow=True) == {"welcome-v2": 6}
    by_shadow = Counter((bool(s), v) for s, v in rows(
        store, "SELECT shadow, version_id FROM enrollments"))
    assert by_shadow[(True, vid)] == 6
    assert sum(by_shadow.values()) == 12

    clock.advance(DAY)  # the shadow's wait is over, the live one's is not
    engine.run_once()
    assert sent(store) == {"welcome": 6}
    assert sent(store, shadow=True) == {"welcome-v2": 6, "pro-tips": 2, "basics": 4}
    track(events, "user-0", "purchased", "p-0")  # ends the shadow wait only
    engine.run_once()
    clock.advance(DAY)
    engine.run_once()
    assert sent(store) == {"welcome": 6, "pro-tips": 2, "basics": 4}
    clock.advance(3 * DAY)
    engine.run_once()
    assert sent(store)["last-chance"] == 6
    assert sent(store, shadow=True)["last-chance"] == 5
    statuses = Counter((bool(s), st) for s, st in rows(store, "SELECT shadow, status "
                                                       "FROM enrollments"))
    assert statuses == {(False, "completed"): 6, (True, "completed"): 6}
    # Shadow rows are never dispatched: they are marked, and keyed apart from the live ones.
    keys = [k for k, in rows(store, "SELECT idempotency_key FROM outbox")]
    assert len(keys) == len(set(keys)) == (6 + 6 + 6) + (6 + 6 + 5)


def test_shadow_does_not_change_contacts(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    jid = publish(FOLLOWUP.replace("followup", "plain"))
    shadow = ACTIONS.replace("journey: actions", "journey: plain").replace(
        "entry: {event: signed_up}", "entry: {api: true}")
    vid = add_version(store, clock, jid, shadow, 2)
    set_journey(store, clock, jid, shadow_version_id=vid)
    publish(FOLLOWUP)
    ids = make_contacts(1)
    assert len(engine.enroll("plain", ids)) == 1  # the live enrollment's id only
    assert rows(store, "SELECT count(*) FROM enrollments WHERE shadow = ?", True) == [(1,)]
    (attributes,), = rows(store, "SELECT attributes FROM contacts WHERE id = ?", ids[0])
    assert "stage" not in loads(attributes)
    assert rows(store, "SELECT count(*) FROM contact_tags") == [(0,)]
    assert rows(store, "SELECT count(*) FROM events WHERE name = 'trial_started'") == [(0,)]
    assert enrollments(store, "followup") == {}


# --- counters --------------------------------------------------------------------------------

def _check_counters(store: Store) -> dict[tuple[int, bool, str], tuple[int, int]]:
    stats = {(v, bool(s), n): (int(e), int(d)) for v, s, n, e, d in rows(
        store, "SELECT version_id, shadow, node, entered, departed FROM journey_step_stats")}
    here = Counter((v, bool(s), n) for v, s, n in rows(
        store, "SELECT version_id, shadow, node FROM enrollments "
               "WHERE status IN ('ready', 'waiting')"))
    edges: Counter[tuple[int, bool, str]] = Counter()
    for v, s, source, _target, count in rows(
            store, "SELECT version_id, shadow, source, target, count FROM journey_edge_stats"):
        edges[(v, bool(s), source)] += int(count)
    for key, (entered, departed) in stats.items():
        assert entered == departed + here[key], (key, entered, departed, here[key])
        assert edges[key] == departed, (key, edges[key], departed)
    assert set(here) <= set(stats)
    return stats


def test_step_and_edge_counters_add_up(
        store: Store, clock: FakeClock, events: EventService, engine: Engine,
        publish: Publish, make_contacts: MakeContacts) -> None:
    jid = publish(REFERENCE.replace("journey: reference", "journey: reference\nexit_when:\n"
                                    "  - {event: cancelled}"))
    vid = add_version(store, clock, jid, SHADOW, 2)
    set_journey(store, clock, jid, shadow_version_id=vid)
    make_contacts(30)
    track_many(events, [(f"user-{i}", "signed_up", f"s-{i}", {}) for i in range(30)])
    engine.run_once()
    _check_counters(store)
    track_many(events, [(f"user-{i}", "cancelled", f"c-{i}", {}) for i in range(0, 30, 7)])
    engine.run_once()
    clock.advance(2 * DAY)
    engine.run_once()
    track_many(events, [(f"user-{i}", "purchased", f"p-{i}", {}) for i in range(1, 30, 4)])
    engine.run_once()
    stats = _check_counters(store)
    live = {n: v for (ver, s, n), v in stats.items() if not s}
    assert live["welcome"] == (30, 30)
    assert live["settle"] == (30, 30)
    assert live["wait-buy"][0] == 30 - 5  # five cancelled while settling
    clock.advance(3 * DAY)
    engine.run_once()
    stats = _check_counters(store)
    bought = [i for i in range(1, 30, 4) if i % 7]  # user-21 had cancelled
    last = 25 - len(bought)
    assert {n: v for (ver, s, n), v in stats.items() if not s}["last-chance"] == (last, last)
    exits = {(s, t): int(c) for s, t, c in rows(
        store, "SELECT source, target, count FROM journey_edge_stats WHERE shadow = ? "
               "AND target = '$exit'", False)}
    assert exits == {("settle", "$exit"): 5}
