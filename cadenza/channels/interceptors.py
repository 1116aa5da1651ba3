"""The interceptor chain around delivery: cross-cutting rules applied to every batch.

An interceptor sees the batch of messages about to be delivered, decides outcomes for some
(shadowed, cancelled, deferred) and passes the rest on with `proceed`; the end of the chain
delivers. Working on the whole batch lets a rule check its facts in one query per kind of fact
(the suppression list once per batch, not once per message). Order matters and is explicit:

    Shadow -> EmergencyStop -> Consent -> Suppression -> QuietHours -> FrequencyCap -> deliver

Quiet hours come before caps so that a message held back for the night does not use up a cap
slot. The policies (`cadenza.channels.policies`) are read from the store once per batch by
each rule that needs them, so a policy change applies to the next batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from cadenza.channels.models import Message, Outcome
from cadenza.channels.policies import (
    CONSENT_CHANNELS,
    FrequencyCap,
    PolicySet,
    SendPolicy,
    load_policy_set,
)
from cadenza.clock import Clock
from cadenza.contacts import is_suppressed
from cadenza.store import Store, schema

Outcomes = dict[int, Outcome]
"""Outcomes by outbox row id."""
Proceed = Callable[[Sequence[Message]], Awaitable[Outcomes]]


class Interceptor(Protocol):
    """One link of the chain."""

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Decide some outcomes, `proceed` with the rest, return every message's outcome."""
        ...


def build_chain(interceptors: Sequence[Interceptor], deliver: Proceed) -> Proceed:
    """`deliver` wrapped by `interceptors`, the first outermost."""
    proceed = deliver
    for interceptor in reversed(interceptors):
        proceed = _link(interceptor, proceed)
    return proceed


def _link(interceptor: Interceptor, proceed: Proceed) -> Proceed:
    async def call(messages: Sequence[Message]) -> Outcomes:
        if not messages:
            return {}
        return await interceptor.intercept(messages, proceed)

    return call


class ShadowInterceptor:
    """Shadow messages are rendered and recorded, and never go further."""

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Stop shadow messages here."""
        outcomes: Outcomes = {m.outbox_id: Outcome.shadowed() for m in messages if m.shadow}
        outcomes.update(await proceed([m for m in messages if not m.shadow]))
        return outcomes


class SuppressionInterceptor:
    """Cancels messages to suppressed addresses, checked at send time in one query per
    address kind."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Cancel what goes to a suppressed address; proceed with the rest."""
        wanted: dict[str, set[str]] = {}
        for m in messages:
            if m.address_kind and m.address:
                wanted.setdefault(m.address_kind, set()).add(m.address)
        hits = await asyncio.to_thread(self._lookup, wanted) if wanted else {}
        outcomes: Outcomes = {}
        passing: list[Message] = []
        for m in messages:
            if m.address_kind and m.address in hits.get(m.address_kind, ()):
                outcomes[m.outbox_id] = Outcome.cancelled(
                    f"suppressed: the {m.address_kind} address is on the suppression list")
            else:
                passing.append(m)
        outcomes.update(await proceed(passing))
        return outcomes

    def _lookup(self, wanted: Mapping[str, set[str]]) -> dict[str, set[str]]:
        with self.store.read() as conn:
            return {kind: is_suppressed(conn, kind, sorted(addresses), normalized=True)
                    for kind, addresses in wanted.items()}


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ids(messages: Iterable[Message]) -> list[int]:
    return sorted({m.contact.id for m in messages})


# --- consent --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentFact:
    """A contact's current consent for one channel and purpose."""

    status: str
    """opted_in, opted_out or pending."""
    source: str
    at: int


ConsentFacts = Mapping[tuple[int, str, str], ConsentFact]
"""By (contact id, channel, purpose)."""
UMBRELLA = "marketing"
"""Opting out of `marketing` on a channel opts out of every non-transactional purpose on it
(an "unsubscribe from all"); opting in to it covers every purpose that has no row of its own."""


def consent_refusal(message: Message, facts: ConsentFacts, policy: SendPolicy) -> str | None:
    """Why `message` must not go out for lack of consent; None when it may.

    Transactional messages are refused only by an explicit transactional opt-out. Others are
    refused by an opt-out of their purpose or of `marketing`, by a pending double opt-in,
    and, when the channel's mode is `opt_in`, by the absence of an opt-in.
    """
    channel, purpose, contact = message.channel, message.purpose, message.contact.id
    own = facts.get((contact, channel, purpose))
    if message.transactional:
        return _opted_out(own, channel, purpose) if own and own.status == "opted_out" else None
    if own is not None and own.status == "opted_out":
        return _opted_out(own, channel, purpose)
    if own is not None and own.status == "pending":
        return (f"consent: {channel} {purpose} is pending double opt-in confirmation since "
                f"{_utc(own.at)} (source: {own.source})")
    umbrella = facts.get((contact, channel, UMBRELLA)) if purpose != UMBRELLA else None
    if umbrella is not None and umbrella.status == "opted_out":
        return _opted_out(umbrella, channel, f"all {UMBRELLA}")
    if own is not None or policy.consent_mode(channel) == "opt_out":
        return None
    if umbrella is not None and umbrella.status == "opted_in":
        return None
    return (f"consent: no {channel} opt-in for {purpose}, and the workspace policy requires "
            f"one (consent.{channel}: opt_in)")


def _opted_out(fact: ConsentFact, channel: str, purpose: str) -> str:
    return (f"consent: opted out of {channel} {purpose} on {_utc(fact.at)} "
            f"(source: {fact.source})")


class ConsentInterceptor:
    """Cancels messages the contact has no consent for, checked at send time: one query for
    the batch's consent rows (and one for the workspace policy's consent modes)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Cancel what lacks consent; proceed with the rest."""
        checked = [m for m in messages if m.channel in CONSENT_CHANNELS]
        if not checked:
            return await proceed(messages)
        policy, facts = await asyncio.to_thread(self._lookup, checked)
        outcomes: Outcomes = {}
        passing: list[Message] = []
        for m in messages:
            refusal = consent_refusal(m, facts, policy) if m.channel in CONSENT_CHANNELS \
                else None
            if refusal is None:
                passing.append(m)
            else:
                outcomes[m.outbox_id] = Outcome.cancelled(refusal)
        outcomes.update(await proceed(passing))
        return outcomes

    def _lookup(self, messages: Sequence[Message]) -> tuple[SendPolicy, ConsentFacts]:
        c = schema.consents
        purposes = sorted({m.purpose for m in messages} | {UMBRELLA})
        query = sa.select(c.c.contact_id, c.c.channel, c.c.purpose, c.c.status, c.c.source,
                          c.c.updated_at).where(
            c.c.contact_id.in_(_ids(messages)),
            c.c.channel.in_(sorted({m.channel for m in messages})),
            c.c.purpose.in_(purposes))
        with self.store.read() as conn:
            policy = load_policy_set(conn).workspace
            facts = {(int(cid), channel, purpose): ConsentFact(status, source, int(at))
                     for cid, channel, purpose, status, source, at in conn.execute(query)}
        return policy, facts


# --- quiet hours ----------------------------------------------------------------------------


class QuietHoursInterceptor:
    """Defers messages due inside the quiet hours of the contact's local time to the end of
    the window. Transactional messages are never delayed."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Defer what falls in quiet hours; proceed with the rest."""
        held = [m for m in messages if not m.transactional]
        if not held:
            return await proceed(messages)
        policies = await asyncio.to_thread(self._load, {m.journey for m in held})
        outcomes: Outcomes = {}
        passing: list[Message] = []
        for m in messages:
            outcome = None if m.transactional else quiet_outcome(m, policies)
            if outcome is None:
                passing.append(m)
            else:
                outcomes[m.outbox_id] = outcome
        outcomes.update(await proceed(passing))
        return outcomes

    def _load(self, journeys: Iterable[str | None]) -> PolicySet:
        with self.store.read() as conn:
            return load_policy_set(conn, journeys)


def quiet_outcome(message: Message, policies: PolicySet) -> Outcome | None:
    """Deferred to the end of the quiet hours when `message` is due inside them."""
    quiet = policies.quiet_hours(message.journey)
    if quiet is None or not quiet.applies_to(message.channel):
        return None
    zone = policies.zone(message.contact.timezone)
    release = quiet.release_at(message.at_ms, zone)
    if release is None:
        return None
    local = dt.datetime.fromtimestamp(release / 1000, zone).strftime("%Y-%m-%d %H:%M")
    return Outcome.deferred(release, f"quiet hours {quiet.describe()} ({zone}): held until "
                                     f"{local} local time")


# --- frequency caps -------------------------------------------------------------------------


Sends = dict[tuple[int, str], list[tuple[str | None, int]]]
"""(contact id, channel) -> (journey key, sent at) of each send counted."""


class FrequencyCapInterceptor:
    """Drops or defers messages over a frequency cap. Counts come from the outbox rows sent
    in the window (one query per batch) plus the messages admitted earlier in the same batch;
    transactional messages are neither capped nor counted."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def intercept(self, messages: Sequence[Message], proceed: Proceed) -> Outcomes:
        """Hold back what is over a cap; proceed with the rest."""
        capped = [m for m in messages if not m.transactional]
        if not capped:
            return await proceed(messages)
        policies, history = await asyncio.to_thread(self._load, capped)
        outcomes: Outcomes = {}
        passing: list[Message] = []
        counter = CapCounter(policies, history)
        for m in sorted(messages, key=lambda m: m.outbox_id):
            outcome = None if m.transactional else counter.admit(m)
            if outcome is None:
                passing.append(m)
            else:
                outcomes[m.outbox_id] = outcome
        outcomes.update(await proceed(passing))
        return outcomes

    def _load(self, messages: Sequence[Message]) -> tuple[PolicySet, Sends]:
        with self.store.read() as conn:
            policies = load_policy_set(conn, {m.journey for m in messages})
            if not policies.has_caps:
                return policies, {}
            since: int | None = None
            for m in messages:
                zone = policies.zone(m.contact.timezone)
                for _, cap in policies.caps(m.journey):
                    if cap.channel == m.channel:
                        start = cap.window_start(m.at_ms, zone)
                        since = start if since is None else min(since, start)
            if since is None:
                return policies, {}
            return policies, _sent_since(conn, messages, since)


def _sent_since(conn: sa.Connection, messages: Sequence[Message], since: int) -> Sends:
    o, j = schema.outbox, schema.journeys
    query = (sa.select(o.c.contact_id, o.c.channel, j.c.key, o.c.sent_at)
             .select_from(o.outerjoin(j, j.c.id == o.c.journey_id))
             .where(o.c.contact_id.in_(_ids(messages)),
                    o.c.channel.in_(sorted({m.channel for m in messages})),
                    o.c.status == "sent", o.c.sent_at >= since,
                    sa.func.coalesce(o.c.purpose, "") != "transactional"))
    sends: Sends = {}
    for contact, channel, journey, sent_at in conn.execute(query):
        sends.setdefault((int(contact), channel), []).append((journey, int(sent_at)))
    return sends


class CapCounter:
    """Admits messages one by one against every cap that applies, counting the history and
    what it admitted before."""

    def __init__(self, policies: PolicySet, history: Sends) -> None:
        self.policies = policies
        self.sends = {key: list(value) for key, value in history.items()}
        self._caps: dict[str | None, list[tuple[str | None, FrequencyCap]]] = {}

    def admit(self, message: Message) -> Outcome | None:
        """None (and counted) when `message` fits under every cap; else dropped or
        deferred. A `drop` cap wins over a `defer` one."""
        key = (message.contact.id, message.channel)
        zone = self.policies.zone(message.contact.timezone)
        now = message.at_ms
        deferred: tuple[int, str] | None = None
        caps = self._caps.get(message.journey)
        if caps is None:
            caps = self._caps[message.journey] = self.policies.caps(message.journey)
        for journey, cap in caps:
            if cap.channel != message.channel:
                continue
            start = cap.window_start(now, zone)
            counted = [at for sent_in, at in self.sends.get(key, ())
                       if at >= start and (journey is None or sent_in == journey)]
            if len(counted) < cap.limit:
                continue
            reason = (f"frequency cap {cap.describe()} "
                      f"({'journey ' + journey if journey else 'workspace'}) reached")
            if cap.on_exceed == "drop":
                return Outcome.cancelled(reason)
            room = cap.room_at(counted, now, zone)
            if deferred is None or room > deferred[0]:
                deferred = (room, reason)
        if deferred is not None:
            room, reason = deferred
            return Outcome.deferred(room, f"{reason}; held until {_utc(room)}")
        self.sends.setdefault(key, []).append((message.journey, now))
        return None


def default_interceptors(store: Store, clock: Clock, *, policies: bool = True
                         ) -> list[Interceptor]:
    """The standard chain: shadow first (nothing of a shadow run is delivered), the emergency
    stop, consent, the suppression list, quiet hours, then frequency caps (after quiet hours,
    so that a message held back for the night does not take a cap slot). `policies=False`
    keeps only shadow, the stop and suppression (tools that must send regardless of consent
    modes, caps and quiet hours)."""
    from cadenza.channels.stop import EmergencyStopInterceptor

    stop = EmergencyStopInterceptor(store, clock)
    if not policies:
        return [ShadowInterceptor(), stop, SuppressionInterceptor(store)]
    return [ShadowInterceptor(), stop, ConsentInterceptor(store), SuppressionInterceptor(store),
            QuietHoursInterceptor(store), FrequencyCapInterceptor(store)]
