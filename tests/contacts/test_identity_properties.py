"""Identity resolution against a model of who should be who.

Random identify/track/page/alias/group traffic over small pools of ids (so that collisions are
frequent), sometimes in one batch, sometimes split over several `ingest` calls, sometimes
reusing message ids, plus consent decisions, checked after every step against a pure-Python
model: a union-find over identifiers that applies the rules in message order.

The rules the model encodes (Segment-like):

- a message's identifiers are its userId and anonymousId, for `identify` also the normalised
  traits.email and traits.phone, for `alias` previousId as whatever it is already known as
  (user id and/or anonymous id), or as a new anonymous id;
- the message lands on the person holding its user id; without one held, on the oldest person
  its other identifiers reach that has no other user id, else on a new person;
- every other person its identifiers reach is merged into that one, unless both hold different
  user ids: then the merge is refused (and recorded) and the two stay apart;
- identifiers nobody holds yet join the person the message landed on;
- a repeated message id is ignored altogether.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cadenza.clock import FakeClock
from cadenza.contacts import ConsentChange, ConsentStatus, record_consent
from cadenza.events.service import EventService
from cadenza.store import Store, schema

Key = tuple[str, str]

USERS = ("u1", "u2", "u3")
ANONS = ("a1", "a2", "a3", "a4")
# (as sent, as stored): the same person written differently must still compare equal.
EMAILS = (("ann@example.com", "ann@example.com"), ("Ann@Example.COM", "ann@example.com"),
          (" bob@example.com", "bob@example.com"), ("cy@example.com", "cy@example.com"))
PHONES = (("+14155550100", "+14155550100"), ("+1 415-555-0100", "+14155550100"),
          ("+44 20 7946 0000", "+442079460000"))
GROUPS = ("g1", "g2")
CONSENT_KEYS = (("email", "marketing"), ("sms", "marketing"), ("email", "newsletter"))

# Tables one example writes to, children first; emptied before each example.
_TABLES = (schema.events, schema.identities, schema.contact_merges, schema.consent_history,
           schema.consents, schema.company_members, schema.companies)


# --- the model -------------------------------------------------------------------------------


@dataclass
class Model:
    """Union-find over identifiers; each set is one person."""

    parent: dict[Key, Key] = field(default_factory=dict)
    born: dict[Key, int] = field(default_factory=dict)
    """Creation order of each set (on its root): lower is older."""
    user: dict[Key, str | None] = field(default_factory=dict)
    """The user id of each set (on its root)."""
    seen: set[str] = field(default_factory=set)
    landed: dict[str, Key] = field(default_factory=dict)
    """message id -> an identifier of the person it landed on."""
    refused: list[tuple[str, Key, Key]] = field(default_factory=list)
    memberships: set[tuple[Key, str]] = field(default_factory=set)
    consent: dict[Key, dict[tuple[str, str], tuple[int, str]]] = field(default_factory=dict)
    """root -> (channel, purpose) -> (time, status) of the latest change."""
    consent_changes: int = 0
    counter: Iterator[int] = field(default_factory=itertools.count)

    def find(self, key: Key) -> Key:
        while self.parent[key] != key:
            key = self.parent[key]
        return key

    def known(self, key: Key) -> bool:
        return key in self.parent

    def _new_person(self, key: Key, user_id: str | None) -> Key:
        self.parent[key] = key
        self.born[key] = next(self.counter)
        self.user[key] = user_id
        return key

    def _union(self, target: Key, other: Key) -> None:
        self.parent[other] = target
        self.user[target] = self.user[target] or self.user[other]
        mine = self.consent.setdefault(target, {})
        for what, (at, status) in self.consent.pop(other, {}).items():
            if what not in mine or at > mine[what][0]:
                mine[what] = (at, status)

    def apply(self, message: dict[str, Any]) -> None:
        """One accepted-or-duplicate message, in order."""
        mid = message["messageId"]
        if mid in self.seen:
            return
        self.seen.add(mid)
        user_id: str | None = message.get("userId")
        keys: list[Key] = []
        if message.get("anonymousId"):
            keys.append(("anonymous_id", message["anonymousId"]))
        if message["type"] == "identify":
            traits = message.get("traits", {})
            if "email" in traits:
                keys.append(("email", dict(EMAILS)[traits["email"]]))
            if "phone" in traits:
                keys.append(("phone", dict(PHONES)[traits["phone"]]))
        if message["type"] == "alias":
            previous = message["previousId"]
            as_known = [k for k in (("user_id", previous), ("anonymous_id", previous))
                        if self.known(k)]
            keys.extend(as_known or [("anonymous_id", previous)])
        user_key: Key | None = ("user_id", user_id) if user_id else None
        reached = [k for k in keys if self.known(k)]

        if user_key is not None and self.known(user_key):
            target = self.find(user_key)
        else:
            candidates = {self.find(k) for k in reached}
            if user_key is not None:
                candidates = {r for r in candidates if self.user[r] is None}
            if candidates:
                target = min(candidates, key=self.born.__getitem__)
                if user_key is not None:
                    self.parent[user_key] = target
                    self.user[target] = user_id
            else:
                target = self._new_person(user_key or keys[0], user_id)
        for key in reached:
            other = self.find(key)
            if other == target:
                continue
            mine, theirs = self.user[target], self.user[other]
            if mine and theirs and mine != theirs:
                self.refused.append((mid, target, other))
            else:
                self._union(target, other)
        for key in keys:
            if not self.known(key):
                self.parent[key] = target
        self.landed[mid] = target
        if message["type"] == "group":
            self.memberships.add((target, message["groupId"]))

    def set_consent(self, key: Key, what: tuple[str, str], status: str, at: int) -> bool:
        """A consent decision for the person holding `key`; False when it is a repeat."""
        current = self.consent.setdefault(self.find(key), {})
        if what in current and current[what][1] == status:
            return False
        current[what] = (at, status)
        self.consent_changes += 1
        return True


# --- generating traffic ----------------------------------------------------------------------

maybe_user = st.one_of(st.none(), st.sampled_from(USERS))
maybe_anon = st.one_of(st.none(), st.sampled_from(ANONS))


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """One valid message, without its messageId."""
    kind = draw(st.sampled_from(("identify", "identify", "track", "track", "page", "alias",
                                 "group")))
    if kind == "alias":
        return {"type": "alias", "userId": draw(st.sampled_from(USERS)),
                "previousId": draw(st.sampled_from(USERS + ANONS))}
    message: dict[str, Any] = {"type": kind}
    user_id, anon = draw(maybe_user), draw(maybe_anon)
    if user_id is None and anon is None:
        anon = draw(st.sampled_from(ANONS))
    if user_id is not None:
        message["userId"] = user_id
    if anon is not None:
        message["anonymousId"] = anon
    if kind == "identify":
        traits: dict[str, Any] = {}
        if draw(st.booleans()):
            traits["email"] = draw(st.sampled_from(EMAILS))[0]
        if draw(st.integers(0, 3)) == 0:
            traits["phone"] = draw(st.sampled_from(PHONES))[0]
        message["traits"] = traits
    elif kind == "track":
        message["event"] = draw(st.sampled_from(("Viewed", "Signed Up", "Purchased")))
    elif kind == "group":
        message["groupId"] = draw(st.sampled_from(GROUPS))
    return message


# --- the machine -----------------------------------------------------------------------------


class IdentityMachine(RuleBasedStateMachine):
    """Random traffic into one store, checked against `Model` after every step."""

    store: Store  # set by the test before running

    def __init__(self) -> None:
        super().__init__()
        _empty(self.store)
        self.clock = FakeClock()
        self.events = EventService(self.store, self.clock)
        self.model = Model()
        self.ids: list[str] = []
        self.next_id = itertools.count(1)

    def _message_id(self, reuse: int | None) -> str:
        if reuse is not None and self.ids:
            return self.ids[reuse % len(self.ids)]
        mid = f"m{next(self.next_id)}"
        self.ids.append(mid)
        return mid

    @rule(
        drafts=st.lists(st.tuples(messages(), st.one_of(st.none(), st.none(),
                                                         st.integers(0, 50))),
                        min_size=1, max_size=6),
        cuts=st.sets(st.integers(1, 5), max_size=3),
    )
    def send(self, drafts: list[tuple[dict[str, Any], int | None]], cuts: set[int]) -> None:
        """Send messages as one batch or split into several `ingest` calls."""
        batch = [{**draft, "messageId": self._message_id(reuse)} for draft, reuse in drafts]
        bounds = [0, *sorted(c for c in cuts if c < len(batch)), len(batch)]
        for start, end in itertools.pairwise(bounds):
            chunk = batch[start:end]
            fresh: list[str] = []
            for message in chunk:
                if message["messageId"] not in self.model.seen | set(fresh):
                    fresh.append(message["messageId"])
            result = self.events.ingest(chunk)
            for message in chunk:
                self.model.apply(message)
            assert result.rejected == []
            assert result.accepted == len(fresh)
            assert len(result.duplicates) == len(chunk) - len(fresh)
            # Each accepted message reports the contact it landed on (live after the call).
            people = self._contacts_of_people()
            assert result.contact_ids == [
                people[self.model.find(self.model.landed[mid])] for mid in fresh
            ]
            self.clock.advance(1_000)

    @precondition(lambda self: bool(self.model.parent))
    @rule(pick=st.integers(0, 100), what=st.sampled_from(CONSENT_KEYS),
          status=st.sampled_from(list(ConsentStatus)))
    def decide_consent(self, pick: int, what: tuple[str, str], status: ConsentStatus) -> None:
        """A consent decision for the contact holding some known identifier."""
        keys = sorted(self.model.parent)
        key = keys[pick % len(keys)]
        at = self.clock.now_ms()
        i = schema.identities
        with self.store.begin() as conn:
            contact_id = conn.execute(sa.select(i.c.contact_id).where(
                i.c.kind == key[0], i.c.value == key[1])).scalar_one()
            changed = record_consent(conn, [ConsentChange(contact_id, what[0], what[1], status,
                                                          "test", at)])
        assert changed == int(self.model.set_consent(key, what, status.value, at))
        self.clock.advance(1_000)

    def _contacts_of_people(self) -> dict[Key, int]:
        """The contact of each person; asserts each person is exactly one contact."""
        t = schema.identities
        with self.store.read() as conn:
            owner = {(k, v): c for k, v, c in conn.execute(
                sa.select(t.c.kind, t.c.value, t.c.contact_id))}
        assert set(owner) == set(self.model.parent), "stored identities differ from the model"
        people: dict[Key, int] = {}
        for key, contact_id in owner.items():
            root = self.model.find(key)
            assert people.setdefault(root, contact_id) == contact_id, (
                f"{key} is on contact {contact_id}, but the same person is on {people[root]}")
        assert len(set(people.values())) == len(people), "two people share one contact"
        return people

    @invariant()
    def database_matches_model(self) -> None:
        with self.store.read() as conn:
            state = _read_state(conn)
        model = self.model
        contacts = state["contacts"]
        live = {cid for cid, row in contacts.items() if row["merged_into"] is None}

        def alive(cid: int) -> int:
            for _ in range(len(contacts) + 1):
                if cid in live:
                    return cid
                cid = contacts[cid]["merged_into"]
            raise AssertionError(f"merged_into chain from contact {cid} loops")

        # Every identity is on a live contact, and each person is exactly one contact.
        assert {cid for _, cid in state["identities"]} <= live
        people = self._contacts_of_people()
        assert set(people.values()) == live, "a live contact belongs to no one"
        # A contact holds at most one user id, and the right one.
        for root, cid in people.items():
            user_ids = [v for (k, v), c in state["identities"] if c == cid and k == "user_id"]
            assert len(user_ids) <= 1, f"contact {cid} holds user ids {user_ids}"
            assert contacts[cid]["user_id"] == model.user[root]
            assert user_ids == ([model.user[root]] if model.user[root] else [])
        for cid in set(contacts) - live:
            assert contacts[cid]["user_id"] is None, "a tombstone kept its user id"
        # Events: one per distinct accepted message id, each on its person's contact.
        events: dict[str, int] = state["events"]
        assert len(events) == len(model.seen)
        for mid, cid in events.items():
            assert cid in live, f"event {mid} is on merged contact {cid}"
            assert cid == people[model.find(model.landed[mid])], f"event {mid} on wrong contact"
        # Merges: every tombstone was merged exactly once, into a contact it still leads to.
        merged = [m for m in state["merges"] if m["outcome"] == "merged"]
        assert sorted(m["loser_id"] for m in merged) == sorted(set(contacts) - live)
        for m in merged:
            assert alive(m["loser_id"]) == alive(m["winner_id"])
        # Refusals: exactly the ones the model made, between the people it kept apart.
        refused = {(m["message_id"], frozenset((alive(m["winner_id"]), alive(m["loser_id"]))))
                   for m in state["merges"] if m["outcome"] == "refused"}
        expected = {(mid, frozenset((people[model.find(a)], people[model.find(b)])))
                    for mid, a, b in model.refused}
        assert refused == expected
        for m in state["merges"]:
            if m["outcome"] == "refused":
                assert alive(m["winner_id"]) != alive(m["loser_id"])
                assert "different user ids" in m["details"]["detail"]
        # Company memberships and consent follow the person.
        assert state["members"] == {(people[model.find(k)], g) for k, g in model.memberships}
        expected_consent = {
            (people[root], channel, purpose): (status, at)
            for root, decisions in model.consent.items() if decisions
            for (channel, purpose), (at, status) in decisions.items()
        }
        assert state["consents"] == expected_consent
        assert len(state["history"]) == model.consent_changes
        assert set(state["history"]) <= live


def _read_state(conn: sa.Connection) -> dict[str, Any]:
    c, i, e = schema.contacts, schema.identities, schema.events
    m, co, cm = schema.contact_merges, schema.companies, schema.company_members
    k, h = schema.consents, schema.consent_history
    return {
        "contacts": {r["id"]: dict(r) for r in conn.execute(
            sa.select(c.c.id, c.c.user_id, c.c.merged_into)).mappings()},
        "identities": [((kind, value), cid) for kind, value, cid in conn.execute(
            sa.select(i.c.kind, i.c.value, i.c.contact_id))],
        "events": dict(conn.execute(sa.select(e.c.message_id, e.c.contact_id)).all()),
        "merges": [dict(r) for r in conn.execute(sa.select(m)).mappings()],
        "members": {(cid, group) for cid, group in conn.execute(
            sa.select(cm.c.contact_id, co.c.group_id).join(co, co.c.id == cm.c.company_id))},
        "consents": {(cid, ch, p): (status, at) for cid, ch, p, status, at in conn.execute(
            sa.select(k.c.contact_id, k.c.channel, k.c.purpose, k.c.status, k.c.updated_at))},
        "history": list(conn.execute(sa.select(h.c.contact_id)).scalars()),
    }


def _empty(store: Store) -> None:
    with store.begin() as conn:
        for table in _TABLES:
            conn.execute(sa.delete(table))
        c = schema.contacts
        conn.execute(sa.update(c).values(merged_into=None))
        conn.execute(sa.delete(c))


@pytest.mark.timeout(300)
def test_identity_resolution_matches_model(store: Store) -> None:
    machine = type("Machine", (IdentityMachine,), {"store": store})
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=80, stateful_step_count=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
