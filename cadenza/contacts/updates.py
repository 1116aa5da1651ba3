"""Set-oriented writes to contacts and companies: traits, built-in properties, memberships."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.store import dialect_insert, dumps, loads, schema, select_in, update_rows

_CHUNK = 400


@dataclass
class ProfileUpdate:
    """Changes one message makes to one contact (applied in message order)."""

    contact_id: int
    at: int
    attributes: dict[str, Any] = field(default_factory=dict)
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None


@dataclass
class CompanyUpdate:
    """A `group` call: the contact belongs to the company, whose traits are updated."""

    contact_id: int
    group_id: str
    at: int
    attributes: dict[str, Any] = field(default_factory=dict)


def apply_profile_updates(conn: Connection, updates: Sequence[ProfileUpdate]) -> int:
    """Fold updates per contact in order, then write each changed contact once."""
    if not updates:
        return 0
    c = schema.contacts
    ids = sorted({u.contact_id for u in updates})
    current: dict[int, dict[str, Any]] = {}
    for cid, attributes, email, phone, timezone, locale in select_in(
            conn, "SELECT id, attributes, email, phone, timezone, locale FROM contacts "
            "WHERE id IN ({marks})", ids):
        current[cid] = {"attributes": loads(attributes), "email": email, "phone": phone,
                        "timezone": timezone, "locale": locale}
    changed: dict[int, dict[str, Any]] = {}
    for update in updates:
        row = current[update.contact_id]
        new = dict(row)
        attributes = dict(row["attributes"] or {})
        for key, value in update.attributes.items():
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        new["attributes"] = attributes
        for name in ("email", "phone", "timezone", "locale"):
            value = getattr(update, name)
            if value is not None:
                new[name] = value
        if new != row:
            new["updated_at"] = update.at
            current[update.contact_id] = new
            changed[update.contact_id] = new
    update_rows(
        conn, c, "id", ("attributes", "email", "phone", "timezone", "locale", "updated_at"),
        [(dumps(row["attributes"]), row["email"], row["phone"], row["timezone"], row["locale"],
          row["updated_at"], cid) for cid, row in changed.items()],
    )
    return len(changed)


def apply_company_updates(conn: Connection, updates: Sequence[CompanyUpdate]) -> None:
    """Upsert companies by group id, merge their traits, and add the memberships."""
    if not updates:
        return
    t = schema.companies
    group_ids = sorted({u.group_id for u in updates})
    existing: dict[str, dict[str, Any]] = {}
    for start in range(0, len(group_ids), _CHUNK):
        chunk = group_ids[start : start + _CHUNK]
        for found in conn.execute(sa.select(t).where(t.c.group_id.in_(chunk))).mappings():
            existing[found["group_id"]] = dict(found)
    fresh: dict[str, dict[str, Any]] = {}
    touched: set[str] = set()
    for update in updates:
        row = existing.get(update.group_id) or fresh.get(update.group_id)
        if row is None:
            row = {"group_id": update.group_id, "name": None, "domain": None, "attributes": {},
                   "created_at": update.at, "updated_at": update.at}
            fresh[update.group_id] = row
        attributes = dict(row["attributes"] or {})
        for key, value in update.attributes.items():
            if key == "name":
                row["name"] = value if isinstance(value, str) else row["name"]
            elif key in ("domain", "website") and isinstance(value, str):
                row["domain"] = _domain(value)
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        row["attributes"] = attributes
        row["updated_at"] = update.at
        touched.add(update.group_id)
    if fresh:
        conn.execute(sa.insert(t), list(fresh.values()))
    stale = [existing[g] for g in touched if g in existing]
    if stale:
        conn.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("cid"))
            .values(name=sa.bindparam("name"), domain=sa.bindparam("domain"),
                    attributes=sa.bindparam("attributes"), updated_at=sa.bindparam("updated_at")),
            [{"cid": r["id"], "name": r["name"], "domain": r["domain"],
              "attributes": r["attributes"], "updated_at": r["updated_at"]} for r in stale],
        )
    ids: dict[str, int] = dict(
        conn.execute(sa.select(t.c.group_id, t.c.id).where(t.c.group_id.in_(sorted(touched))))
        .all()
    )
    members = {(ids[u.group_id], u.contact_id): u.at for u in updates}
    m = schema.company_members
    conn.execute(
        dialect_insert(conn, m).on_conflict_do_nothing(),
        [{"company_id": cid, "contact_id": contact, "created_at": at}
         for (cid, contact), at in members.items()],
    )


def _domain(value: str) -> str:
    text = value.strip().lower()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    return text.split("/", 1)[0].removeprefix("www.")
