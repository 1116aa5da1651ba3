"""`TemplateService`: templates stored by key, checked and laid out when saved, rendered in
the sandbox.

Saving does all the expensive work once: every source is compiled (a syntax error is
reported with its line), every `{% include %}` must name an existing snippet, an email body
in MJML is compiled to HTML, CSS is inlined, the preheader is put in, the text part is
generated when none is written (`layout.py`), and each locale's translation goes through the
same steps. What is stored is still Jinja: the renderer compiles it once and renders it for
every contact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.layout import FORMATS, lay_out
from cadenza.channels.models import Recipient, TemplateRecord
from cadenza.channels.registry import channel_spec
from cadenza.channels.render import (
    RENDER_TIMEOUT_MS,
    Renderer,
    is_html,
    locale_chain,
    render_context,
)
from cadenza.channels.snippets import (
    SnippetCache,
    SnippetService,
    check_includes_exist,
    referenced,
)
from cadenza.clock import Clock
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Store, dialect_insert, schema

KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")
LOCALE = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8}){0,3}$")
MAX_SOURCE_CHARS = 256 * 1024
MAX_SUBJECT_CHARS = 2000
MAX_LOCALES = 100
BUILT_IN_PURPOSES = ("marketing", "transactional")
TEXT_CHANNELS = ("sms", "webhook")
"""Channels whose body is never HTML: no autoescape, no layout, no preheader or text part."""


def check_key(key: str, field: str = "key") -> str:
    """A template key is a lower-case slug (welcome, pro-tips, cart.reminder-2)."""
    if not KEY.match(key):
        raise ValidationFailed(field, f"{key[:140]!r} must be a lower-case slug of at most 128 "
                               "characters: letters, digits, '-', '_' and '.'")
    return key


@dataclass(frozen=True)
class Draft:
    """One set of sources to save: the default or a locale's translation."""

    subject: str
    preheader: str
    body: str
    text: str | None


class TemplateService:
    """Create, update, read and preview templates; `snippets` manages shared partials."""

    def __init__(self, store: Store, clock: Clock, renderer: Renderer | None = None) -> None:
        self.store = store
        self.clock = clock
        cache = SnippetCache(store)
        self.renderer = renderer or Renderer(snippets=cache)
        if self.renderer.snippets is not None and isinstance(self.renderer.snippets,
                                                             SnippetCache):
            cache = self.renderer.snippets
        self.snippets = SnippetService(store, clock, cache, self.renderer.environment(False))

    @classmethod
    def from_settings(cls, store: Store, clock: Clock, settings: Any) -> TemplateService:
        """A service whose renderer has the settings' time limit
        (`template_render_timeout_ms`)."""
        timeout = int(getattr(settings, "template_render_timeout_ms", RENDER_TIMEOUT_MS))
        return cls(store, clock, Renderer(timeout_ms=timeout, snippets=SnippetCache(store)))

    # --- saving -------------------------------------------------------------------------------

    def save(self, key: str, channel: str, subject: str, body: str, *, preheader: str = "",
             text: str | None = None, format: str = "jinja",
             locales: Mapping[str, Mapping[str, Any]] | None = None,
             purpose: str = "marketing", sender: str | None = None,
             ) -> tuple[TemplateRecord, bool]:
        """Create or replace the template `key`; return it and whether it was created.

        Every source is compiled and laid out first, so a syntax error, an unknown snippet or
        broken MJML is reported (naming the field) at save time and never reaches a send.
        """
        check_key(key)
        channel_spec(channel)
        if format not in FORMATS:
            raise ValidationFailed("format", f"{format!r} is not a format; one of "
                                   f"{', '.join(FORMATS)}")
        if format == "mjml" and channel in TEXT_CHANNELS:
            raise ValidationFailed("format", f"mjml is for email; {channel} templates are "
                                   "plain text")
        default = Draft(subject, preheader, body, text)
        with self.store.read() as conn:
            snippets = {row[0] for row in conn.execute(
                sa.select(schema.template_snippets.c.key)).all()}
            self._check_purpose(conn, purpose)
            self._check_sender(conn, sender, channel)
        compiled = self._prepare(default, channel, format, snippets, "")
        stored_locales = {name: {**self._fields(draft),
                                 "compiled": self._prepare(draft, channel, format, snippets,
                                                           f"locales.{name}.")}
                          for name, draft in _locale_drafts(locales, default).items()}
        now = self.clock.now_ms()
        values = {"channel": channel, "subject": subject, "body": body,
                  "preheader": preheader, "text": text, "format": format,
                  "compiled": compiled, "locales": stored_locales or None,
                  "purpose": purpose, "sender": sender}
        t = schema.templates
        with self.store.begin() as conn:
            existed = conn.execute(sa.select(t.c.created_at).where(t.c.key == key)).first()
            insert = dialect_insert(conn, t)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["key"],
                set_={name: insert.excluded[name] for name in (*values, "updated_at")},
            ), {"key": key, **values, "created_at": now, "updated_at": now})
        created_at = now if existed is None else int(existed[0])
        record = TemplateRecord(key, channel, subject, body, created_at, now, preheader, text,
                                format, compiled, stored_locales or None, purpose, sender)
        return record, existed is None

    @staticmethod
    def _fields(draft: Draft) -> dict[str, Any]:
        return {"subject": draft.subject, "preheader": draft.preheader, "body": draft.body,
                "text": draft.text}

    def _prepare(self, draft: Draft, channel: str, format: str, snippets: set[str],
                 prefix: str) -> str | None:
        """Check one set of sources and lay it out; the value of `compiled`."""
        if len(draft.subject) > MAX_SUBJECT_CHARS:
            raise ValidationFailed(f"{prefix}subject", f"is {len(draft.subject)} characters; "
                                   f"the limit is {MAX_SUBJECT_CHARS}")
        if not draft.body.strip():
            raise ValidationFailed(f"{prefix}body", "is empty; a template needs a body")
        for name, value in (("body", draft.body), ("text", draft.text or ""),
                            ("preheader", draft.preheader)):
            if len(value) > MAX_SOURCE_CHARS:
                raise ValidationFailed(f"{prefix}{name}", f"is {len(value)} characters; the "
                                       f"limit is {MAX_SOURCE_CHARS}")
        text_only = channel in TEXT_CHANNELS
        if text_only and (draft.preheader or draft.text):
            raise ValidationFailed(f"{prefix}preheader" if draft.preheader else f"{prefix}text",
                                   f"{channel} templates have a body only (no preheader or "
                                   "text part)")
        html = not text_only and (format == "mjml" or is_html(draft.body))
        label = prefix.rstrip(".") or "template"
        sources = [("subject", draft.subject, False), ("preheader", draft.preheader, False),
                   ("text", draft.text or "", False), ("body", draft.body, html)]
        for name, source, as_html in sources:
            if source:
                self.renderer.compile(source, name=f"{label}.{name}", html=as_html)
                check_includes_exist(referenced(source, self.renderer.environment(as_html),
                                                f"{prefix}{name}"), snippets, f"{prefix}{name}")
        if not html:
            return None
        layout = lay_out(draft.body, format=format, preheader=draft.preheader,
                         text=draft.text, is_html=True, field=f"{prefix}body")
        if layout is None:
            return None
        self.renderer.compile(layout.compiled, name=f"{label}.body", html=True)
        check_includes_exist(referenced(layout.compiled, self.renderer.environment(True),
                                        f"{prefix}body"), snippets, f"{prefix}body")
        if layout.text is not None:
            self.renderer.compile(layout.text, name=f"{label}.text", html=False)
        return layout.stored()

    def _check_purpose(self, conn: Connection, purpose: str) -> None:
        if purpose in BUILT_IN_PURPOSES:
            return
        topics = schema.topics
        found = conn.execute(sa.select(topics.c.key).where(topics.c.key == purpose)).first()
        if found is None:
            raise ValidationFailed("purpose", f"{purpose[:64]!r} is neither marketing, "
                                   "transactional nor a topic; create the topic first or use "
                                   "one of those")

    def _check_sender(self, conn: Connection, sender: str | None, channel: str) -> None:
        if sender is None:
            return
        if channel != "email":
            raise ValidationFailed("sender", f"sender identities are for email, not {channel}")
        s = schema.sender_identities
        if conn.execute(sa.select(s.c.key).where(s.c.key == sender)).first() is None:
            raise ValidationFailed("sender", f"{sender[:64]!r} is not a sender identity; save "
                                   "it first (cadenza senders save)")

    # --- reading ------------------------------------------------------------------------------

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

    def delete(self, key: str) -> None:
        """Delete template `key` (NotFound when there is none)."""
        t = schema.templates
        with self.store.begin() as conn:
            if not conn.execute(sa.delete(t).where(t.c.key == key)).rowcount:
                raise NotFound("template", key)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys among `keys` that name no template (for publish-time checks)."""
        wanted = sorted(set(keys))
        with self.store.read() as conn:
            found = load_templates(conn, wanted)
        return [k for k in wanted if k not in found]

    def preview(self, key: str, contact_id: int, entry: Mapping[str, Any] | None = None, *,
                locale: str | None = None) -> dict[str, Any]:
        """Render template `key` for one contact, as the dispatcher would; `locale` renders
        another translation than the contact's own."""
        _, _, content = self.render_as(self.get(key), contact_id, entry, locale=locale)
        return content

    def render_as(self, template: TemplateRecord, contact_id: int,
                  entry: Mapping[str, Any] | None = None, *, locale: str | None = None
                  ) -> tuple[TemplateRecord, Recipient, dict[str, Any]]:
        """`template` rendered for contact `contact_id` (in `locale` when given): the
        template, the contact as rendered for, and the content with the `locale` chosen."""
        contact = load_contact(self.store, contact_id)
        if locale is not None:
            if not LOCALE.match(locale):
                raise ValidationFailed("locale", f"{locale[:40]!r} is not a locale such as "
                                       "fr or fr-CA")
            contact = Recipient(contact.id, contact.email, contact.phone, contact.user_id,
                                contact.attributes, contact.timezone, locale)
        context = render_context(contact, entry, None, None)
        content = self.renderer.compose(template=template, params={}, text_fields=(),
                                        context=context, inline_name=template.key)
        content["locale"] = self.renderer.variant(template, contact.locale).locale
        return template, contact, content


def load_contact(store: Store, contact_id: int) -> Recipient:
    """One contact as the dispatcher sees it (NotFound when there is none)."""
    c = schema.contacts
    with store.read() as conn:
        row = conn.execute(sa.select(c.c.id, c.c.email, c.c.phone, c.c.user_id,
                                     c.c.attributes, c.c.timezone, c.c.locale)
                           .where(c.c.id == contact_id)).first()
    if row is None:
        raise NotFound("contact", contact_id)
    return Recipient(row[0], row[1], row[2], row[3], row[4] or {}, row[5], row[6])


def _locale_drafts(locales: Mapping[str, Mapping[str, Any]] | None,
                   default: Draft) -> dict[str, Draft]:
    """Each translation's sources, checked; a missing subject or preheader is its parent
    translation's or the default's."""
    if not locales:
        return {}
    if len(locales) > MAX_LOCALES:
        raise ValidationFailed("locales", f"has {len(locales)} entries; the limit is "
                               f"{MAX_LOCALES}")
    drafts: dict[str, Draft] = {}
    seen: set[str] = set()
    for name, fields in locales.items():
        where = f"locales.{name}"
        if not isinstance(name, str) or not LOCALE.match(name):
            raise ValidationFailed(where, "is not a locale such as fr or fr-CA")
        if name.lower() in seen:
            raise ValidationFailed(where, "is given twice (locales are case-insensitive)")
        seen.add(name.lower())
        if not isinstance(fields, Mapping):
            raise ValidationFailed(where, "must be an object with subject, preheader, body "
                                   "and text")
        unknown = set(fields) - {"subject", "preheader", "body", "text"}
        if unknown:
            raise ValidationFailed(f"{where}.{sorted(unknown)[0]}", "is not a field of a "
                                   "translation (subject, preheader, body, text)")
        for field_name, value in fields.items():
            if value is not None and not isinstance(value, str):
                raise ValidationFailed(f"{where}.{field_name}", "must be text")
        if not fields.get("body"):
            raise ValidationFailed(f"{where}.body", "is required: a translation has its own "
                                   "body")
    lowered = {name.lower(): fields for name, fields in locales.items()}
    for name, fields in locales.items():
        # A missing subject or preheader comes from the parent translation (fr for fr-CA)
        # if there is one, else from the default.
        parents = [lowered[p] for p in locale_chain(name)[1:] if p in lowered]

        def pick(field_name: str, fallback: str, own: Mapping[str, Any] = fields,
                 parents: list[Mapping[str, Any]] = parents) -> str:
            for source in (own, *parents):
                if source.get(field_name):
                    return str(source[field_name])
            return fallback

        drafts[name] = Draft(pick("subject", default.subject),
                             pick("preheader", default.preheader), str(fields["body"]),
                             fields.get("text") or None)
    return drafts


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
