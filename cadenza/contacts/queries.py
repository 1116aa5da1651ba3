"""The read side of contacts: a profile with its timeline, and search."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.contacts.normalize import normalize_email, normalize_phone
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import schema
from cadenza.store.paging import Page, check_limit, decode_cursor, encode_cursor

c = schema.contacts
IDENTITY_KINDS = ("user_id", "anonymous_id", "email", "phone")


def live_contact_id(conn: Connection, contact_id: int) -> int:
    """Follow merges to the contact that holds `contact_id`'s data now."""
    row = conn.execute(sa.select(c.c.id, c.c.merged_into).where(c.c.id == contact_id)).first()
    if row is None:
        raise NotFound("contact", contact_id)
    return int(row.merged_into or row.id)


def get_profile(conn: Connection, contact_id: int, *, events_limit: int = 20) -> dict[str, Any]:
    """Everything known about a contact, with the first page of its timeline."""
    from cadenza.events.queries import list_events  # events depends on contacts, not back

    live = live_contact_id(conn, contact_id)
    row = conn.execute(sa.select(c).where(c.c.id == live)).mappings().one()
    i = schema.identities
    identities = [
        dict(r) for r in conn.execute(
            sa.select(i.c.kind, i.c.value, i.c.source, i.c.created_at)
            .where(i.c.contact_id == live).order_by(i.c.kind, i.c.created_at)
        ).mappings()
    ]
    co, m = schema.companies, schema.company_members
    companies = [
        dict(r) for r in conn.execute(
            sa.select(co.c.id, co.c.group_id, co.c.name, co.c.domain, co.c.attributes,
                      m.c.created_at.label("member_since"))
            .join(m, m.c.company_id == co.c.id).where(m.c.contact_id == live)
            .order_by(co.c.name)
        ).mappings()
    ]
    k = schema.consents
    consent = [
        dict(r) for r in conn.execute(
            sa.select(k.c.channel, k.c.purpose, k.c.status, k.c.source, k.c.updated_at)
            .where(k.c.contact_id == live).order_by(k.c.channel, k.c.purpose)
        ).mappings()
    ]
    s = schema.suppressions
    addresses = [(kind, row[kind]) for kind in ("email", "phone") if row[kind]]
    suppressed = [
        dict(r) for r in conn.execute(
            sa.select(s.c.kind, s.c.address, s.c.reason, s.c.created_at).where(
                sa.or_(sa.false(), *(sa.and_(s.c.kind == kind, s.c.address == value)
                                     for kind, value in addresses)))
        ).mappings()
    ] if addresses else []
    cm = schema.contact_merges
    merges = [
        dict(r) for r in conn.execute(
            sa.select(cm.c.winner_id, cm.c.loser_id, cm.c.reason, cm.c.outcome,
                      cm.c.identity_kind, cm.c.identity_value, cm.c.message_id, cm.c.details,
                      cm.c.at)
            .where(sa.or_(cm.c.winner_id == live, cm.c.loser_id == live))
            .order_by(cm.c.at, cm.c.id)
        ).mappings()
    ]
    timeline = list_events(conn, contact_id=live, limit=events_limit, with_context=False)
    return {
        "id": live,
        "requested_id": contact_id,
        "user_id": row["user_id"],
        "email": row["email"],
        "phone": row["phone"],
        "timezone": row["timezone"],
        "locale": row["locale"],
        "attributes": row["attributes"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "identities": identities,
        "companies": companies,
        "consent": consent,
        "suppressions": suppressed,
        "merges": merges,
        "timeline": timeline.to_dict(),
    }


def search_contacts(
    conn: Connection,
    *,
    identity: tuple[str, str] | None = None,
    email_prefix: str | None = None,
    attributes: dict[str, str] | None = None,
    company_id: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Live contacts matching every filter, newest first."""
    check_limit(limit)
    query = sa.select(c.c.id, c.c.user_id, c.c.email, c.c.phone, c.c.attributes,
                      c.c.timezone, c.c.created_at, c.c.updated_at).where(
        c.c.merged_into.is_(None))
    if identity is not None:
        kind, value = identity
        if kind not in IDENTITY_KINDS and not kind.startswith("external:"):
            raise ValidationFailed("identity", f"{kind!r} is not one of "
                                   f"{', '.join(IDENTITY_KINDS)} or external:<system>")
        if kind == "email":
            value = normalize_email(value)
        elif kind == "phone":
            value = normalize_phone(value)
        i = schema.identities
        query = query.where(c.c.id.in_(
            sa.select(i.c.contact_id).where(i.c.kind == kind, i.c.value == value)))
    if email_prefix:
        prefix = email_prefix.strip().lower()
        # A range, not LIKE, so the email index serves it on both dialects.
        query = query.where(c.c.email >= prefix, c.c.email < prefix + "\U0010ffff")
    for name, value in (attributes or {}).items():
        query = query.where(c.c.attributes[name].as_string() == value)
    if company_id is not None:
        m = schema.company_members
        query = query.where(c.c.id.in_(
            sa.select(m.c.contact_id).where(m.c.company_id == company_id)))
    if cursor is not None:
        (last_id,) = decode_cursor(cursor, 1)
        query = query.where(c.c.id < last_id)
    rows = [dict(r) for r in conn.execute(query.order_by(c.c.id.desc()).limit(limit + 1))
            .mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["id"])
    return Page(rows, next_cursor)


def get_company(conn: Connection, company_id: int, *, members_limit: int = 50) -> dict[str, Any]:
    """A company (account), its attributes and its first members."""
    co = schema.companies
    row = conn.execute(sa.select(co).where(co.c.id == company_id)).mappings().first()
    if row is None:
        raise NotFound("company", company_id)
    members = search_contacts(conn, company_id=company_id, limit=members_limit)
    count = conn.execute(sa.select(sa.func.count()).select_from(schema.company_members)
                         .where(schema.company_members.c.company_id == company_id)).scalar_one()
    return {**dict(row), "member_count": count, "members": members.to_dict()}


def consent_history(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """Every consent change of a contact, oldest first."""
    live = live_contact_id(conn, contact_id)
    h = schema.consent_history
    return [dict(r) for r in conn.execute(
        sa.select(h).where(h.c.contact_id == live).order_by(h.c.at, h.c.id)).mappings()]
