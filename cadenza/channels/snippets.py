"""Snippets: shared partials (`{% include "footer" %}`) stored in `template_snippets`.

`SnippetCache` holds every snippet in memory (they are few and small) and is what the
renderer's Jinja loader reads, so no message ever queries for a snippet. It reloads when it
is told a snippet changed (saves through this process's `SnippetService`) and otherwise
checks at most once per `check_interval_s` whether another process changed one (one cheap
aggregate query: count, max id sum and max updated_at).

An HTML snippet included from a text source (a text part, an SMS) is served as text: the
cache converts it once when it loads, as the text part of an HTML template is.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from jinja2 import Environment, meta, nodes
from jinja2.exceptions import TemplateSyntaxError

from cadenza.channels.errors import RenderFailed
from cadenza.channels.layout import html_to_text
from cadenza.clock import Clock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.store import Store, dialect_insert, schema

MAX_SNIPPET_CHARS = 64 * 1024
_s = schema.template_snippets
_KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class Snippet:
    """A stored snippet."""

    key: str
    body: str
    created_at: int
    updated_at: int

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"key": self.key, "body": self.body, "created_at": self.created_at,
                "updated_at": self.updated_at}


class SnippetCache:
    """Every snippet, in memory, for the renderer's loader (see the module docstring)."""

    def __init__(self, store: Store, check_interval_s: float = 1.0) -> None:
        self.store = store
        self.check_interval_s = check_interval_s
        self.generation = 0
        self._html: dict[str, str] = {}
        self._text: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = -float("inf")
        self._lock = threading.Lock()

    def refresh_if_due(self) -> None:
        """Check for changes when the interval has passed since the last check."""
        if time.monotonic() - self._checked < self.check_interval_s:
            return
        self.refresh()

    def expire(self) -> None:
        """Make the next render check for changes (e.g. at the start of a dispatch batch)."""
        self._checked = -float("inf")

    def refresh(self, *, force: bool = False) -> None:
        """Reload when the table changed (or always, with `force`)."""
        with self._lock:
            self._checked = time.monotonic()
            with self.store.read() as conn:
                row = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(
                    sa.func.sum(_s.c.id), 0), sa.func.coalesce(sa.func.max(_s.c.updated_at),
                                                              0))).one()
                stamp = (int(row[0]), int(row[1]), int(row[2]))
                if stamp == self._stamp and not force:
                    return
                rows = conn.execute(sa.select(_s.c.key, _s.c.body)).all()
            self._html = {str(row[0]): str(row[1]) for row in rows}
            self._text = {}
            self._stamp = stamp
            self.generation += 1

    def source(self, key: str, *, html: bool) -> str | None:
        """The snippet's source as HTML/text written, or converted to text for text use."""
        body = self._html.get(key)
        if body is None or html or not body.lstrip().startswith("<"):
            return body
        text = self._text.get(key)
        if text is None:
            try:
                text = html_to_text(body, f"snippets.{key}")
            except ValidationFailed:
                text = body
            self._text[key] = text
        return text

    def keys(self) -> set[str]:
        """Keys of the snippets loaded."""
        return set(self._html)


def referenced(source: str, parse: Environment, field: str) -> set[str]:
    """The snippet keys `source` includes, imports or extends; ValidationFailed for an
    include whose name is not a literal string (it could not be checked)."""
    try:
        tree: nodes.Template = parse.parse(source)
    except TemplateSyntaxError as exc:
        raise RenderFailed(field, f"line {exc.lineno}: {exc.message}") from None
    found: set[str] = set()
    for name in meta.find_referenced_templates(tree):
        if name is None:
            raise ValidationFailed(field, "includes a snippet by a computed name; write its "
                                   "key in quotes: {% include \"footer\" %}")
        found.add(name)
    return found


class SnippetService:
    """Save, read, list and delete snippets; checks includes and cycles when saving."""

    def __init__(self, store: Store, clock: Clock, cache: SnippetCache,
                 parse: Environment) -> None:
        self.store = store
        self.clock = clock
        self.cache = cache
        self._parse = parse

    def save(self, key: str, body: str) -> tuple[Snippet, bool]:
        """Create or replace snippet `key`; refused when it includes a snippet that does not
        exist or includes itself (directly or through others)."""
        if not _KEY.match(key):
            raise ValidationFailed("key", f"{key[:140]!r} must be a lower-case slug of at most "
                                   "128 characters: letters, digits, '-', '_' and '.'")
        if not body.strip():
            raise ValidationFailed("body", "is empty; a snippet needs a body")
        if len(body) > MAX_SNIPPET_CHARS:
            raise ValidationFailed("body", f"is {len(body)} characters; the limit is "
                                   f"{MAX_SNIPPET_CHARS}")
        includes = referenced(body, self._parse, f"snippets.{key}")
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            graph = _graph(conn.execute(sa.select(_s.c.key, _s.c.body)).all(), self._parse)
            graph[key] = includes
            check_includes_exist(includes, set(graph), f"snippets.{key}")
            _check_no_cycle(key, graph)
            existed = conn.execute(sa.select(_s.c.created_at).where(_s.c.key == key)).first()
            insert = dialect_insert(conn, _s)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["key"],
                set_={"body": insert.excluded.body, "updated_at": insert.excluded.updated_at},
            ), {"key": key, "body": body, "created_at": now, "updated_at": now})
        self.cache.refresh(force=True)
        created_at = now if existed is None else int(existed[0])
        return Snippet(key, body, created_at, now), existed is None

    def get(self, key: str) -> Snippet:
        """Snippet `key` (NotFound when there is none)."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(_s.c.key, _s.c.body, _s.c.created_at,
                                         _s.c.updated_at).where(_s.c.key == key)).first()
        if row is None:
            raise NotFound("snippet", key)
        return Snippet(row[0], row[1], int(row[2]), int(row[3]))

    def all(self) -> list[Snippet]:
        """Every snippet, by key."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(_s.c.key, _s.c.body, _s.c.created_at,
                                          _s.c.updated_at).order_by(_s.c.key)).all()
        return [Snippet(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def delete(self, key: str) -> None:
        """Delete snippet `key`; refused (Conflict) while a template or snippet includes it."""
        t = schema.templates
        with self.store.begin() as conn:
            users = [k for k, includes in _graph(
                conn.execute(sa.select(_s.c.key, _s.c.body)).all(), self._parse).items()
                if key in includes and k != key]
            for tkey, *sources in conn.execute(
                    sa.select(t.c.key, t.c.body, t.c.subject, t.c.preheader, t.c.text)).all():
                if any(key in _graph([(tkey, s)], self._parse)[tkey] for s in sources if s):
                    users.append(f"template {tkey}")
            if users:
                raise Conflict(f"snippet {key!r} is included by {', '.join(sorted(users))}; "
                               "remove those includes first")
            gone = conn.execute(sa.delete(_s).where(_s.c.key == key)).rowcount
        if not gone:
            raise NotFound("snippet", key)
        self.cache.refresh(force=True)


def check_includes_exist(includes: Iterable[str], known: set[str], field: str) -> None:
    """ValidationFailed naming the first included snippet that does not exist."""
    for name in sorted(includes):
        if name not in known:
            raise ValidationFailed(field, f"includes snippet {name!r}, which does not exist; "
                                   "save the snippet first (PUT /api/snippets/{key})")


def _graph(rows: Iterable[tuple[str, str]], parse: Environment) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for key, body in rows:
        try:
            graph[key] = referenced(body, parse, key)
        except ValidationFailed:
            graph[key] = set()
    return graph


def _check_no_cycle(start: str, graph: Mapping[str, set[str]]) -> None:
    path = [start]
    seen: set[str] = set()

    def visit(key: str) -> None:
        for name in sorted(graph.get(key, ())):
            if name == start:
                chain = " -> ".join([*path, name])
                raise ValidationFailed(f"snippets.{start}", f"includes itself ({chain}); a "
                                       "snippet cannot include itself")
            if name in seen:
                continue
            seen.add(name)
            path.append(name)
            visit(name)
            path.pop()

    visit(start)
