"""The read side of contacts: a profile with its timeline, and search."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.contacts.normalize import normalize_email, normalize_phone
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Page, check_limit, decode_cursor, encode_cursor, schema

c = schema.contacts
IDENTITY_KINDS = ("user_id", "anonymous_id", "email", "phone")


# Statements built once: a profile read runs seven of them, and building and hashing
# SQLAlchemy statements per call cost more than SQLite spent answering them.
_cid: sa.BindParameter[int] = sa.bindparam("cid")
_i, _co, _m = schema.identities, schema.companies, schema.company_members
_k, _s, _cm, _e = schema.consents, schema.suppressions, schema.contact_merges, schema.events
_LIVE = sa.select(c.c.id, c.c.merged_into).where(c.c.id == _cid)
_CONTACT = sa.select(c).where(c.c.id == _cid)
_IDENTITIES = (sa.select(_i.c.kind, _i.c.value, _i.c.source, _i.c.created_at)
               .where(_i.c.contact_id == _cid).order_by(_i.c.kind, _i.c.created_at))
_COMPANIES = (sa.select(_co.c.id, _co.c.group_id, _co.c.name, _co.c.domain, _co.c.attributes,
                        _m.c.created_at.label("member_since"))
              .join(_m, _m.c.company_id == _co.c.id).where(_m.c.contact_id == _cid)
              .order_by(_co.c.name))
_CONSENT = (sa.select(_k.c.channel, _k.c.purpose, _k.c.status, _k.c.source, _k.c.updated_at)
            .where(_k.c.contact_id == _cid).order_by(_k.c.channel, _k.c.purpose))
_SUPPRESSED = (sa.select(_s.c.kind, _s.c.address, _s.c.reason, _s.c.created_at)
               .where(sa.or_(sa.and_(_s.c.kind == "email", _s.c.address == sa.bindparam("email")),
                             sa.and_(_s.c.kind == "phone", _s.c.address == sa.bindparam("phone")))))
_MERGE_COLUMNS = (_cm.c.id, _cm.c.winner_id, _cm.c.loser_id, _cm.c.reason, _cm.c.outcome,
                  _cm.c.identity_kind, _cm.c.identity_value, _cm.c.message_id, _cm.c.details,
                  _cm.c.at)
_MERGES = sa.union_all(sa.select(*_MERGE_COLUMNS).where(_cm.c.winner_id == _cid),
                       sa.select(*_MERGE_COLUMNS).where(_cm.c.loser_id == _cid))
_TIMELINE = (sa.select(_e.c.id, _e.c.message_id, _e.c.type, _e.c.name, _e.c.properties,
                       _e.c.source, _e.c.timestamp)
             .where(_e.c.contact_id == _cid)
             .order_by(_e.c.timestamp.desc(), _e.c.id.desc()).limit(sa.bindparam("limit")))


def live_contact_id(conn: Connection, contact_id: int) -> int:
    """Follow merges to the contact that holds `contact_id`'s data now."""
    row = conn.execute(_LIVE, {"cid": contact_id}).first()
    if row is None:
        raise NotFound("contact", contact_id)
    return int(row.merged_into or row.id)


def _rows(conn: Connection, statement: sa.Executable, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(statement, params).mappings()]


def get_profile(conn: Connection, contact_id: int, *, events_limit: int = 20) -> dict[str, Any]:
    """Everything known about a contact, with the first page of its timeline."""
    check_limit(events_limit)
    live = live_contact_id(conn, contact_id)
    row = conn.execute(_CONTACT, {"cid": live}).mappings().one()
    suppressed = (_rows(conn, _SUPPRESSED, email=row["email"], phone=row["phone"])
                  if row["email"] or row["phone"] else [])
    merges = sorted(_rows(conn, _MERGES, cid=live), key=lambda m: (m["at"], m["id"]))
    timeline = _rows(conn, _TIMELINE, cid=live, limit=events_limit + 1)
    next_cursor = None
    if len(timeline) > events_limit:
        timeline = timeline[:events_limit]
        next_cursor = encode_cursor(timeline[-1]["timestamp"], timeline[-1]["id"])
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
        "identities": _rows(conn, _IDENTITIES, cid=live),
        "companies": _rows(conn, _COMPANIES, cid=live),
        "consent": _rows(conn, _CONSENT, cid=live),
        "suppressions": suppressed,
        "merges": merges,
        "timeline": {"items": timeline, "next_cursor": next_cursor},
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
        query = query.where(_attribute_equals(conn.dialect.name, name, value))
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


def _attribute_equals(dialect: str, name: str, value: str) -> sa.ColumnElement[bool]:
    """`attributes.name` equals the query text `value`, whatever JSON type it is stored as.

    PostgreSQL's `->>` already renders numbers and booleans as text ('36', 'true'). SQLite's
    json_extract returns native values, so numbers and booleans need their own comparison.
    """
    column = c.c.attributes[name]
    as_text: sa.ColumnElement[bool] = column.as_string() == value
    if dialect != "sqlite":
        return as_text
    conditions = [as_text]
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        conditions.append(column.as_float() == number)
    if value in ("true", "false"):
        path = '$."' + name.replace('"', '\\"') + '"'
        conditions.append(sa.func.json_type(c.c.attributes, path) == value)
    return sa.or_(*conditions)


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
