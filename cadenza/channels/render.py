"""Rendering in Jinja2's immutable sandbox, over an allow-listed context.

A template sees exactly four names: `contact` (email, phone, user_id, attributes, timezone,
locale), `entry` (the entry event or API payload), `journey` (its key) and `step` (its id).
Never settings, the environment or Python objects: the context is plain data, the sandbox
refuses dunder attributes and mutating calls, an undefined name is an error that names it
(StrictUndefined) rather than an empty string in a customer's inbox, and output is capped.

A body whose source starts with `<` is HTML: values are escaped (autoescape) and email
sends it as text/html. Subjects and other fields are plain text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cadenza.channels.errors import RenderFailed
from cadenza.channels.models import Recipient, TemplateRecord

MAX_OUTPUT_CHARS = 512 * 1024
"""Characters one rendered field may have; more is an error, not a truncated message."""
CONTEXT_NAMES = ("contact", "entry", "journey", "step", "links", "unsubscribe_url")
_HINT = ("the context has contact, entry, journey, step, links and unsubscribe_url (contact "
         "attributes are under contact.attributes); write `| default('...')` for an optional "
         "value")


def _none_as_empty(value: Any) -> Any:
    return "" if value is None else value


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=autoescape,
                                         keep_trailing_newline=True, finalize=_none_as_empty)


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


class Renderer:
    """Compiles and renders template sources in the sandbox, with a small compile cache."""

    def __init__(self, max_output_chars: int = MAX_OUTPUT_CHARS, cache_size: int = 512) -> None:
        if max_output_chars < 1:
            raise ValueError("the render output cap must be at least one character")
        self.max_output_chars = max_output_chars
        self._envs = {False: _environment(False), True: _environment(True)}
        self._cache: OrderedDict[tuple[bool, str], Template] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile(self, source: str, *, name: str, html: bool = False) -> Template:
        """The compiled template; RenderFailed naming `name` and the line on a syntax error."""
        key = (html, source)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        try:
            compiled = self._envs[html].from_string(source)
        except TemplateSyntaxError as exc:
            raise RenderFailed(name, f"line {exc.lineno}: {exc.message}") from None
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def render(self, source: str, context: Mapping[str, Any], *, name: str,
               html: bool = False) -> str:
        """Render `source` over `context` (only CONTEXT_NAMES are passed through)."""
        template = self.compile(source, name=name, html=html)
        allowed = {k: context[k] for k in CONTEXT_NAMES if k in context}
        parts: list[str] = []
        size = 0
        try:
            for chunk in template.generate(allowed):
                size += len(chunk)
                if size > self.max_output_chars:
                    raise RenderFailed(name, f"output is over {self.max_output_chars} "
                                       "characters; shorten the template or its loops")
                parts.append(chunk)
        except RenderFailed:
            raise
        except UndefinedError as exc:
            raise RenderFailed(name, f"{exc.message}; {_HINT}") from None
        except SecurityError as exc:
            raise RenderFailed(name, f"not allowed in a template: {exc}") from None
        except Exception as exc:  # a template is code: any error it raises is its author's
            raise RenderFailed(name, f"{type(exc).__name__}: {exc}") from None
        return "".join(parts)

    def compose(self, *, template: TemplateRecord | None, params: Mapping[str, Any],
                text_fields: Iterable[str], context: Mapping[str, Any],
                inline_name: str) -> dict[str, Any]:
        """A message's rendered content: the template's subject and body when there is one,
        then each of the channel's text fields given inline in `params`."""
        content: dict[str, Any] = {}
        if template is not None:
            html = is_html(template.body)
            if template.subject:
                content["subject"] = _one_line(self.render(
                    template.subject, context, name=f"{template.key}.subject"))
            content["body"] = self.render(template.body, context, name=template.key,
                                          html=html)
            content["html"] = html
        for name in text_fields:
            source = params.get(name)
            if name in content or not isinstance(source, str):
                continue
            html = name == "body" and is_html(source)
            text = self.render(source, context, name=f"{inline_name}.{name}", html=html)
            content[name] = text if name == "body" else _one_line(text)
            if name == "body":
                content["html"] = html
        return content


def _one_line(text: str) -> str:
    """Headers and titles are one line: line breaks a template produced become spaces."""
    return " ".join(text.split())
