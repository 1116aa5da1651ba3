"""The admin API under /api: contacts, events, companies, consent, fields, suppressions, keys.

Every route is parse, call a service, render. Admin keys go in `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.clock import iso_to_ms
from cadenza.contacts import FieldSpec
from cadenza.errors import ValidationFailed
from cadenza.governance import create_key, list_keys, revoke_key

router = APIRouter(prefix="/api", tags=["admin"])


MAX_ID = 2**63 - 1
"""Ids are 64-bit; a larger number is refused up front rather than overflowing the driver."""
_MS = re.compile(r"-?[0-9]{1,15}")
"""Epoch milliseconds: 15 digits reach past the year 9999."""


def parse_time(value: str | None, field: str) -> int | None:
    """Epoch milliseconds from an ISO 8601 time or a number of milliseconds."""
    if value is None:
        return None
    text = value.strip()
    if _MS.fullmatch(text):
        return int(text)
    ms = iso_to_ms(text)
    if ms is None:
        raise ValidationFailed(field, f"{value[:40]!r} is neither ISO 8601 "
                               "(2026-05-01T09:00:00Z) nor epoch milliseconds")
    return ms


Limit = Annotated[int, Query(ge=1, le=500)]
ContactId = Annotated[int, Path(ge=1, le=MAX_ID)]
IdFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


@router.get("/contacts", response_class=JSON)
def search_contacts(
    ctx: Ctx,
    _key: AdminKey,
    email: str | None = None,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    phone: str | None = None,
    q: Annotated[str | None, Query(description="email prefix")] = None,
    attr: Annotated[list[str] | None, Query(description="name:value, repeatable")] = None,
    company_id: IdFilter = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> JSON:
    """Search contacts by one identity, an email prefix, attributes and company."""
    given = [(k, v) for k, v in (("email", email), ("user_id", user_id),
                                 ("anonymous_id", anonymous_id), ("phone", phone)) if v]
    if len(given) > 1:
        raise ValidationFailed(given[1][0], "search by one identity at a time")
    attributes: dict[str, str] = {}
    for item in attr or []:
        name, sep, value = item.partition(":")
        if not sep or not name:
            raise ValidationFailed("attr", f"{item!r} must be name:value, e.g. plan:pro")
        attributes[name] = value
    page = ctx.contacts.search(identity=given[0] if given else None, email_prefix=q,
                               attributes=attributes, company_id=company_id, cursor=cursor,
                               limit=limit)
    return JSON(page.to_dict())


@router.get("/contacts/{contact_id}", response_class=JSON)
def get_contact(ctx: Ctx, _key: AdminKey, contact_id: ContactId,
                events_limit: Annotated[int, Query(ge=1, le=500)] = 20) -> JSON:
    """A contact's profile: attributes, identities, companies, consent, merges, timeline."""
    return JSON(ctx.contacts.profile(contact_id, events_limit))


@router.get("/contacts/{contact_id}/events", response_class=JSON)
def contact_events(ctx: Ctx, _key: AdminKey, contact_id: ContactId, name: str | None = None,
                   type: str | None = None, since: str | None = None,
                   until: str | None = None, cursor: str | None = None,
                   limit: Limit = 50) -> JSON:
    """A contact's timeline, newest first, cursor-paginated."""
    page = ctx.contacts.timeline(contact_id, name=name, type=type,
                                 since=parse_time(since, "since"),
                                 until=parse_time(until, "until"), cursor=cursor, limit=limit)
    return JSON(page.to_dict())


@router.get("/events", response_class=JSON)
def events(ctx: Ctx, _key: AdminKey, name: str | None = None, type: str | None = None,
           contact_id: IdFilter = None, since: str | None = None, until: str | None = None,
           cursor: str | None = None, limit: Limit = 50) -> JSON:
    """Events by name, type, contact and time, newest first."""
    page = ctx.events.find(contact_id=contact_id, name=name, type=type,
                           since=parse_time(since, "since"), until=parse_time(until, "until"),
                           cursor=cursor, limit=limit)
    return JSON(page.to_dict())


@router.get("/companies/{company_id}", response_class=JSON)
def company(ctx: Ctx, _key: AdminKey,
            company_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> JSON:
    """A company (account) with its attributes and members."""
    return JSON(ctx.contacts.company(company_id))


class ConsentBody(_Body):
    """A consent decision."""

    channel: str = Field(examples=["email"])
    purpose: str = Field(examples=["marketing"])
    status: Literal["opted_in", "opted_out", "pending"]
    source: str = Field(default="api", max_length=64)
    text_version: str | None = Field(default=None, max_length=128)
    ip: str | None = Field(default=None, max_length=45)


@router.post("/contacts/{contact_id}/consent", response_class=JSON)
def set_consent(ctx: Ctx, _key: AdminKey, contact_id: ContactId, body: ConsentBody) -> JSON:
    """Record a consent decision (history keeps every change)."""
    changed = ctx.contacts.set_consent(contact_id, body.channel, body.purpose, body.status,
                                       body.source, body.text_version, body.ip)
    return JSON({"changed": changed})


@router.get("/contacts/{contact_id}/consent/history", response_class=JSON)
def consent_history(ctx: Ctx, _key: AdminKey, contact_id: ContactId) -> JSON:
    """Every consent change, with source, time, text version and IP."""
    return JSON({"items": ctx.contacts.consent_history(contact_id)})


class FieldBody(_Body):
    """A custom field declaration."""

    name: str = Field(max_length=128)
    type: Literal["string", "number", "boolean", "date", "datetime", "enum", "list"]
    values: list[str] = Field(default_factory=list, max_length=1000)
    item_type: Literal["string", "number", "boolean"] | None = None
    entity: Literal["contact", "company"] = "contact"
    description: str = Field(default="", max_length=2000)


def _field_dict(spec: FieldSpec) -> dict[str, Any]:
    return {"name": spec.name, "type": spec.type, "values": list(spec.values),
            "item_type": spec.item_type, "entity": spec.entity,
            "description": spec.description}


@router.get("/fields", response_class=JSON)
def get_fields(ctx: Ctx, _key: AdminKey) -> JSON:
    """Declared custom fields."""
    return JSON({"items": [_field_dict(f) for f in ctx.contacts.fields()]})


@router.post("/fields", response_class=JSON, status_code=201)
def post_field(ctx: Ctx, _key: AdminKey, body: FieldBody) -> JSON:
    """Declare a field; values written afterwards must fit its type."""
    spec = FieldSpec(body.name, body.type, tuple(body.values), body.item_type, body.entity,
                     body.description)
    ctx.contacts.declare_field(spec)
    return JSON(_field_dict(spec), status_code=201)


@router.delete("/fields/{name}", response_class=JSON)
def delete_field(ctx: Ctx, _key: AdminKey, name: str) -> JSON:
    """Remove a declaration; stored values stay."""
    return JSON({"deleted": ctx.contacts.drop_field(name)})


class SuppressionBody(_Body):
    """An address to suppress."""

    kind: Literal["email", "phone"]
    address: str = Field(max_length=320)
    reason: Literal["hard_bounce", "complaint", "manual", "unsubscribed"] = "manual"
    note: str = Field(default="", max_length=2000)


@router.get("/suppressions", response_class=JSON)
def get_suppressions(ctx: Ctx, _key: AdminKey, cursor: IdFilter = None,
                     limit: Limit = 100) -> JSON:
    """The suppression list, newest first."""
    items = ctx.contacts.suppressions(limit, cursor)
    return JSON({"items": items, "next_cursor": items[-1]["id"] if len(items) == limit
                 else None})


@router.post("/suppressions", response_class=JSON, status_code=201)
def post_suppression(ctx: Ctx, _key: AdminKey, body: SuppressionBody) -> JSON:
    """Suppress an address (it will never be contacted)."""
    stored = ctx.contacts.suppress(body.kind, body.address, body.reason, body.note)
    return JSON({"kind": body.kind, "address": stored, "reason": body.reason},
                status_code=201)


@router.delete("/suppressions/{kind}/{address}", response_class=JSON)
def delete_suppression(ctx: Ctx, _key: AdminKey, kind: Literal["email", "phone"],
                       address: str) -> JSON:
    """Lift a suppression (addresses of erased contacts stay suppressed)."""
    return JSON({"deleted": ctx.contacts.unsuppress(kind, address)})


class KeyBody(_Body):
    """A new API key."""

    kind: Literal["write", "admin"]
    name: str = Field(min_length=1, max_length=128)


def _key_dict(key: Any) -> dict[str, Any]:
    return {"id": key.id, "kind": key.kind.value, "name": key.name, "prefix": key.prefix,
            "created_at": key.created_at, "revoked_at": key.revoked_at,
            "last_used_at": key.last_used_at}


@router.get("/keys", response_class=JSON)
def get_keys(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every API key (never the secret)."""
    with ctx.store.read() as conn:
        return JSON({"items": [_key_dict(k) for k in list_keys(conn)]})


@router.post("/keys", response_class=JSON, status_code=201)
def post_key(ctx: Ctx, _key: AdminKey, body: KeyBody) -> JSON:
    """Create a key; the response is the only time its secret is shown."""
    with ctx.store.begin() as conn:
        key, plaintext = create_key(conn, ctx.settings.secret_key, body.kind, body.name,
                                    ctx.clock.now_ms())
    return JSON({**_key_dict(key), "key": plaintext}, status_code=201)


@router.post("/keys/{key_id}/revoke", response_class=JSON)
def post_revoke(ctx: Ctx, _key: AdminKey,
                key_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> JSON:
    """Revoke a key; it stops working at once."""
    with ctx.store.begin() as conn:
        key = revoke_key(conn, key_id, ctx.clock.now_ms())
    ctx.keys.forget()
    return JSON(_key_dict(key))
