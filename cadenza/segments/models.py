"""Segment definitions as the service reads and writes them, and their input checks.

A segment is dynamic (a condition, kept up to date in real time and by recomputes) or static
(a list people add contacts to). Input arrives as a JSON/YAML mapping:

    {key: active-pros, name: Active pros, description: ..., condition: {all: [...]}}
    {key: webinar-2026, kind: static}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cadenza.errors import ValidationFailed

KINDS = ("dynamic", "static")
STATUSES = ("active", "archived")
MEMBER_SOURCES = ("rule", "upload", "api")
HISTORY_CAUSES = ("event", "change", "recompute", "upload", "api", "edit", "window")

SEGMENT_ENTERED = "Segment Entered"
"""Name of the track event written when a contact enters a segment."""
SEGMENT_EXITED = "Segment Exited"
"""Name of the track event written when a contact leaves a segment."""
SEGMENT_SOURCE = "segments"
"""`source` of those events: only events from this source trigger segment journeys."""

MAX_NAME = 256
MAX_DESCRIPTION = 4000
MAX_LIST = 10_000
"""Contacts added or removed by one API call."""
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Largest CSV accepted by one upload (about a million email addresses)."""

_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")
_FIELDS = ("key", "name", "description", "kind", "condition")


@dataclass(frozen=True)
class SegmentInput:
    """What a person asks for: checked for shape here, for meaning by the service."""

    key: str
    """Slug used in conditions (`{segment: key}`) and URLs."""
    name: str
    description: str = ""
    kind: str = "dynamic"
    condition: Any = None
    """The raw condition (dynamic only); the service parses it with the declared fields."""

    @classmethod
    def parse(cls, document: Any, key: str | None = None) -> SegmentInput:
        """Read a definition; `key` (from a URL) fills in or must match the document's."""
        if not isinstance(document, Mapping):
            raise ValidationFailed("", "a segment must be a mapping such as {key: active-pros, "
                                       "condition: {attr: plan, eq: pro}}")
        for name in document:
            if name not in _FIELDS:
                raise ValidationFailed(str(name), f"unknown field; a segment has "
                                                  f"{', '.join(_FIELDS)}")
        found = document.get("key", key)
        if key is not None and found != key:
            raise ValidationFailed("key", f"{found!r} differs from the segment in the URL "
                                          f"({key!r}); keys cannot be renamed")
        slug = check_key(found)
        name = document.get("name", slug)
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise ValidationFailed("name", f"must be a non-empty string of at most {MAX_NAME} "
                                           "characters")
        description = document.get("description", "") or ""
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise ValidationFailed("description", f"must be a string of at most "
                                                  f"{MAX_DESCRIPTION} characters")
        condition = document.get("condition")
        kind = document.get("kind", "dynamic" if condition is not None else None)
        if kind is None:
            raise ValidationFailed("condition", "is missing; a dynamic segment needs a "
                                                "condition, or say kind: static for a list")
        if kind not in KINDS:
            raise ValidationFailed("kind", f"{kind!r} is not a kind; use dynamic or static")
        if kind == "static" and condition is not None:
            raise ValidationFailed("condition", "a static segment is a list and has no "
                                                "condition; drop it or use kind: dynamic")
        if kind == "dynamic" and condition is None:
            raise ValidationFailed("condition", "is missing; a dynamic segment needs one, "
                                                "e.g. {attr: plan, eq: pro}")
        return cls(slug, name.strip(), description, kind, condition)


def check_key(value: Any, field_name: str = "key") -> str:
    """A segment key: a lower-case slug."""
    if not isinstance(value, str) or not _KEY.match(value):
        raise ValidationFailed(field_name, f"{value!r} must be a lower-case slug (letters, "
                                           "digits, - and _, at most 128), e.g. active-pros")
    return value


@dataclass(frozen=True)
class Segment:
    """A stored segment."""

    id: int
    key: str
    name: str
    description: str
    kind: str
    definition: dict[str, Any] | None
    """The condition's JSON form (dynamic segments)."""
    depends_on: tuple[str, ...]
    """Keys of the segments the condition references."""
    status: str
    member_count: int
    created_at: int
    updated_at: int
    recomputed_at: int | None

    @property
    def dynamic(self) -> bool:
        """Whether membership follows a condition."""
        return self.kind == "dynamic"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"key": self.key, "name": self.name, "description": self.description,
                "kind": self.kind, "condition": self.definition,
                "depends_on": list(self.depends_on), "status": self.status,
                "member_count": self.member_count, "created_at": self.created_at,
                "updated_at": self.updated_at, "recomputed_at": self.recomputed_at}


@dataclass(frozen=True)
class Estimate:
    """How many contacts a condition matches now, and a few of them."""

    count: int
    sample: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"count": self.count, "sample": self.sample}


@dataclass(frozen=True)
class Drift:
    """One recompute of one segment: what real time had missed."""

    segment: str
    started_at: int
    duration_ms: int
    members: int
    entered: int
    """Contacts that matched but were not members (real time missed their entry)."""
    exited: int
    """Members that no longer matched (real time missed their exit)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"segment": self.segment, "started_at": self.started_at,
                "duration_ms": self.duration_ms, "members": self.members,
                "entered": self.entered, "exited": self.exited}


@dataclass(frozen=True)
class ListReport:
    """What adding or removing contacts of a static segment did."""

    changed: int
    """Contacts that entered (add) or exited (remove)."""
    unchanged: int
    """Contacts that were already in (add) or not in (remove)."""
    unknown: list[dict[str, Any]] = field(default_factory=list)
    """Rows naming no contact: {row, value, reason}."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"changed": self.changed, "unchanged": self.unchanged,
                "unknown": self.unknown}
