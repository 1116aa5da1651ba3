"""Publish-time template validation: every message a journey can send renders for a sample
of real contacts, or the publish fails naming the step, the template, the contact and the
error.

The sample is the most recently updated contacts (`publish_sample_contacts` of them). When a
journey is entered by an event, the most recent real events of that name come first, each
rendered as its own contact with its properties as `entry`, because that is exactly what a
send will see. Other entries (an API call, a date, a schedule, a segment) have payloads
this check cannot know: for those contacts `entry` accepts any key (an unknown one renders
empty), so only the contact's own data is checked strictly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.endpoints import load_endpoints
from cadenza.channels.errors import RenderFailed
from cadenza.channels.models import Recipient, TemplateRecord
from cadenza.channels.render import Renderer, render_context
from cadenza.channels.snippets import SnippetCache
from cadenza.channels.templates import load_templates
from cadenza.journeys import EventTrigger, JourneyInvalid, JourneySpec, Problem, unreachable
from cadenza.journeys.spec import SendStep
from cadenza.store import Store, schema

INLINE_FIELDS = ("subject", "body", "title")
"""Step parameters rendered as templates when given inline (the channels' text fields)."""
SAMPLE_LINKS = {"unsubscribe": "https://example.invalid/u/sample",
                "one_click": "https://example.invalid/u/sample/one-click",
                "preferences": "https://example.invalid/p/sample"}


class AnyEntry(dict[str, Any]):
    """An entry payload this check cannot know: any key is present, renders empty, counts
    as zero in arithmetic and formats, and is less than nothing and more than nothing."""

    def __missing__(self, key: str) -> AnyEntry:
        return AnyEntry()

    def __str__(self) -> str:
        return ""

    def __html__(self) -> str:
        return ""

    def __format__(self, spec: str) -> str:
        return ""

    def __float__(self) -> float:
        return 0.0

    def __int__(self) -> int:
        return 0

    def __round__(self, ndigits: int | None = None) -> int:
        return 0

    def _any(self, *other: Any) -> AnyEntry:
        return AnyEntry()

    def _no(self, other: Any) -> bool:
        return False

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _any
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __neg__ = __pos__ = _any
    __lt__ = __le__ = __gt__ = __ge__ = _no
    __hash__ = None


@dataclass(frozen=True)
class Sample:
    """One contact to render for, with the entry it would carry."""

    contact: Recipient
    entry: Mapping[str, Any]
    source: str
    """'event <id>' or 'contact' (for the error message)."""


@dataclass(frozen=True)
class _Send:
    step: str
    channel: str
    template: str | None
    params: Mapping[str, Any]


def check_publish(conn: Connection, store: Store, spec: JourneySpec, sample_size: int,
                  renderer: Renderer | None = None) -> None:
    """Raise JourneyInvalid when a reachable send of `spec` does not render for a sampled
    contact (one problem per step, the first contact it fails for)."""
    sends = _sends(spec)
    _check_endpoints(conn, spec, sends)
    if sample_size <= 0 or not sends:
        return
    samples = sample_contacts(conn, spec, sample_size)
    if not samples:
        return
    renderer = renderer or Renderer(snippets=SnippetCache(store))
    templates = load_templates(conn, {s.template for s in sends if s.template})
    problems: list[Problem] = []
    for send in sends:
        template = templates.get(send.template) if send.template else None
        if send.template and template is None:
            continue  # the journey check reports a missing template already
        failure = _first_failure(renderer, spec, send, template, samples)
        if failure is not None:
            problems.append(failure)
    if problems:
        raise JourneyInvalid(spec.key, problems)


def _check_endpoints(conn: Connection, spec: JourneySpec, sends: Sequence[_Send]) -> None:
    """Webhook steps that name a saved endpoint name one that exists."""
    named = {s.step: s.params["endpoint"] for s in sends
             if s.channel == "webhook" and isinstance(s.params.get("endpoint"), str)}
    found = load_endpoints(conn, set(named.values())) if named else {}
    problems = [Problem(step, "params.endpoint", f"{key!r} names no saved webhook endpoint; "
                        f"save it first (cadenza webhooks add {key} URL)")
                for step, key in sorted(named.items()) if key not in found]
    if problems:
        raise JourneyInvalid(spec.key, problems)


def _sends(spec: JourneySpec) -> list[_Send]:
    skipped = set(unreachable(spec.steps))
    found: list[_Send] = []
    for step in spec.steps.values():
        if step.id in skipped:
            continue
        if isinstance(step, SendStep):
            found.append(_Send(step.id, step.channel, step.template, dict(step.params)))
    return found


def _first_failure(renderer: Renderer, spec: JourneySpec, send: _Send,
                   template: TemplateRecord | None, samples: Sequence[Sample]
                   ) -> Problem | None:
    inline = [name for name in INLINE_FIELDS if isinstance(send.params.get(name), str)]
    if template is None and not inline:
        return None
    for sample in samples:
        context = render_context(sample.contact, None, spec.key, send.step, SAMPLE_LINKS)
        context["entry"] = sample.entry
        try:
            renderer.compose(template=template, params=send.params, text_fields=inline,
                             context=context, inline_name=f"{spec.key}.{send.step}")
        except RenderFailed as exc:
            what = f"template {template.key!r}" if template is not None else "the step's text"
            return Problem(send.step, "template" if template is not None else "params",
                           f"{what} does not render for contact {sample.contact.id} "
                           f"({sample.source}): {exc.message}")
    return None


def sample_contacts(conn: Connection, spec: JourneySpec, size: int) -> list[Sample]:
    """Recent real events of the journey's entry events (as contact + entry), then the most
    recently updated contacts, `size` in all at most."""
    names = sorted({t.event for t in spec.triggers if isinstance(t, EventTrigger)})
    e = schema.events
    samples: list[Sample] = []
    picked: list[tuple[int, Mapping[str, Any], str]] = []
    if names:
        for event_id, contact_id, properties in conn.execute(
                sa.select(e.c.id, e.c.contact_id, e.c.properties)
                .where(e.c.name.in_(names)).order_by(e.c.timestamp.desc()).limit(size)).all():
            picked.append((int(contact_id), dict(properties or {}), f"event {event_id}"))
    if len(picked) < size and not (names and picked):
        c = schema.contacts
        for (contact_id,) in conn.execute(
                sa.select(c.c.id).where(c.c.merged_into.is_(None))
                .order_by(c.c.updated_at.desc(), c.c.id.desc()).limit(size - len(picked))):
            picked.append((int(contact_id), AnyEntry(), "contact"))
    contacts = _load(conn, {p[0] for p in picked})
    for contact_id, entry, source in picked:
        contact = contacts.get(contact_id)
        if contact is not None:
            samples.append(Sample(contact, entry, source))
    return samples


def _load(conn: Connection, ids: set[int]) -> dict[int, Recipient]:
    if not ids:
        return {}
    c = schema.contacts
    rows = conn.execute(sa.select(c.c.id, c.c.email, c.c.phone, c.c.user_id, c.c.attributes,
                                  c.c.timezone, c.c.locale)
                        .where(c.c.id.in_(sorted(ids)))).all()
    return {int(r[0]): Recipient(int(r[0]), r[1], r[2], r[3], r[4] or {}, r[5], r[6])
            for r in rows}
