"""Use cases on contacts for the API, the CLI and the dashboard: each one transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cadenza.clock import Clock
from cadenza.contacts import consent as consent_mod
from cadenza.contacts import fields as fields_mod
from cadenza.contacts import queries
from cadenza.contacts.consent import ConsentChange, ConsentStatus, SuppressionReason
from cadenza.contacts.fields import FieldSpec
from cadenza.errors import ValidationFailed
from cadenza.store import Page, Store, schema


class ContactService:
    """Reads and changes contacts, consent, fields and suppressions."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def profile(self, contact_id: int, events_limit: int = 20) -> dict[str, Any]:
        """A contact's profile with the first page of its timeline."""
        with self.store.read() as conn:
            return queries.get_profile(conn, contact_id, events_limit=events_limit)

    def search(self, **filters: Any) -> Page:
        """Contacts matching the filters (see `queries.search_contacts`)."""
        with self.store.read() as conn:
            return queries.search_contacts(conn, **filters)

    def timeline(self, contact_id: int, **filters: Any) -> Page:
        """A contact's events (following merges), newest first."""
        from cadenza.events.queries import list_events  # events depends on contacts

        with self.store.read() as conn:
            live = queries.live_contact_id(conn, contact_id)
            return list_events(conn, contact_id=live, **filters)

    def company(self, company_id: int) -> dict[str, Any]:
        """A company and its first members."""
        with self.store.read() as conn:
            return queries.get_company(conn, company_id)

    def consent_history(self, contact_id: int) -> list[dict[str, Any]]:
        """Every consent change of a contact."""
        with self.store.read() as conn:
            return queries.consent_history(conn, contact_id)

    def set_consent(self, contact_id: int, channel: str, purpose: str, status: str,
                    source: str, text_version: str | None = None,
                    ip: str | None = None) -> bool:
        """Record a consent decision; False when it changed nothing."""
        parsed = consent_mod.parse_status(status)
        with self.store.begin() as conn:
            live = queries.live_contact_id(conn, contact_id)
            change = ConsentChange(live, channel, purpose, parsed, source, self.clock.now_ms(),
                                   text_version, ip)
            return consent_mod.record_consent(conn, [change]) > 0

    def declare_field(self, spec: FieldSpec) -> None:
        """Declare a custom field (existing values must fit it)."""
        with self.store.begin() as conn:
            fields_mod.declare_field(conn, spec, self.clock.now_ms())

    def fields(self) -> list[FieldSpec]:
        """Every declared field."""
        with self.store.read() as conn:
            return fields_mod.list_fields(conn)

    def drop_field(self, name: str) -> bool:
        """Remove a field declaration; values stay."""
        with self.store.begin() as conn:
            return fields_mod.drop_field(conn, name)

    def suppress(self, kind: str, address: str, reason: str, note: str = "") -> str:
        """Put an address on the suppression list."""
        try:
            why = SuppressionReason(reason)
        except ValueError:
            raise ValidationFailed("reason", f"{reason!r} must be one of "
                                   f"{', '.join(r.value for r in SuppressionReason)}") from None
        with self.store.begin() as conn:
            return consent_mod.suppress(conn, kind, address, why, self.clock.now_ms(), note)

    def unsuppress(self, kind: str, address: str) -> bool:
        """Take an address off the list (erased addresses stay)."""
        with self.store.begin() as conn:
            return consent_mod.unsuppress(conn, kind, address)

    def suppressions(self, limit: int = 100, cursor: int | None = None) -> list[dict[str, Any]]:
        """The suppression list, newest first."""
        s = schema.suppressions
        query = sa.select(s).order_by(s.c.id.desc()).limit(limit)
        if cursor is not None:
            query = query.where(s.c.id < cursor)
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def counts(self) -> dict[str, int]:
        """How many live contacts, companies and events there are."""
        c = schema.contacts
        with self.store.read() as conn:
            return {
                "contacts": conn.execute(sa.select(sa.func.count()).where(
                    c.c.merged_into.is_(None))).scalar_one(),
                "companies": conn.execute(sa.select(sa.func.count())
                                          .select_from(schema.companies)).scalar_one(),
                "events": conn.execute(sa.select(sa.func.max(schema.events.c.id))).scalar_one()
                or 0,
            }


__all__ = ["ConsentStatus", "ContactService"]
