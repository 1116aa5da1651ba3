"""Ingestion: validate, dedupe, resolve identities and store a batch in one transaction."""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
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
from cadenza.events.segment import Message, Rejection, parse
from cadenza.store import Store, dialect_insert, schema

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

    def to_dict(self) -> dict[str, Any]:
        """The JSON body returned to clients (Segment clients only read the status)."""
        return {
            "success": True,
            "accepted": self.accepted,
            "duplicates": len(self.duplicates),
            "rejected": [r.to_dict() for r in self.rejected],
        }


class EventService:
    """Stores events from the Segment API, CSV sources and Cadenza itself."""

    def __init__(self, store: Store, clock: Clock, limits: IngestLimits | None = None) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits or IngestLimits()

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
        received_at = self.clock.now_ms()
        result = IngestResult()
        messages: list[Message] = []
        for index, raw in enumerate(raw_messages):
            parsed = parse(
                raw,
                index,
                received_at=received_at,
                implied_type=implied_type,
                batch_sent_at=batch_sent_at,
                batch_context=batch_context,
                encoded_size=sizes[index] if sizes is not None else None,
            )
            if isinstance(parsed, Rejection):
                result.rejected.append(parsed)
                continue
            problem = self._check_time(parsed, received_at)
            if problem is not None:
                result.rejected.append(problem)
                continue
            messages.append(parsed)
        if not messages:
            return result
        outcome = self.store.retry(
            lambda conn: self._store(conn, messages, source, received_at))
        result.accepted = len(outcome.contact_ids)
        result.contact_ids = outcome.contact_ids
        result.duplicates = outcome.duplicates
        result.rejected.extend(outcome.rejected)
        result.rejected.sort(key=lambda r: r.index)
        return result

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

    def _store(
        self,
        conn: Connection,
        messages: list[Message],
        source: str,
        received_at: int,
    ) -> IngestResult:
        result = IngestResult()
        if conn.dialect.name == "postgresql":
            # One ingesting writer at a time keeps identity resolution race-free (SQLite gets
            # the same from BEGIN IMMEDIATE).
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242001)"))
        fresh = self._dedupe(conn, messages, result)
        registry = FieldRegistry.load(conn)
        company_fields = FieldRegistry.load(conn, "company")
        valid: list[Message] = []
        profile_parts: list[tuple[Message, dict[str, Any]]] = []
        for message in fresh:
            try:
                profile_parts.append((message, self._profile_changes(message, registry,
                                                                     company_fields)))
            except ValidationFailed as exc:
                result.rejected.append(
                    Rejection(message.index, exc.field, exc.reason, message.message_id))
                continue
            valid.append(message)
        if not valid:
            return result
        claims = [_claim(message, changes) for message, changes in profile_parts]
        resolution = resolve(conn, claims, source)
        profile_updates: list[ProfileUpdate] = []
        company_updates: list[CompanyUpdate] = []
        for (message, changes), cid in zip(profile_parts, resolution.contact_ids, strict=True):
            if message.type == "identify":
                profile_updates.append(ProfileUpdate(contact_id=cid, at=message.timestamp,
                                                     **changes))
            elif message.type == "group" and message.group_id:
                company_updates.append(CompanyUpdate(cid, message.group_id, message.timestamp,
                                                     changes["attributes"]))
        apply_profile_updates(conn, profile_updates)
        apply_company_updates(conn, company_updates)
        rows = [
            {
                "message_id": m.message_id,
                "contact_id": cid,
                "type": m.type,
                "name": m.name,
                "properties": m.traits if m.type in ("identify", "group") else m.properties,
                "context": m.context,
                "source": source,
                "timestamp": m.timestamp,
                "received_at": received_at,
            }
            for m, cid in zip(valid, resolution.contact_ids, strict=True)
        ]
        conn.execute(
            dialect_insert(conn, schema.events).on_conflict_do_nothing(
                index_elements=["message_id"]),
            rows,
        )
        result.contact_ids = resolution.contact_ids
        return result

    def _dedupe(self, conn: Connection, messages: list[Message],
                result: IngestResult) -> list[Message]:
        seen: set[str] = set()
        unique: list[Message] = []
        for message in messages:
            if message.message_id in seen:
                result.duplicates.append(message.message_id)
            else:
                seen.add(message.message_id)
                unique.append(message)
        ids = [m.message_id for m in unique]
        stored: set[str] = set()
        e = schema.events
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            stored.update(conn.execute(sa.select(e.c.message_id)
                                       .where(e.c.message_id.in_(chunk))).scalars())
        if not stored:
            return unique
        result.duplicates.extend(sorted(stored))
        return [m for m in unique if m.message_id not in stored]

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


def _claim(message: Message, changes: dict[str, Any]) -> Claim:
    keys: list[tuple[str, str]] = []
    if message.anonymous_id:
        keys.append((ANONYMOUS_ID, message.anonymous_id))
    if changes.get("email"):
        keys.append((EMAIL, changes["email"]))
    if changes.get("phone"):
        keys.append((PHONE, changes["phone"]))
    return Claim(
        message_id=message.message_id,
        timestamp=message.timestamp,
        reason=message.type,
        user_id=message.user_id,
        keys=keys,
        previous=message.previous_id,
    )
