"""Consent per channel and purpose with full history, and the suppression list.

The current state is one row per (contact, channel, purpose); every change appends a history
row with its source, time, the version of the consent text shown and the IP it came from.
Suppression is by address, independent of contacts, so an address stays suppressed even if the
contact is erased (then only a keyed hash of the address is kept).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.contacts.normalize import normalize_email, normalize_phone
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import dialect_insert, insert_rows, schema, select_in
from cadenza.store.changes import mark_changed

CHANNELS = ("email", "sms", "push", "webhook", "whatsapp", "in_app", "phone", "mail")
_PURPOSE = re.compile(r"^[a-z][a-z0-9_\-:.]{0,63}$")
_CHUNK = 300


class ConsentStatus(StrEnum):
    """Where a contact stands for one channel and purpose."""

    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"
    PENDING = "pending"
    """Asked to subscribe; waiting for the double opt-in confirmation."""


class SuppressionReason(StrEnum):
    """Why an address must not be contacted."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    ERASED = "erased"
    UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True)
class ConsentChange:
    """One consent decision to record."""

    contact_id: int
    channel: str
    purpose: str
    status: ConsentStatus
    source: str
    """Where it came from: api, csv:<file>, form, preference_center, sms_keyword, ..."""
    at: int
    text_version: str | None = None
    """Version of the consent wording the person saw."""
    ip: str | None = None

    def __post_init__(self) -> None:
        check_channel(self.channel)
        if not _PURPOSE.match(self.purpose):
            raise ValidationFailed(
                "purpose", f"{self.purpose!r} must be a lower-case slug such as 'marketing', "
                "'transactional' or 'newsletter'"
            )
        if self.ip is not None and len(self.ip) > 45:
            raise ValidationFailed("ip", "is longer than an IPv6 address")


def check_channel(channel: str, field: str = "channel") -> None:
    """Raise with a suggestion when `channel` is not a known channel."""
    if channel in CHANNELS:
        return
    close = difflib.get_close_matches(channel, CHANNELS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; one of {', '.join(CHANNELS)}"
    raise ValidationFailed(field, f"{channel!r} is not a channel{hint}")


def parse_status(value: str, field: str = "status") -> ConsentStatus:
    """Accept the status names and the usual yes/no spellings found in spreadsheets."""
    text = value.strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {
        "opted_in": ConsentStatus.OPTED_IN, "in": ConsentStatus.OPTED_IN,
        "yes": ConsentStatus.OPTED_IN, "y": ConsentStatus.OPTED_IN,
        "true": ConsentStatus.OPTED_IN, "1": ConsentStatus.OPTED_IN,
        "subscribed": ConsentStatus.OPTED_IN,
        "opted_out": ConsentStatus.OPTED_OUT, "out": ConsentStatus.OPTED_OUT,
        "no": ConsentStatus.OPTED_OUT, "n": ConsentStatus.OPTED_OUT,
        "false": ConsentStatus.OPTED_OUT, "0": ConsentStatus.OPTED_OUT,
        "unsubscribed": ConsentStatus.OPTED_OUT,
        "pending": ConsentStatus.PENDING, "double_opt_in": ConsentStatus.PENDING,
    }
    try:
        return aliases[text]
    except KeyError:
        raise ValidationFailed(
            field, f"{value!r} is not a consent status; use opted_in, opted_out or pending"
        ) from None


def record_consent(conn: Connection, changes: Sequence[ConsentChange]) -> int:
    """Apply changes in order; append history for each real change; return how many."""
    if not changes:
        return 0
    t = schema.consents
    contact_ids = sorted({c.contact_id for c in changes})
    _require_contacts(conn, contact_ids)
    current: dict[tuple[int, str, str], str] = {
        (cid, channel, purpose): status
        for cid, channel, purpose, status in select_in(
            conn, "SELECT contact_id, channel, purpose, status FROM consents "
            "WHERE contact_id IN ({marks})", contact_ids)
    }
    history: list[tuple[object, ...]] = []
    latest: dict[tuple[int, str, str], ConsentChange] = {}
    for change in changes:
        key = (change.contact_id, change.channel, change.purpose)
        previous = current.get(key)
        if previous == change.status.value:
            continue
        history.append((change.contact_id, change.channel, change.purpose,
                        change.status.value, previous, change.source, change.text_version,
                        change.ip, change.at))
        current[key] = change.status.value
        latest[key] = change
    if not history:
        return 0
    insert_rows(conn, schema.consent_history,
                ("contact_id", "channel", "purpose", "status", "previous_status", "source",
                 "text_version", "ip", "at"), history)
    insert_rows(conn, t, ("contact_id", "channel", "purpose", "status", "source", "updated_at"),
                [(c.contact_id, c.channel, c.purpose, c.status.value, c.source, c.at)
                 for c in latest.values()],
                upsert_on=("contact_id", "channel", "purpose"),
                update=("status", "source", "updated_at"))
    # Segments, scores and stages that read consent re-evaluate these contacts.
    mark_changed(conn, {cid for cid, _, _ in latest}, max(c.at for c in latest.values()))
    return len(history)


def _require_contacts(conn: Connection, ids: Sequence[int]) -> None:
    c = schema.contacts
    found: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        found.update(conn.execute(sa.select(c.c.id).where(c.c.id.in_(chunk),
                                                          c.c.merged_into.is_(None))).scalars())
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound("contact", missing[0])


def normalize_address(kind: str, address: str) -> str:
    """The form an address is suppressed under."""
    _check_kind(kind)
    if kind == "email":
        return normalize_email(address, "address")
    return normalize_phone(address, "address")


def _check_kind(kind: str) -> None:
    if kind not in ("email", "phone"):
        raise ValidationFailed("kind", f"{kind!r} must be email or phone")


def _stored_form(kind: str, address: str) -> str:
    # An erased address is only known by its keyed hash, which is stored as given.
    if address.startswith("sha256:"):
        _check_kind(kind)
        return address
    return normalize_address(kind, address)


def suppress(conn: Connection, kind: str, address: str, reason: SuppressionReason, at: int,
             note: str = "") -> str:
    """Add (or re-reason) an address on the suppression list; return its stored form.

    An erased entry keeps its reason: re-reasoning it would let `unsuppress` remove it.
    """
    stored = _stored_form(kind, address)
    s = schema.suppressions
    insert = dialect_insert(conn, s)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["kind", "address"],
            set_={"reason": insert.excluded.reason, "note": insert.excluded.note},
            where=s.c.reason != SuppressionReason.ERASED.value,
        ),
        {"kind": kind, "address": stored, "reason": reason.value, "note": note,
         "created_at": at},
    )
    return stored


def unsuppress(conn: Connection, kind: str, address: str) -> bool:
    """Remove an address from the list; True when it was there. Erased entries stay."""
    stored = _stored_form(kind, address)
    s = schema.suppressions
    result = conn.execute(sa.delete(s).where(s.c.kind == kind, s.c.address == stored,
                                             s.c.reason != SuppressionReason.ERASED.value))
    return bool(result.rowcount)


def is_suppressed(conn: Connection, kind: str, addresses: Iterable[str], *,
                  normalized: bool = False) -> set[str]:
    """The subset of `addresses` (as given) whose normalised form is suppressed.

    An address that cannot be normalised is looked up as given (it is never sendable anyway,
    and one bad address must not stop the check of the others). `normalized=True` says the
    addresses are already in stored form (a contact's primary email or phone), which skips
    normalising each one again on the send path.
    """
    given: dict[str, set[str]] = {}
    if normalized:
        _check_kind(kind)
    for address in addresses:
        if normalized:
            form = address
        else:
            try:
                form = _stored_form(kind, address)
            except ValidationFailed as exc:
                if exc.field == "kind":
                    raise
                form = address
        given.setdefault(form, set()).add(address)
    s = schema.suppressions
    values = sorted(given)
    hits: set[str] = set()
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        for form in conn.execute(sa.select(s.c.address).where(s.c.kind == kind,
                                                              s.c.address.in_(chunk))).scalars():
            hits.update(given[form])
    return hits
