"""Sender identities: who an email is from (From, Reply-To, List-Id), saved by key.

A template names its sender identity by key; the email channel reads the row when it builds
the message. Every value here ends up in a header, so each is checked when saved: addresses
with email-validator, display names and list ids free of line breaks and control characters
(a CR or LF in a header value would start a header of its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import formataddr, getaddresses

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from cadenza.clock import Clock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.store import Store, dialect_insert, schema

KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
_LIST_ID = re.compile(r"^(?:(?P<description>[^<>]*?)\s*<(?P<id>[^<>]+)>|(?P<bare>[^<>\s]+))$")
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_LIST_LABEL = re.compile(rf"^{_ATOM}(?:\.{_ATOM})+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_s = schema.sender_identities


@dataclass(frozen=True)
class SenderIdentity:
    """A From address, with an optional Reply-To and List-Id."""

    key: str
    from_address: str
    """'Name <address>' or a bare address."""
    reply_to: str | None = None
    list_id: str | None = None
    """The List-Id header value: 'Description <label.domain>' (RFC 2919)."""
    created_at: int = 0
    updated_at: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"key": self.key, "from_address": self.from_address, "reply_to": self.reply_to,
                "list_id": self.list_id, "created_at": self.created_at,
                "updated_at": self.updated_at}


def _no_control(value: str, field: str) -> None:
    if _CONTROL.search(value):
        raise ValidationFailed(field, "contains a line break or control character; header "
                               "values must be one line of text")


def check_mailbox(value: str, field: str) -> str:
    """A mailbox ('Name <address>' or 'address') with a valid address; the normalised
    form. ValidationFailed naming `field` otherwise."""
    _no_control(value, field)
    found = getaddresses([value])
    name, address = found[0] if len(found) == 1 else ("", "")
    if not address or "@" not in address or address not in value:
        raise ValidationFailed(field, f"{value[:200]!r} is not an email address (write "
                               "'Name <name@example.com>' or 'name@example.com')")
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed(field, f"{address[:200]!r} is not a valid address: {exc}") \
            from None
    if len(name) > 200:
        raise ValidationFailed(field, "the display name is over 200 characters")
    normalized = checked.normalized
    try:
        Address(name, addr_spec=normalized)
    except (ValueError, IndexError) as exc:
        raise ValidationFailed(field, f"cannot be a header: {exc}") from None
    return formataddr((name, normalized)) if name else normalized


def check_list_id(value: str, field: str = "list_id") -> str:
    """A List-Id value: 'Description <label.domain>' or 'label.domain' (RFC 2919)."""
    _no_control(value, field)
    value = value.strip()
    found = _LIST_ID.match(value)
    label = (found.group("id") or found.group("bare")) if found else None
    if not label or not _LIST_LABEL.match(label) or len(value) > 255:
        raise ValidationFailed(field, f"{value[:200]!r} is not a list id; write "
                               "'Newsletter <news.example.com>' (a dotted label, at most 255 "
                               "characters)")
    if found and found.group("description") is not None:
        description = found.group("description").strip().replace('"', "")
        return f"{description} <{label}>" if description else f"<{label}>"
    return f"<{label}>"


class SenderService:
    """Save, read, list and delete sender identities."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def save(self, key: str, from_address: str, reply_to: str | None = None,
             list_id: str | None = None) -> tuple[SenderIdentity, bool]:
        """Create or replace identity `key`; return it and whether it was created."""
        if not KEY.match(key):
            raise ValidationFailed("key", f"{key[:100]!r} must be a lower-case slug of at most "
                                   "64 characters: letters, digits, '-', '_' and '.'")
        sender = check_mailbox(from_address, "from_address")
        reply = check_mailbox(reply_to, "reply_to") if reply_to else None
        listed = check_list_id(list_id) if list_id else None
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            existed = conn.execute(sa.select(_s.c.created_at).where(_s.c.key == key)).first()
            insert = dialect_insert(conn, _s)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["key"],
                set_={name: insert.excluded[name]
                      for name in ("from_address", "reply_to", "list_id", "updated_at")},
            ), {"key": key, "from_address": sender, "reply_to": reply, "list_id": listed,
                "created_at": now, "updated_at": now})
        created_at = now if existed is None else int(existed[0])
        return SenderIdentity(key, sender, reply, listed, created_at, now), existed is None

    def get(self, key: str) -> SenderIdentity:
        """Identity `key` (NotFound when there is none)."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(*_COLUMNS).where(_s.c.key == key)).first()
        if row is None:
            raise NotFound("sender identity", key)
        return SenderIdentity(*row)

    def all(self) -> list[SenderIdentity]:
        """Every identity, by key."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(*_COLUMNS).order_by(_s.c.key)).all()
        return [SenderIdentity(*row) for row in rows]

    def delete(self, key: str) -> None:
        """Delete identity `key`; refused (Conflict) while templates name it."""
        t = schema.templates
        with self.store.begin() as conn:
            users = [r[0] for r in conn.execute(
                sa.select(t.c.key).where(t.c.sender == key).order_by(t.c.key)).all()]
            if users:
                raise Conflict(f"sender identity {key!r} is used by templates "
                               f"{', '.join(users)}; give them another sender first")
            if not conn.execute(sa.delete(_s).where(_s.c.key == key)).rowcount:
                raise NotFound("sender identity", key)


_COLUMNS = (_s.c.key, _s.c.from_address, _s.c.reply_to, _s.c.list_id, _s.c.created_at,
            _s.c.updated_at)
