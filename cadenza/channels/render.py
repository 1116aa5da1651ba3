"""Rendering in Jinja2's immutable sandbox, over an allow-listed context.

A template sees exactly these names: `contact` (email, phone, user_id, attributes, timezone,
locale), `entry` (the entry event or API payload), `journey` (its key), `step` (its id),
`links` (the message's signed URLs) and `unsubscribe_url`. Never settings, the environment
or Python objects: the context is plain data, the sandbox (`sandbox.py`) refuses dunder
attributes and mutating calls and keeps each message within a time and size budget, an
undefined name is an error that names it (StrictUndefined) rather than an empty string in a
customer's inbox.

How a stored template renders depends on its channel:

- email (and other channels with a subject and a body): the body is HTML when it is MJML or
  starts with `<`; values are escaped (autoescape). The HTML is the `compiled` source (layout,
  inlined CSS and the preheader were applied when it was saved), and the text part is the
  written `text` or the one generated at save time. Content keys: subject, preheader, body,
  html, text.
- sms: plain text, never HTML, no escaping.
- webhook: the body must render to JSON (put values with `| tojson`); content keys body (the
  JSON text) and json (the parsed value).

A contact's `locale` picks a translation: `fr-CA` tries `fr-CA`, then `fr`, then the default.
Snippets (`{% include "key" %}`) come from a `SnippetSource` (`snippets.py`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import orjson
from jinja2 import (
    BaseLoader,
    Environment,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import safe_range as _SAFE_RANGE

from cadenza.channels.errors import RenderFailed
from cadenza.channels.layout import split_compiled
from cadenza.channels.models import Recipient, TemplateRecord
from cadenza.channels.sandbox import Budget, RenderTimeout, Sandbox, TooBig

MAX_OUTPUT_CHARS = 512 * 1024
"""Characters one rendered field may have; more is an error, not a truncated message."""
RENDER_TIMEOUT_MS = 1000
"""How long one message may take to render (all its fields together)."""
CONTEXT_NAMES = ("contact", "entry", "journey", "step", "links", "unsubscribe_url")
_HINT = ("the context has contact, entry, journey, step, links and unsubscribe_url (contact "
         "attributes are under contact.attributes); write `| default('...')` for an optional "
         "value")


def is_html(source: str) -> bool:
    """True when a body's source is HTML (starts with '<' after white space)."""
    return source.lstrip().startswith("<")


def render_context(contact: Recipient, entry: Mapping[str, Any] | None, journey: str | None,
                   step: str | None, links: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The only values a template may read. `links` are the message's signed URLs
    (unsubscribe, preferences, ...); `unsubscribe_url` is always defined (empty when the
    dispatcher builds no links) so that a footer renders everywhere."""
    found = dict(links or {})
    return {"contact": contact.template_view(), "entry": dict(entry or {}),
            "journey": journey, "step": step, "links": found,
            "unsubscribe_url": found.get("unsubscribe", "")}


class SnippetSource(Protocol):
    """Where `{% include "key" %}` finds snippet sources."""

    generation: int
    """Changes whenever any snippet changed (compiled includes are then recompiled)."""

    def refresh_if_due(self) -> None:
        """Reload the snippets if they may have changed (cheap; called per message)."""
        ...

    def source(self, key: str, *, html: bool) -> str | None:
        """The snippet's source for an HTML or a text template; None when there is none."""
        ...


class _SnippetLoader(BaseLoader):
    def __init__(self, snippets: SnippetSource | None, html: bool) -> None:
        self.snippets = snippets
        self.html = html

    def get_source(self, environment: Environment,
                   template: str) -> tuple[str, str | None, Any]:
        found = None if self.snippets is None else self.snippets.source(template,
                                                                        html=self.html)
        if found is None or self.snippets is None:
            raise TemplateNotFound(template)
        snippets = self.snippets
        generation = snippets.generation
        return found, None, lambda: snippets.generation == generation


@dataclass(frozen=True)
class Variant:
    """The sources one contact's message renders from (a locale's, or the default)."""

    locale: str | None
    subject: str
    preheader: str
    body: str
    """The HTML (compiled) or text source of the body."""
    text: str | None
    """The text part's source, for HTML email."""
    html: bool


def locale_chain(locale: str | None) -> list[str]:
    """The locales to try, most specific first: 'fr_ca' -> ['fr-ca', 'fr']."""
    if not locale:
        return []
    tag = locale.strip().replace("_", "-").lower()
    parts = tag.split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1) if parts[0]]


class Renderer:
    """Compiles and renders template sources in the sandbox, with a compile cache."""

    def __init__(self, max_output_chars: int = MAX_OUTPUT_CHARS, cache_size: int = 512, *,
                 timeout_ms: int = RENDER_TIMEOUT_MS,
                 snippets: SnippetSource | None = None) -> None:
        if max_output_chars < 1:
            raise ValueError("the render output cap must be at least one character")
        if timeout_ms < 1:
            raise ValueError("the render time limit must be at least 1 ms")
        self.max_output_chars = max_output_chars
        self.timeout_ms = timeout_ms
        self.snippets = snippets
        self._budget = Budget(max_output_chars)
        self._envs = {flag: Sandbox(self._budget, autoescape=flag,
                                    loader=_SnippetLoader(snippets, flag))
                      for flag in (False, True)}
        self._cache: dict[tuple[bool, str], Template] = {}
        self._cache_size = cache_size
        self._splits: dict[str, tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    # --- compiling ----------------------------------------------------------------------------

    def compile(self, source: str, *, name: str, html: bool = False) -> Template:
        """The compiled template; RenderFailed naming `name` and the line on a syntax error."""
        key = (html, source)
        cached = self._cache.get(key)  # a dict read is atomic; the lock guards the writes
        if cached is not None:
            return cached
        try:
            compiled = self._envs[html].from_string(source)
        except TemplateSyntaxError as exc:
            raise RenderFailed(name, f"line {exc.lineno}: {exc.message}") from None
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:  # oldest first
                del self._cache[next(iter(self._cache))]
        return compiled

    def environment(self, html: bool) -> Environment:
        """The sandbox for HTML (autoescaped) or text sources (for parsing at save time)."""
        return self._envs[html]

    # --- rendering ----------------------------------------------------------------------------

    def render(self, source: str, context: Mapping[str, Any], *, name: str,
               html: bool = False) -> str:
        """Render `source` over `context` (only CONTEXT_NAMES are passed through)."""
        with self._budgeted():
            return self._render(source, _allowed(context), name=name, html=html)

    @contextmanager
    def _budgeted(self) -> Iterator[None]:
        budget = self._budget
        if budget.deadline != math.inf:  # inside compose: the message's budget applies
            yield
            return
        if self.snippets is not None:
            self.snippets.refresh_if_due()
        budget.deadline = time.monotonic() + self.timeout_ms / 1000
        try:
            yield
        finally:
            budget.deadline = math.inf

    def _render(self, source: str, allowed: dict[str, Any], *, name: str,
                html: bool) -> str:
        template = self.compile(source, name=name, html=html)
        budget = self._budget
        cap = self.max_output_chars
        parts: list[str] = []
        size = 0
        try:
            # Output is taken 64 chunks at a time: the size is checked and the deadline (loops
            # and calls check it too) after each group.
            # `allowed` already holds the sandbox's globals (see `_allowed`): a shared context
            # skips Jinja's per-render merge of the globals.
            chunks = template.root_render_func(template.new_context(allowed, shared=True))
            while group := list(islice(chunks, 64)):
                size += sum(map(len, group))
                if size > cap:
                    raise RenderFailed(name, f"output is over {cap} characters; shorten the "
                                       "template or its loops")
                budget.tick()
                parts += group
        except RenderFailed:
            raise
        except RenderTimeout:
            raise RenderFailed(name, f"took longer than {self.timeout_ms} ms to render; "
                               "shorten its loops") from None
        except TooBig as exc:
            raise RenderFailed(name, f"{exc}; shorten the template") from None
        except TemplateNotFound as exc:
            raise RenderFailed(name, f"includes snippet {exc.name!r}, which does not exist; "
                               "save it first (cadenza snippets save)") from None
        except UndefinedError as exc:
            raise RenderFailed(name, f"{exc.message}; {_HINT}") from None
        except SecurityError as exc:
            raise RenderFailed(name, f"not allowed in a template: {exc}") from None
        except RecursionError:
            raise RenderFailed(name, "is nested too deeply (a macro or snippet that calls "
                               "itself?)") from None
        except Exception as exc:  # a template is code: any error it raises is its author's
            raise RenderFailed(name, f"{type(exc).__name__}: {exc}") from None
        return "".join(parts)

    # --- messages -----------------------------------------------------------------------------

    def variant(self, template: TemplateRecord, locale: str | None) -> Variant:
        """The sources for a contact with `locale`: the best translation, else the default."""
        chosen: Mapping[str, Any] | None = None
        picked = None
        locales = template.locales or {}
        if locales:
            lowered = {str(k).lower(): k for k in locales}
            for candidate in locale_chain(locale):
                if candidate in lowered:
                    picked = lowered[candidate]
                    chosen = locales[picked]
                    break
        if chosen is None:
            return self._variant(None, template.channel, template.format, template.subject,
                                 template.preheader, template.body, template.text,
                                 template.compiled)
        return self._variant(
            str(picked), template.channel, template.format,
            str(chosen.get("subject", template.subject)),
            str(chosen.get("preheader", template.preheader)),
            str(chosen.get("body", template.body)), chosen.get("text"),
            chosen.get("compiled"))

    def _variant(self, locale: str | None, channel: str, format: str, subject: str,
                 preheader: str, body: str, text: str | None,
                 compiled: str | None) -> Variant:
        if channel in ("sms", "webhook"):
            return Variant(locale, subject, preheader, body, None, False)
        html = format == "mjml" or is_html(body)
        if not html:
            return Variant(locale, subject, preheader, body, text, False)
        source, generated = self._split(compiled) if compiled else (body, None)
        return Variant(locale, subject, preheader, source, text or generated, True)

    def _split(self, compiled: str) -> tuple[str, str | None]:
        found = self._splits.get(compiled)
        if found is None:
            found = split_compiled(compiled)
            with self._lock:
                if len(self._splits) > 256:
                    self._splits.clear()
                self._splits[compiled] = found
        return found

    def compose(self, *, template: TemplateRecord | None, params: Mapping[str, Any],
                text_fields: Iterable[str], context: Mapping[str, Any],
                inline_name: str) -> dict[str, Any]:
        """A message's rendered content: the template's fields when there is one, then
        each of the channel's text fields given inline in `params`."""
        allowed = _allowed(context)
        content: dict[str, Any] = {}
        with self._budgeted():
            if template is not None:
                contact = allowed.get("contact") or {}
                locale = contact.get("locale") if isinstance(contact, Mapping) else None
                self._compose_template(template, self.variant(template, locale), allowed,
                                       content)
            for name in text_fields:
                source = params.get(name)
                if name in content or not isinstance(source, str):
                    continue
                html = name == "body" and is_html(source)
                text = self._render(source, allowed, name=f"{inline_name}.{name}", html=html)
                content[name] = text if name == "body" else one_line(text)
                if name == "body":
                    content["html"] = html
        return content

    def _compose_template(self, template: TemplateRecord, variant: Variant,
                          allowed: dict[str, Any], content: dict[str, Any]) -> None:
        key = template.key if variant.locale is None else f"{template.key}[{variant.locale}]"
        if variant.subject:
            content["subject"] = one_line(self._render(variant.subject, allowed,
                                                       name=f"{key}.subject", html=False))
        if variant.preheader and variant.html:
            content["preheader"] = one_line(self._render(variant.preheader, allowed,
                                                         name=f"{key}.preheader", html=False))
        content["body"] = body = self._render(variant.body, allowed, name=key,
                                              html=variant.html)
        content["html"] = variant.html
        if variant.html and variant.text is not None:
            content["text"] = self._render(variant.text, allowed, name=f"{key}.text",
                                           html=False)
        if template.channel == "webhook":
            content["json"] = parse_json_body(body, key)


def parse_json_body(body: str, name: str) -> Any:
    """The parsed JSON of a rendered webhook body; RenderFailed when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RenderFailed(name, f"the body is not JSON after rendering ({exc}); write "
                           "values with `| tojson`, e.g. {\"email\": {{ contact.email | "
                           "tojson }}}") from None


def _allowed(context: Mapping[str, Any]) -> dict[str, Any]:
    """The allow-listed names of `context`, with the sandbox's globals (`Sandbox` keeps only
    these two)."""
    scope = {k: context[k] for k in CONTEXT_NAMES if k in context}
    scope["range"] = _SAFE_RANGE
    scope["dict"] = dict
    return scope


def one_line(text: str) -> str:
    """Headers and titles are one line: line breaks a template produced become spaces."""
    return " ".join(text.split())


_one_line = one_line
