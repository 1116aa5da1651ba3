"""`TemplateService`: templates stored by key, checked when saved, rendered in the sandbox."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.models import Recipient, TemplateRecord
from cadenza.channels.registry import channel_spec
from cadenza.channels.render import Renderer, is_html, render_context
from cadenza.clock import Clock
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Store, dialect_insert, schema

KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")
MAX_SOURCE_CHARS = 256 * 1024
MAX_SUBJECT_CHARS = 2000


def check_key(key: str, field: str = "key") -> str:
    """A template key is a lower-case slug (welcome, pro-tips, cart.reminder-2)."""
    if not KEY.match(key):
        raise ValidationFailed(field, f"{key[:140]!r} must be a lower-case slug of at most 128 "
                               "characters: letters, digits, '-', '_' and '.'")
    return key


class TemplateService:
    """Create, update, read and preview templates."""

    def __init__(self, store: Store, clock: Clock, renderer: Renderer | None = None) -> None:
        self.store = store
        self.clock = clock
        self.renderer = renderer or Renderer()

    def save(self, key: str, channel: str, subject: str, body: str) -> tuple[TemplateRecord, bool]:
        """Create or replace the template `key`; return it and whether it was created.

        Both sources are compiled first, so a syntax error is reported (with its line) at save
        time and never reaches a send.
        """
        check_key(key)
        channel_spec(channel)
        if len(subject) > MAX_SUBJECT_CHARS:
            raise ValidationFailed("subject", f"is {len(subject)} characters; the limit is "
                                   f"{MAX_SUBJECT_CHARS}")
        if not body.strip():
            raise ValidationFailed("body", "is empty; a template needs a body")
        if len(body) > MAX_SOURCE_CHARS:
            raise ValidationFailed("body", f"is {len(body)} characters; the limit is "
                                   f"{MAX_SOURCE_CHARS}")
        self.renderer.compile(subject, name=f"{key}.subject")
        self.renderer.compile(body, name=key, html=is_html(body))
        now = self.clock.now_ms()
        t = schema.templates
        with self.store.begin() as conn:
            existed = conn.execute(sa.select(t.c.created_at).where(t.c.key == key)).first()
            insert = dialect_insert(conn, t)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["key"],
                set_={"channel": insert.excluded.channel, "subject": insert.excluded.subject,
                      "body": insert.excluded.body, "updated_at": insert.excluded.updated_at},
            ), {"key": key, "channel": channel, "subject": subject, "body": body,
                "created_at": now, "updated_at": now})
        created_at = now if existed is None else int(existed[0])
        return TemplateRecord(key, channel, subject, body, created_at, now), existed is None

    def get(self, key: str) -> TemplateRecord:
        """The template `key` (NotFound when there is none)."""
        with self.store.read() as conn:
            found = load_templates(conn, [key])
        if key not in found:
            raise NotFound("template", key)
        return found[key]

    def all(self) -> list[TemplateRecord]:
        """Every template, by key."""
        t = schema.templates
        with self.store.read() as conn:
            rows = conn.execute(sa.select(*_COLUMNS).order_by(t.c.key)).all()
        return [TemplateRecord(*row) for row in rows]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys among `keys` that name no template (for publish-time checks)."""
        wanted = sorted(set(keys))
        with self.store.read() as conn:
            found = load_templates(conn, wanted)
        return [k for k in wanted if k not in found]

    def preview(self, key: str, contact_id: int,
                entry: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Render template `key` for one contact, as the dispatcher would."""
        template = self.get(key)
        c = schema.contacts
        with self.store.read() as conn:
            row = conn.execute(sa.select(c.c.id, c.c.email, c.c.phone, c.c.user_id,
                                         c.c.attributes, c.c.timezone, c.c.locale)
                               .where(c.c.id == contact_id)).first()
        if row is None:
            raise NotFound("contact", contact_id)
        contact = Recipient(row[0], row[1], row[2], row[3], row[4] or {}, row[5], row[6])
        context = render_context(contact, entry, None, None)
        return self.renderer.compose(template=template, params={}, text_fields=(),
                                     context=context, inline_name=key)


_t = schema.templates
_COLUMNS = (_t.c.key, _t.c.channel, _t.c.subject, _t.c.body, _t.c.created_at, _t.c.updated_at,
            _t.c.preheader, _t.c.text, _t.c.format, _t.c.compiled, _t.c.locales, _t.c.purpose,
            _t.c.sender)
"""In `TemplateRecord` field order."""


def load_templates(conn: Connection, keys: Iterable[str]) -> dict[str, TemplateRecord]:
    """The templates named in `keys`, by key, in one statement."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    t = schema.templates
    rows = conn.execute(sa.select(*_COLUMNS).where(t.c.key.in_(wanted))).all()
    return {row[0]: TemplateRecord(*row) for row in rows}
