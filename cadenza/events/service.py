"""Ingestion: validate, dedupe, resolve identities and store a batch in one transaction."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.contacts import (
    ANONYMOUS_ID,
    EMAIL,
    PHONE,
    Claim,
    CompanyUpdate,
    FieldRegistry,
    ProfileUpdate,
    apply_company_updates,
    apply_profile_updates,
    normalize_email,
    normalize_phone,
    resolve,
)
from cadenza.errors import ValidationFailed
from cadenza.events.queries import get_import, list_events
from cadenza.events.segment import Message, Rejection, nul_path, parse
from cadenza.store import Page, Store, dumps, insert_rows, schema, select_in

_CHUNK = 400
_RESERVED_TRAITS = ("email", "phone", "timezone", "locale")


@dataclass(frozen=True)
class IngestLimits:
    """How far from the receive time an event may be stamped."""

    max_future_ms: int = 24 * 3600 * 1000
    """Later than receipt by more than this (after skew correction) is rejected."""
    max_past_ms: int = 5 * 365 * 24 * 3600 * 1000
    """Earlier than receipt by more than this is rejected."""


@dataclass
class IngestResult:
    """What happened to each message of a request."""

    accepted: int = 0
    duplicates: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    contact_ids: list[int] = field(default_factory=list)
    """The contact of each accepted message, in order."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON body returned to clients (Segment clients only read the status)."""
        return {
            "success": True,
            "accepted": self.accepted,
            "duplicates": len(self.duplicates),
            "rejected": [r.to_dict() for r in self.rejected],
        }


@dataclass
class IngestRequest:
    """One call's messages and what applies to all of them."""

    messages: Sequence[Any]
    source: str = "api"
    """Where the events come from: api, web, app, email, csv, ..."""
    implied_type: str | None = None
    """The message type of a single-call endpoint (`/v1/track` implies track)."""
    batch_sent_at: int | None = None
    """`sentAt` of the batch envelope, used for clock-skew correction."""
    batch_context: dict[str, Any] | None = None
    sizes: Sequence[int] | None = None
    """Encoded size of each message, when the caller already knows it."""


@dataclass
class _Pending:
    request: int
    message: Message
    source: str
    outcome: int | str | Rejection | None = None
    """contact id when stored, "duplicate", or why it was rejected."""
    changes: dict[str, Any] = field(default_factory=dict)


EVENT_LOG_LOCK = 4242001


def lock_event_log(conn: Connection) -> None:
    """On PostgreSQL, take the one lock under which events are written, so that event ids
    commit in order (the engine reads the log by id). SQLite has one writer anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({EVENT_LOG_LOCK})"))


class EventService:
    """Stores events from the Segment API, CSV sources and Cadenza itself."""

    def __init__(self, store: Store, clock: Clock, limits: IngestLimits | None = None) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits or IngestLimits()
        self.after_commit: list[Callable[[], None]] = []
        """Called after every commit that stored events (the engine's wake-up)."""

    def ingest(
        self,
        raw_messages: Sequence[Any],
        *,
        source: str = "api",
        implied_type: str | None = None,
        batch_sent_at: int | None = None,
        batch_context: dict[str, Any] | None = None,
        sizes: Sequence[int] | None = None,
    ) -> IngestResult:
        """Validate and store messages; valid ones are stored even when others are rejected."""
        request = IngestRequest(raw_messages, source, implied_type, batch_sent_at,
                                batch_context, sizes)
        return self.ingest_many([request])[0]

    def ingest_many(self, requests: Sequence[IngestRequest]) -> list[IngestResult]:
        """Store several requests in one transaction (group commit); one result each."""
        received_at = self.clock.now_ms()
        results = [IngestResult() for _ in requests]
        pending: list[_Pending] = []
        for number, request in enumerate(requests):
            for checked in self._parse_request(request, received_at):
                if isinstance(checked, Rejection):
                    results[number].rejected.append(checked)
                else:
                    pending.append(_Pending(number, checked, request.source))
        if pending:
            self.store.retry(lambda conn: self._store(conn, pending, received_at))
            for listener in self.after_commit:
                listener()
        for item in pending:
            result = results[item.request]
            if isinstance(item.outcome, int):
                result.accepted += 1
                result.contact_ids.append(item.outcome)
            elif isinstance(item.outcome, Rejection):
                result.rejected.append(item.outcome)
            else:
                result.duplicates.append(item.message.message_id)
        for result in results:
            result.rejected.sort(key=lambda r: r.index)
        return results

    def _parse_request(self, request: IngestRequest, received_at: int
                       ) -> list[Message | Rejection]:
        """Each message of a request, validated and skew-corrected, or why it was rejected."""
        if request.batch_context:
            bad_context = nul_path(request.batch_context, "context")
            if bad_context is not None:
                return [Rejection(index, bad_context, "contains a NUL character (\\u0000), "
                                  "which cannot be stored; remove it")
                        for index in range(len(request.messages))]
        checked: list[Message | Rejection] = []
        for index, raw in enumerate(request.messages):
            parsed = parse(
                raw,
                index,
                received_at=received_at,
                implied_type=request.implied_type,
                batch_sent_at=request.batch_sent_at,
                batch_context=request.batch_context,
                encoded_size=request.sizes[index] if request.sizes is not None else None,
            )
            if isinstance(parsed, Message):
                checked.append(self._check_time(parsed, received_at) or parsed)
            else:
                checked.append(parsed)
        return checked

    def find(self, **filters: Any) -> Page:
        """Events by contact, name, type and time (see `queries.list_events`)."""
        with self.store.read() as conn:
            return list_events(conn, **filters)

    def get_import(self, import_id: int) -> dict[str, Any]:
        """A CSV import's report (see `queries.get_import`)."""
        with self.store.read() as conn:
            return get_import(conn, import_id)

    def _check_time(self, message: Message, received_at: int) -> Rejection | None:
        if message.timestamp > received_at + self.limits.max_future_ms:
            return Rejection(
                message.index, "timestamp",
                f"is {(message.timestamp - received_at) // 3_600_000} h in the future after "
                "clock-skew correction; send the time the event happened, with sentAt",
                message.message_id)
        if message.timestamp < received_at - self.limits.max_past_ms:
            return Rejection(
                message.index, "timestamp",
                f"is more than {self.limits.max_past_ms // 86_400_000} days in the past",
                message.message_id)
        return None

    def _store(self, conn: Connection, pending: list[_Pending], received_at: int) -> None:
        for item in pending:
            item.outcome = None
        # One ingesting writer at a time keeps identity resolution race-free (SQLite gets the
        # same from BEGIN IMMEDIATE) and event ids in commit order.
        lock_event_log(conn)
        registry = FieldRegistry.load(conn)
        company_fields = FieldRegistry.load(conn, "company")
        checked: list[_Pending] = []
        for item in pending:
            try:
                item.changes = self._profile_changes(item.message, registry, company_fields)
            except ValidationFailed as exc:
                item.outcome = Rejection(item.message.index, exc.field, exc.reason,
                                         item.message.message_id)
                continue
            checked.append(item)
        # Dedupe only what is valid: a rejected first copy must not shadow a valid second one.
        valid = self._dedupe(conn, checked)
        if valid:
            self._store_valid(conn, valid, received_at)

    def _store_valid(self, conn: Connection, items: list[_Pending], received_at: int) -> None:
        # One resolution in message order, whatever the sources (group commit mixes them).
        claims = [_claim(i.message, i.changes, i.source) for i in items]
        resolution = resolve(conn, claims, items[0].source)
        _keep_own_addresses(conn, items, resolution.contact_ids)
        profile_updates: list[ProfileUpdate] = []
        company_updates: list[CompanyUpdate] = []
        for item, cid in zip(items, resolution.contact_ids, strict=True):
            item.outcome = cid
            message = item.message
            if message.type == "identify":
                fields = {k: v for k, v in item.changes.items() if k != "external"}
                profile_updates.append(ProfileUpdate(contact_id=cid, at=message.timestamp,
                                                     **fields))
            elif message.type == "group" and message.group_id:
                company_updates.append(CompanyUpdate(cid, message.group_id, message.timestamp,
                                                     item.changes["attributes"]))
        apply_profile_updates(conn, profile_updates)
        apply_company_updates(conn, company_updates)
        insert_rows(
            conn, schema.events,
            ("message_id", "contact_id", "type", "name", "properties", "context", "source",
             "timestamp", "received_at"),
            [(m.message_id, item.outcome, m.type, m.name,
              dumps(m.traits if m.type in ("identify", "group") else m.properties),
              dumps(m.context), item.source, m.timestamp, received_at)
             for item in items for m in (item.message,)],
            ignore_conflicts_on=("message_id",),
        )

    def _dedupe(self, conn: Connection, pending: list[_Pending]) -> list[_Pending]:
        seen: set[str] = set()
        unique: list[_Pending] = []
        for item in pending:
            if item.message.message_id in seen:
                item.outcome = "duplicate"
            else:
                seen.add(item.message.message_id)
                unique.append(item)
        stored = {row[0] for row in select_in(
            conn, "SELECT message_id FROM events WHERE message_id IN ({marks})",
            [i.message.message_id for i in unique])}
        if not stored:
            return unique
        fresh = []
        for item in unique:
            if item.message.message_id in stored:
                item.outcome = "duplicate"
            else:
                fresh.append(item)
        return fresh

    def _profile_changes(self, message: Message, registry: FieldRegistry,
                         company_fields: FieldRegistry) -> dict[str, Any]:
        if message.type == "group":
            return {"attributes": company_fields.check(message.traits)}
        if message.type != "identify":
            return {}
        traits = dict(message.traits)
        changes: dict[str, Any] = {}
        if traits.get("email") not in (None, ""):
            changes["email"] = normalize_email(traits.pop("email"), "traits.email")
        else:
            traits.pop("email", None)
        if traits.get("phone") not in (None, ""):
            changes["phone"] = normalize_phone(traits.pop("phone"), "traits.phone")
        else:
            traits.pop("phone", None)
        tz = traits.pop("timezone", None) or message.context.get("timezone")
        if tz is not None:
            changes["timezone"] = _timezone(tz, "traits.timezone")
        locale = traits.pop("locale", None) or message.context.get("locale")
        if isinstance(locale, str) and 0 < len(locale) <= 35:
            changes["locale"] = locale
        changes["attributes"] = registry.check(traits)
        external = _external_ids(message.context.get("externalIds"))
        if external:
            changes["external"] = external
        return changes


def _timezone(value: object, field_name: str) -> str:
    if isinstance(value, str):
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
        else:
            return value
    raise ValidationFailed(field_name, f"{value!r} is not an IANA time zone such as "
                           "'Europe/Paris' or 'America/New_York'")


_EXTERNAL_TYPE = re.compile(r"^[a-z][a-z0-9_.\-]{0,47}$")


def _external_ids(value: object) -> list[tuple[str, str]]:
    """Identities from Segment's `context.externalIds` (e.g. a CRM's record id)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 20:
        raise ValidationFailed("context.externalIds", "must be a list of at most 20 objects "
                               "with an id and a type")
    keys = []
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValidationFailed(f"context.externalIds[{n}]", "must be an object")
        ext_id, ext_type = item.get("id"), item.get("type")
        if isinstance(ext_id, int) and not isinstance(ext_id, bool):
            ext_id = str(ext_id)
        if not isinstance(ext_id, str) or not 1 <= len(ext_id) <= 256:
            raise ValidationFailed(f"context.externalIds[{n}].id", "must be a string of 1 to "
                                   "256 characters")
        if not isinstance(ext_type, str) or not _EXTERNAL_TYPE.match(ext_type.lower()):
            raise ValidationFailed(f"context.externalIds[{n}].type", "must name the system, "
                                   "e.g. 'salesforce' or 'hubspot_contact_id'")
        keys.append((f"external:{ext_type.lower()}", ext_id))
    return keys


def _keep_own_addresses(conn: Connection, items: list[_Pending], contact_ids: list[int]) -> None:
    """Drop an identify's email or phone from the profile update when that address stayed
    with another contact (a refused merge): two contacts must not share a primary address."""
    for kind in (EMAIL, PHONE):
        wanted = [(item, cid) for item, cid in zip(items, contact_ids, strict=True)
                  if item.changes.get(kind)]
        if not wanted:
            continue
        owners = dict(select_in(
            conn, "SELECT value, contact_id FROM identities WHERE kind = {p} "
            "AND value IN ({marks})", sorted({item.changes[kind] for item, _ in wanted}),
            before=[kind]))
        for item, cid in wanted:
            if owners.get(item.changes[kind]) != cid:
                del item.changes[kind]


def _claim(message: Message, changes: dict[str, Any], source: str) -> Claim:
    keys: list[tuple[str, str]] = []
    if message.anonymous_id:
        keys.append((ANONYMOUS_ID, message.anonymous_id))
    if changes.get("email"):
        keys.append((EMAIL, changes["email"]))
    if changes.get("phone"):
        keys.append((PHONE, changes["phone"]))
    keys.extend(changes.get("external", ()))
    return Claim(
        message_id=message.message_id,
        timestamp=message.timestamp,
        reason=message.type,
        user_id=message.user_id,
        keys=keys,
        previous=message.previous_id,
        source=source,
    )
