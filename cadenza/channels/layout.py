"""Email layout at save time: MJML to HTML, CSS inlined, the preheader, the text part.

All of it runs when a template is saved, never per message: the result is still a Jinja2
source that the renderer compiles once and renders cheaply for every contact.

Jinja tags must survive tools that parse HTML (MJML, the CSS inliner's HTML5 parser, the
HTML-to-text converter), and those tools move or escape what they do not understand: an
HTML5 parser moves text found between `<table>` and `<tr>` out of the table, which would
tear a `{% for %}` away from the row it repeats. So every Jinja tag is swapped for a
placeholder before the tools run and swapped back after:

- outside markup, an HTML comment `<!--cadenzajinja7x-->` (parsers keep comments where they
  are, even inside tables);
- inside a tag (an attribute such as `href="{{ links.unsubscribe }}"`) or inside
  `<title>`, `<style>`, `<script>` and `<textarea>`, a bare word `cadenzajinja7x`;
- for the text part, bare words everywhere (the text converter drops comments).

A placeholder the tools dropped is an error naming the tag, so a layout never silently loses
a loop or a link.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import css_inline
import lxml.etree  # type: ignore[import-untyped]
import lxml.html  # type: ignore[import-untyped]
import mjml
from inscriptis import Inscriptis
from inscriptis.model.config import ParserConfig

from cadenza.errors import ValidationFailed

FORMATS = ("jinja", "mjml")
TEXT_SEPARATOR = "\x1e"
"""Separates the compiled HTML from the generated text part in `templates.compiled`."""

_JINJA = re.compile(
    r"""\{\{(?:[^}'"]|'[^']*'|"[^"]*"|\}(?!\}))*\}\}"""
    r"""|\{%(?:[^%'"]|'[^']*'|"[^"]*"|%(?!\}))*%\}"""
    r"""|\{\#.*?\#\}""",
    re.DOTALL,
)
_PLACEHOLDER = re.compile(r"<!--cadenzajinja(\d+)x-->|cadenzajinja(\d+)x")
_RAW_TEXT = ("title", "style", "script", "textarea", "mj-title", "mj-preview", "mj-style")
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_PREHEADER_STYLE = ("display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0;"
                    "max-width:0;opacity:0;overflow:hidden;mso-hide:all;")
_INLINER = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False,
                                 keep_link_tags=True)
_TEXT_CONFIG = ParserConfig(display_links=True)


@dataclass(frozen=True)
class Protected:
    """A source with its Jinja tags swapped for placeholders."""

    text: str
    tags: list[str]

    def restore(self, produced: str, field: str, *, strict: bool = True) -> str:
        """`produced` with the placeholders swapped back; ValidationFailed when a tag was
        dropped (unless not `strict`: the text part leaves out what the head held) or a
        block tag copied (a copy would unbalance it)."""
        seen = [0] * len(self.tags)

        def back(match: re.Match[str]) -> str:
            index = int(match.group(1) or match.group(2))
            if index >= len(self.tags):
                return match.group(0)
            seen[index] += 1
            return self.tags[index]

        restored = _PLACEHOLDER.sub(back, produced)
        for index, count in enumerate(seen):
            tag = self.tags[index]
            if count == 0 and strict and not tag.startswith("{#"):
                raise ValidationFailed(field, f"the layout dropped {_short(tag)}; put "
                                       "template tags inside <mj-text> or <mj-raw> (MJML) or "
                                       "inside elements, not between table rows' attributes")
            if count > 1 and tag.startswith("{%"):
                raise ValidationFailed(field, f"the layout copied {_short(tag)}; move it "
                                       "inside <mj-raw> so it stays in one place")
        return restored


def _short(tag: str) -> str:
    flat = " ".join(tag.split())
    return flat if len(flat) <= 60 else flat[:57] + "..."


def protect(source: str, *, comments: bool = True) -> Protected:
    """`source` with every Jinja tag swapped for a placeholder (see the module docstring)."""
    if "cadenzajinja" in source:
        raise ValidationFailed("body", "contains the reserved word 'cadenzajinja'")
    tags: list[str] = []
    out: list[str] = []
    scanner = _MarkupState()
    position = 0
    for match in _JINJA.finditer(source):
        between = source[position:match.start()]
        scanner.feed(between)
        out.append(between)
        tag = match.group(0)
        index = len(tags)
        tags.append(tag)
        word = f"cadenzajinja{index}x"
        out.append(f"<!--{word}-->" if comments and scanner.outside else word)
        position = match.end()
    out.append(source[position:])
    return Protected("".join(out), tags)


class _MarkupState:
    """Tracks, across chunks of HTML, whether the end of the text so far is inside a tag or
    inside a raw-text element (title, style, script, textarea)."""

    _TOKEN = re.compile(r"<!--.*?(?:-->|$)|<(/?)([a-zA-Z][\w:-]*)|>|\"|'", re.DOTALL)

    def __init__(self) -> None:
        self.in_tag = False
        self.quote = ""
        self.tag = ""
        self.closing = False
        self.raw = ""

    @property
    def outside(self) -> bool:
        """True when a comment placed here would be markup (not attribute or raw text)."""
        return not self.in_tag and not self.raw

    def feed(self, chunk: str) -> None:
        """Advance over `chunk`."""
        for token in self._TOKEN.finditer(chunk):
            text = token.group(0)
            if self.quote:
                if text == self.quote:
                    self.quote = ""
                continue
            if self.in_tag:
                if text in ('"', "'"):
                    self.quote = text
                elif text == ">":
                    self.in_tag = False
                    if not self.closing and self.tag in _RAW_TEXT:
                        self.raw = self.tag
                continue
            if text.startswith("<!--") or text in ('"', "'", ">"):
                continue
            name = (token.group(2) or "").lower()
            if self.raw and not (token.group(1) and name == self.raw):
                continue
            if self.raw:
                self.raw = ""
            self.in_tag, self.tag, self.closing = True, name, bool(token.group(1))


def _refuse_includes(path: str) -> str:
    raise ValueError(f"mj-include ({path}) is not supported; use a snippet with "
                     "{% include \"key\" %} instead")


def compile_mjml(source: str, field: str = "body") -> str:
    """MJML to HTML (Jinja tags kept); ValidationFailed naming the MJML error."""
    protected = protect(source)
    try:
        produced = mjml.mjml2html(protected.text, include_loader=_refuse_includes)
    except Exception as exc:  # mrml raises plain exceptions with a position
        raise ValidationFailed(field, f"is not valid MJML: {exc}") from None
    return protected.restore(produced, field)


def inline_css(source: str, field: str = "body") -> str:
    """The HTML with its <style> rules inlined into style attributes (style tags are kept
    for media queries; remote stylesheets are never fetched)."""
    protected = protect(source)
    try:
        produced = _INLINER.inline(protected.text)
    except Exception as exc:  # css_inline.InlineError and parser errors
        raise ValidationFailed(field, f"its CSS cannot be inlined: {exc}") from None
    return protected.restore(produced, field)


def add_preheader(source: str, preheader: str) -> str:
    """The HTML with the preheader as a hidden preview div at the start of <body> (the
    preheader's literal text is escaped, its Jinja tags are kept)."""
    if not preheader.strip():
        return source
    protected = protect(preheader, comments=False)
    escaped = protected.restore(html.escape(protected.text, quote=False), "preheader")
    div = f'<div style="{_PREHEADER_STYLE}">{escaped}</div>'
    found = _BODY_OPEN.search(source)
    if found is None:
        return div + source
    return source[:found.end()] + div + source[found.end():]


def html_to_text(source: str, field: str = "text") -> str:
    """A text-part Jinja source derived from an HTML Jinja source: links keep their URL
    visible, tags keep their place in the flow of the text (a loop over table rows becomes
    a loop over lines)."""
    protected = protect(source)
    try:
        tree = lxml.html.document_fromstring(protected.text)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise ValidationFailed(field, f"the HTML cannot be read: {exc}") from None
    for comment in list(tree.iter(lxml.etree.Comment)):
        found = _PLACEHOLDER.fullmatch(f"<!--{comment.text}-->")
        if found is not None:
            _comment_to_text(comment, comment.text or "")
    produced = Inscriptis(tree, _TEXT_CONFIG).get_text()
    lines = [_loop_per_line(line.strip(), protected) for line in produced.splitlines()]
    collapsed = re.sub(r"\n{3,}", "\n\n", "\n".join(lines).strip())
    return protected.restore(collapsed + "\n", field, strict=False)


_TABLE_PARTS = {"table", "tbody", "thead", "tfoot", "tr"}


def _comment_to_text(comment: Any, word: str) -> None:
    """Replace a placeholder comment by its word as text. Text directly inside a table
    (between rows) would be moved out of the table by the converter, so there the word goes
    to the start of the next row's first cell, or the end of the previous row's last cell."""
    parent = comment.getparent()
    tail = comment.tail or ""
    comment.tail = None
    if parent.tag in _TABLE_PARTS:
        following = comment.getnext()
        cells = list(following.iter("td", "th")) if following is not None else []
        if cells:
            cells[0].text = word + (cells[0].text or "")
        else:
            previous = comment.getprevious()
            before = list(previous.iter("td", "th")) if previous is not None else []
            if before:
                _append_text(before[-1], word)
        parent.remove(comment)
        return
    previous = comment.getprevious()
    if previous is not None:
        previous.tail = (previous.tail or "") + word + tail
    else:
        parent.text = (parent.text or "") + word + tail
    parent.remove(comment)


def _append_text(element: Any, word: str) -> None:
    children = list(element)
    if children:
        children[-1].tail = (children[-1].tail or "") + word
    else:
        element.text = (element.text or "") + word


_END_TAG = re.compile(r"cadenzajinja(\d+)x$")


def _loop_per_line(line: str, protected: Protected) -> str:
    """A line that ends a block (`{% endfor %}`) after some text gets a line break before
    the end tag, so that each iteration of a loop is a line of its own."""
    found = _END_TAG.search(line)
    if found is None or found.start() == 0:
        return line
    index = int(found.group(1))
    if index < len(protected.tags) and protected.tags[index].lstrip("{%- ").startswith("end"):
        return line[:found.start()].rstrip() + "\n" + line[found.start():]
    return line


@dataclass(frozen=True)
class Layout:
    """What saving an email body produces."""

    compiled: str
    """The HTML source after layout, inlining and the preheader (a Jinja source)."""
    text: str | None
    """The generated text part (a Jinja source), None when the template has its own."""

    def stored(self) -> str:
        """The value of `templates.compiled`: HTML, then the generated text if any."""
        if self.text is None:
            return self.compiled
        return self.compiled + TEXT_SEPARATOR + self.text


def split_compiled(stored: str) -> tuple[str, str | None]:
    """`templates.compiled` back into (HTML source, generated text source or None)."""
    html_part, sep, text = stored.partition(TEXT_SEPARATOR)
    return html_part, (text if sep else None)


def lay_out(body: str, *, format: str, preheader: str, text: str | None,
            is_html: bool, field: str = "body") -> Layout | None:
    """The layout of an email body, or None when it is plain text with nothing to do."""
    if TEXT_SEPARATOR in body or (text and TEXT_SEPARATOR in text):
        raise ValidationFailed(field, "contains the control character U+001E; remove it")
    if format == "mjml":
        source = compile_mjml(body, field)
    elif is_html:
        source = body
    else:
        return None
    if format == "mjml" or "<style" in source.lower():
        source = inline_css(source, field)
    generated = None if text else html_to_text(source, f"{field}.text")
    return Layout(add_preheader(source, preheader), generated)
