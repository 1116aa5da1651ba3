"""Fill an empty workspace with a believable SaaS business: `generate_demo`.

Stages: declare custom fields; decide who is in the workspace (`population`); simulate what
they do over the window (`simulate`); ingest the resulting Segment messages through
`EventService` in time order, as the web, app and email sources would send them; then record
consent and the suppression list, which need the contact ids that ingestion assigned.
Everything is drawn from one `random.Random(seed)` and all times from `clock.now_ms()`, so the
same seed and clock give the same workspace.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from cadenza.clock import Clock
from cadenza.contacts import (
    ConsentChange,
    FieldSpec,
    declare_field,
    list_fields,
    record_consent,
    suppress,
)
from cadenza.demo import tables as t
from cadenza.demo.messages import build
from cadenza.demo.population import DAY, MINUTE, LocalCalendar, Person, build_population
from cadenza.demo.simulate import simulate
from cadenza.demo.world import Record, World
from cadenza.errors import Conflict, ValidationFailed
from cadenza.events import EventService, IngestRequest
from cadenza.store import Store, schema

Progress = Callable[[str, int, int], None]
BATCH = 2_000
SOURCES = ("web", "app", "email")
"""Ingestion order inside a batch: identities are born on the web, then used by the others."""

FIELDS = (
    FieldSpec("plan", "enum", values=t.PLANS, description="Current subscription plan"),
    FieldSpec("lifetime_value", "number", description="Revenue from this person, USD"),
    FieldSpec("signup_date", "date", description="Day the account was created"),
    FieldSpec("industry", "enum", values=t.INDUSTRIES, description="Industry of their company"),
    FieldSpec("job_title", "string", description="Job title given at signup"),
    FieldSpec("interests", "list", item_type="string", description="Topics picked at signup"),
    FieldSpec("lead_source", "enum", values=t.LEAD_SOURCES,
              description="Marketing channel of their first visit"),
    FieldSpec("employees", "number", entity="company", description="Company headcount"),
    FieldSpec("mrr", "number", entity="company", description="Monthly recurring revenue, USD"),
    FieldSpec("seats", "number", entity="company", description="Paid seats"),
)


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demo` created."""

    contacts: int
    """Live contacts (anonymous visitors included)."""
    companies: int
    """Companies (accounts) created by `group` calls."""
    events: int
    """Events stored."""
    consents: int
    """Consent changes recorded (history rows)."""
    suppressions: int
    """Addresses on the suppression list."""
    elapsed_seconds: float
    """How long the build took."""
    identified: int = 0
    """Contacts with a user id (signed up)."""


def generate_demo(
    store: Store,
    clock: Clock,
    *,
    contacts: int = 10_000,
    days: int = 90,
    seed: int = 7,
    progress: Progress | None = None,
) -> DemoSummary:
    """Fill an empty, migrated store with a demo workspace; same seed, same workspace."""
    if contacts < 10:
        raise ValidationFailed("contacts", f"must be at least 10, got {contacts}")
    if not 1 <= days <= 3650:
        raise ValidationFailed("days", f"must be between 1 and 3650, got {days}")
    # A duration for the summary, not a time of day: the workspace itself uses `clock`.
    started = time.perf_counter()
    report = progress or _ignore
    now = clock.now_ms()
    _require_empty(store)
    with store.begin() as conn:
        for spec in FIELDS:
            declare_field(conn, spec, now)
    rng = random.Random(seed)
    calendar = LocalCalendar(now - days * DAY, now - MINUTE)
    companies, people = build_population(rng, contacts, calendar.start_ms, calendar.end_ms)
    stage = "Simulating people"
    report(stage, 0, len(people))
    world = simulate(rng, companies, people, calendar,
                     lambda done: report(stage, done, len(people)))
    world.records.sort()
    stored = _ingest(store, clock, world.records, people, random.Random(seed * 7919 + 1),
                     report)
    consents, suppressions = _consent(store, world, people, report)
    with store.read() as conn:
        live = conn.execute(sa.select(sa.func.count()).select_from(schema.contacts)
                            .where(schema.contacts.c.merged_into.is_(None))).scalar_one()
        known = conn.execute(sa.select(sa.func.count()).select_from(schema.contacts)
                             .where(schema.contacts.c.merged_into.is_(None),
                                    schema.contacts.c.user_id.is_not(None))).scalar_one()
        company_count = conn.execute(sa.select(sa.func.count())
                                     .select_from(schema.companies)).scalar_one()
    return DemoSummary(contacts=live, companies=company_count, events=stored,
                       consents=consents, suppressions=suppressions,
                       elapsed_seconds=round(time.perf_counter() - started, 2),
                       identified=known)


def is_demo_workspace(store: Store) -> bool:
    """Whether the store holds a workspace `generate_demo` made (its fields are declared),
    so that demo journeys and demo events never land in real data."""
    with store.read() as conn:
        declared = {(f.name, f.type, f.entity) for f in list_fields(conn)}
    return all((f.name, f.type, f.entity) in declared for f in FIELDS)


def _ignore(stage: str, done: int, total: int) -> None:
    del stage, done, total


def _require_empty(store: Store) -> None:
    with store.read() as conn:
        found = conn.execute(sa.select(sa.func.count()).select_from(schema.contacts)).scalar_one()
        fields = conn.execute(sa.select(sa.func.count()).select_from(schema.fields)).scalar_one()
    if found or fields:
        raise Conflict(f"the workspace already has {found:,} contacts and {fields} declared "
                       "fields; the demo needs an empty database (use a new database URL)")


def _ingest(store: Store, clock: Clock, records: Sequence[Record], people: list[Person],
            ids: random.Random, report: Progress) -> int:
    """Send the records through the ingestion service in time-ordered batches."""
    service = EventService(store, clock)
    stage = "Ingesting events"
    report(stage, 0, len(records))
    stored = 0
    for offset in range(0, len(records), BATCH):
        batch = records[offset : offset + BATCH]
        by_source: dict[str, list[dict[str, object]]] = {source: [] for source in SOURCES}
        for record in batch:
            by_source[record[2]].append(build(record, people, ids))
        # One transaction per batch; the requests are resolved in this order.
        requests = [IngestRequest(by_source[source], source=source) for source in SOURCES
                    if by_source[source]]
        for result in service.ingest_many(requests):
            if result.rejected or result.duplicates:
                problem = (result.rejected[0].to_dict() if result.rejected
                           else f"duplicate {result.duplicates[0]}")
                raise AssertionError(f"demo message refused by ingestion: {problem}")
            stored += result.accepted
        report(stage, offset + len(batch), len(records))
    return stored


def _consent(store: Store, world: World, people: list[Person], report: Progress
             ) -> tuple[int, int]:
    """Record planned consent (by contact id) and fill the suppression list."""
    stage = "Consent and suppressions"
    total = len(world.consents) + len(world.suppressions)
    report(stage, 0, total)
    with store.begin() as conn:
        ids = schema.identities
        contact_of: dict[str, int] = {
            row.value: row.contact_id for row in conn.execute(
                sa.select(ids.c.value, ids.c.contact_id).where(ids.c.kind == "user_id"))}
        changes = [
            ConsentChange(contact_of[people[c.person].user_id or ""], c.channel, c.purpose,
                          c.status, c.source, c.at, c.text_version, c.ip)
            for c in sorted(world.consents, key=lambda c: (c.at, c.person))
        ]
        recorded = 0
        for start in range(0, len(changes), 5_000):
            recorded += record_consent(conn, changes[start : start + 5_000])
            report(stage, start + len(changes[start : start + 5_000]), total)
        addresses: set[tuple[str, str]] = set()
        for planned in sorted(world.suppressions, key=lambda s: s.at):
            addresses.add((planned.kind, suppress(conn, planned.kind, planned.address,
                                                  planned.reason, planned.at, planned.note)))
        report(stage, total, total)
    return recorded, len(addresses)
